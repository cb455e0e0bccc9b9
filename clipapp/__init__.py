"""clipapp: CLIP zero-shot classification, image search and few-shot adaptation."""

__version__ = "0.1.0"
