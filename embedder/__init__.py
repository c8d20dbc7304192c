"""Audio → vectors: decoding, resampling, windowing, embedding models and weight import."""

from embedder.base import Embedder
from embedder.registry import list_models, load_model

__all__ = ["Embedder", "list_models", "load_model"]
