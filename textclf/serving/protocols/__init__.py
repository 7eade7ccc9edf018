"""The wire shapes the service speaks, each an adapter on the same guard, pipeline, batcher and engine.

An adapter parses its request into the one call type (`common.Call`: texts, tokenization and answer options, and
what its renderer needs), renders the pipeline's predictions in its own answer shape, and writes its own error
shape. The guard does the rest for every shape alike (keys, the in-flight limit, body size, the deadline, request
ids, the request log), so no route can skip a check another has.

- `native`: textclf's `POST /predict {"texts": [...]}`.
- `hf`: the Hugging Face text-classification task (`huggingface_hub.InferenceClient(base_url)` posts to `/`) and
  text-embeddings-inference's `/predict` (`{"inputs": ...}`).
- `v2`: the Open Inference Protocol v2 (KServe, Triton), with Triton's classification and binary tensor extensions.
- `docs`: the OpenAPI description of the routes BentoML does not describe itself.
"""
