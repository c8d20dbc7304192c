"""The ``animal2vec`` embedders: the network of :mod:`embedder.models.animal2vec_net` behind the
:class:`~embedder.base.Embedder` interface, and its weights.

Weights are either a fairseq checkpoint (converted on the fly by :mod:`embedder.models.fairseq_import`) or our
own ``{"format": "chorus", "version": 1, "config": ..., "state_dict": ...}`` file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from embedder import weights as weights_mod
from embedder.models import fairseq_import
from embedder.models.animal2vec_net import (
    CONV_LAYERS,
    DEFAULT_BATCH,
    Animal2vecConfig,
    Animal2vecModel,
    FeatureExtractor,
    SincConv,
    alibi_slopes,
    build_model,
    count_parameters,
)
from embedder.runtime import TorchEmbedder, check_run_options, resolve_device

__all__ = [  # the network's names stay importable from here
    "CONV_LAYERS",
    "Animal2vecConfig",
    "Animal2vecEmbedder",
    "Animal2vecModel",
    "FeatureExtractor",
    "SincConv",
    "alibi_slopes",
    "build_model",
    "count_parameters",
    "load_large",
    "load_model",
    "load_small",
    "read_weights",
    "save_checkpoint",
]

# ---------------------------------------------------------------------------------------------
# Checkpoints


def save_checkpoint(model: Animal2vecModel, path: str | Path) -> None:
    """Write our own checkpoint format (loadable with ``torch.load(weights_only=True)``)."""
    weights_mod.save_checkpoint(path, model.cfg.to_dict(), model.state_dict())


def read_weights(path: str | Path, trust: bool = False) -> tuple[Animal2vecConfig, dict]:
    """Read a chorus or fairseq checkpoint -> (config, state_dict in our key names)."""
    obj = fairseq_import.load_torch_file(path, trust=trust)
    ours = weights_mod.checkpoint_contents(obj, path)
    if ours is not None:
        return Animal2vecConfig.from_dict(ours[0]), ours[1]
    if isinstance(obj, dict) and "model" in obj:
        cfg_dict, state = fairseq_import.convert(obj, source=str(path))
        return Animal2vecConfig.from_dict(cfg_dict), state
    raise ValueError(
        f"{path}: neither a chorus checkpoint (format/config/state_dict) nor a fairseq one (cfg/model)"
    )


# ---------------------------------------------------------------------------------------------
# The Embedder


class Animal2vecEmbedder(TorchEmbedder):
    """animal2vec window embedder.

    Parameters
    ----------
    model : Animal2vecModel
    name : str
        Registry name (``"animal2vec"`` or ``"animal2vec-small"``).
    weights : str or None
        Description of the weights' origin; None for a random initialisation.
    device : torch.device
    batch_size : int or None
        Windows per forward pass (default depends on the device).
    precision : {"fp32", "bf16", "fp16"} or None
        Autocast dtype; default bf16 on CUDA, fp32 elsewhere.
    compile : bool
        Wrap the model with ``torch.compile``.
    """

    def __init__(
        self,
        model: Animal2vecModel,
        name: str,
        weights: str | None,
        device: torch.device,
        batch_size: int | None = None,
        precision: str | None = None,
        compile: bool = False,
    ):
        cfg = model.cfg
        self.name = name
        self.sample_rate = cfg.sample_rate
        self.window_s = cfg.window_s
        self.dim = cfg.width
        self.weights = weights
        self.config = cfg
        self.device = device
        self.batch_size = int(batch_size or DEFAULT_BATCH.get(device.type, 2))
        self.precision = check_run_options(device, self.batch_size, precision)
        self.model = model.to(device).eval()
        self._forward = torch.compile(self.model) if compile else self.model

    @property
    def num_classes(self) -> int:
        """Classes of the fine-tuned head (0 when there is none)."""
        return self.config.num_classes

    def config_dict(self) -> dict:
        d = super().config_dict()
        d.update(architecture=self.config.to_dict(), precision=self.precision)
        return d

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Window embeddings.

        Parameters
        ----------
        batch : np.ndarray, float32, shape (n, sample_rate * window_s)

        Returns
        -------
        np.ndarray, float32, shape (n, dim)
        """
        return self.run(lambda w: self._forward(w).mean(dim=1), batch, (self.dim,))

    def frames(self, batch: np.ndarray) -> np.ndarray:
        """Per-frame representations, float32 (n, frames, dim); 2000 frames for 10 s at 8 kHz."""
        return self.run(self._forward, batch, (self.config.frames, self.dim))

    def frontend(self, batch: np.ndarray) -> np.ndarray:
        """Feature-extractor frames, float32 (n, frames, channels); (n, 2000, 512) for the presets."""
        channels = self.config.conv_layers[-1][0]
        return self.run(self.model.frontend, batch, (self.config.frames, channels))

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Per-frame logits of the fine-tuned head, float32 (n, frames, num_classes)."""
        if self.model.head is None:
            raise ValueError(f"{self.name}: these weights have no classification head")
        head = self.model.head
        tail = (self.config.frames, self.num_classes)
        return self.run(lambda w: head(self._forward(w).to(w.dtype)), batch, tail)


def load_model(
    cfg: Animal2vecConfig,
    name: str,
    weights: str | None = None,
    device: str = "auto",
    trust: bool = False,
    window_s: float | None = None,
    **options,
) -> Animal2vecEmbedder:
    """Build the embedder from a preset, or from the shape stored in ``weights``.

    The weights' width must match the preset's (``animal2vec`` is 1024-d, ``animal2vec-small`` 256-d);
    depth, heads, sample rate and a classification head are taken from the file. ``window_s``
    overrides the window length (the model takes any length; fairseq files do not store one).
    """
    dev = resolve_device(device)
    if window_s is not None:
        cfg = dataclasses.replace(cfg, window_s=float(window_s))
    if weights is None:
        model = build_model(cfg)
        origin = None
    else:
        file_cfg, state = read_weights(weights, trust=trust)
        if window_s is not None or file_cfg.extra.get("imported_from") == "fairseq":
            file_cfg.window_s = cfg.window_s  # fairseq files do not fix our window length
        if file_cfg.width != cfg.width:
            raise ValueError(
                f"{weights}: weights are for a width-{file_cfg.width} model, but {name!r} is "
                f"{cfg.width}-d; load them as the matching model"
            )
        with torch.device("meta"):
            model = Animal2vecModel(file_cfg)
        model = model.to_empty(device="cpu")  # no random init of weights about to be overwritten
        model.init_buffers()
        weights_mod.load_strict(model, state, str(weights))
        origin = f"{Path(weights).resolve()} (sha256 {weights_mod.sha256_file(weights)[:16]})"
    return Animal2vecEmbedder(model, name, origin, dev, **options)


def load_large(weights: str | None = None, device: str = "auto", **options) -> Animal2vecEmbedder:
    """``animal2vec``: the published large shape, 8 kHz, 10 s windows, 1024-d.

    Options: ``batch_size``, ``precision`` ("fp32" | "bf16" | "fp16"), ``compile``, ``window_s``,
    ``trust`` (allow unpickling arbitrary objects from a checkpoint you trust).
    """
    return load_model(Animal2vecConfig.large(), "animal2vec", weights, device, **options)


def load_small(weights: str | None = None, device: str = "auto", **options) -> Animal2vecEmbedder:
    """``animal2vec-small``: width 256, 2 + 4 blocks, 4 heads; 8 kHz, 10 s windows, 256-d."""
    return load_model(Animal2vecConfig.small(), "animal2vec-small", weights, device, **options)


def _importer(cfg: Animal2vecConfig, name: str):
    def import_weights(path: str | Path, trust: bool = False) -> tuple[dict, dict]:
        """Importer for :func:`embedder.weights.import_weights`: a fairseq or chorus file ->
        (config dict, state_dict in our names), checked against the model's width."""
        file_cfg, state = read_weights(path, trust=trust)
        if file_cfg.width != cfg.width:
            raise ValueError(
                f"{path}: weights are for a width-{file_cfg.width} model, not {name!r} ({cfg.width})"
            )
        return file_cfg.to_dict(), dict(state)

    import_weights.__name__ = import_weights.__qualname__ = f"import_{name.replace('-', '_')}"
    return import_weights


import_large = _importer(Animal2vecConfig.large(), "animal2vec")
import_small = _importer(Animal2vecConfig.small(), "animal2vec-small")
