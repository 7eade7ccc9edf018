"""textclf: a fine-tuned BERT-family text classifier as a fast, small, measured HTTP service.

The package itself is torch-free: the Bento ships it with only the runtime dependencies.
"""

__version__ = "0.1.0"
