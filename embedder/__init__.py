"""Audio → vectors: decoding, resampling, windowing, embedding models and weight import."""

from embedder.base import Embedder
from embedder.registry import default_weights, list_models, load_model

__all__ = ["Embedder", "default_weights", "list_models", "load_model"]
