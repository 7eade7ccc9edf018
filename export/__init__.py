"""The export stage: ONNX variants through Hugging Face Optimum, each gated on parity, accuracy and invariance."""
