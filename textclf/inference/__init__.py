"""Texts to predictions: engines (ONNX Runtime, OpenVINO), the runtime (`Classifier`), variants, windows, timing."""
