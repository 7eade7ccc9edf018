"""Other servers' HTTP protocols on the same guard, batcher and engine as `POST /predict`.

Each protocol is an adapter: it turns its request into the texts and options of one predict call and the
classifier's logits back into its own answer, and writes its own error shape. The guard does the rest as for a
native request (keys, the in-flight limit, body size, the deadline, request ids, the request log) and queues the
call on the service's own batcher, so a protocol route can never skip a check the native one has.

- `hf`: the Hugging Face text-classification task (`huggingface_hub.InferenceClient(base_url)` posts to `/`) and
  text-embeddings-inference's `/predict` (`{"inputs": ...}`).
- `v2`: the Open Inference Protocol v2 (KServe, Triton), with Triton's classification and binary tensor extensions.
"""
