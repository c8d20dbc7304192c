"""Model registry: names → constructors, so that ``load_model("perch")`` works without importing torch
for models that do not need it."""

from __future__ import annotations

import importlib

from embedder.base import Embedder

# name -> "module:function"; each function takes (weights, device, **options) and returns an Embedder.
_MODELS: dict[str, str] = {
    "spectral": "embedder.spectral:load",
    "perch": "embedder.perch:load",
    "animal2vec": "embedder.animal2vec:load_large",
    "animal2vec-small": "embedder.animal2vec:load_small",
}


class UnknownModelError(ValueError):
    """Raised for a model name that is not registered."""


def list_models() -> list[str]:
    """Names accepted by :func:`load_model`."""
    return list(_MODELS)


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
