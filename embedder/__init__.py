"""Audio → vectors.

- audio I/O: :mod:`embedder.audio` (probe, blocks, windows), :mod:`embedder.decode` (libsndfile and
  FFmpeg), :mod:`embedder.flac` (our FLAC decoder), :mod:`embedder.native` (building it);
- running models: :mod:`embedder.runtime` (devices, precision, batches), :mod:`embedder.batching`
  and :mod:`embedder.ring` (decode workers feeding batches), :mod:`embedder.ort_backend`;
- models: :mod:`embedder.models` (one module per model; see there for adding one), the registry
  :mod:`embedder.registry`, weight files :mod:`embedder.weights` and :mod:`embedder.downloads`.
"""

from embedder.base import Embedder
from embedder.registry import default_weights, list_models, load_model

__all__ = ["Embedder", "default_weights", "list_models", "load_model"]
