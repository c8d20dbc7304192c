"""The embedding models, one module (or a few: network, frontend, file readers) per model.

Adding a model
--------------
1. Write ``embedder/models/<name>.py``: a config dataclass, an ``nn.Module`` whose blocks take plain
   ints, an :class:`embedder.base.Embedder` subclass (most torch models subclass
   :class:`embedder.runtime.TorchEmbedder` for batching, devices and precision), and
   ``load(weights=None, device="auto", **options)``; checkpoints are
   ``{"config": ..., "state_dict": ...}`` (:func:`embedder.weights.save_checkpoint`).
2. If it reads official weight files, add ``import_<name>(path) -> (config dict, state_dict)``.
3. Add one :class:`embedder.registry.ModelEntry` line to :data:`embedder.registry.MODELS`.
4. Add ``tests/test_embedder_<name>.py``: shapes, batched = one at a time, and parity with the
   original runtime or an independent NumPy reference.
"""
