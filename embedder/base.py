"""The interface every embedding model implements.

A model turns fixed-length windows of raw mono audio at its own sample rate into vectors. Everything
above it (batching, the database, the explorer) only relies on the attributes and methods defined here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np


class Embedder(ABC):
    """Abstract embedding model.

    Attributes
    ----------
    name : str
        Registry name, e.g. ``"perch"``; also the suffix of the database table ``embeddings_<name>``.
    sample_rate : int
        Rate (Hz) the model expects; audio is resampled to it before windowing.
    window_s : float
        Window length (s); ``embed`` takes ``int(sample_rate * window_s)`` samples per row.
    dim : int
        Embedding dimension.
    weights : str or None
        Where the weights came from: a path / sha256 description, ``"training-free"`` or ``None`` (random).
    """

    name: str
    sample_rate: int
    window_s: float
    dim: int
    weights: str | None = None

    @property
    def window_samples(self) -> int:
        """Samples per window at ``sample_rate``."""
        return int(round(self.sample_rate * self.window_s))

    @property
    def n_logits(self) -> int:
        """Classes of a window-level classification head carried by the weights (0: none)."""
        return 0

    def embed_with_logits(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings (n, dim) and the head's logits (n, n_logits) of ``batch``, for models
        with a window-level classification head."""
        raise ValueError(f"{self.name}: these weights carry no window-level classification head")

    @property
    def trained(self) -> bool:
        """False when the weights are a random initialisation (meaningless vectors)."""
        return self.weights is not None

    def config_dict(self) -> dict:
        """JSON-serialisable description stored in the database's ``chorus.json``."""
        return {
            "name": self.name,
            "sample_rate": self.sample_rate,
            "window_s": self.window_s,
            "dim": self.dim,
            "weights": self.weights,
        }

    def check_batch(self, batch: np.ndarray) -> np.ndarray:
        """Validate and coerce a batch to float32 ``(n, window_samples)``.

        A 1-D array is treated as one window. Shorter rows are not accepted: padding is the
        windowing code's job, so that every vector in the database covers a known span.
        """
        x = np.asarray(batch, dtype=np.float32)
        if x.ndim == 1:
            x = x[None, :]
        if x.ndim != 2 or x.shape[1] != self.window_samples:
            raise ValueError(
                f"{self.name}: expected audio of shape (n, {self.window_samples}), got {tuple(x.shape)}"
            )
        return x

    @abstractmethod
    def embed(self, batch: np.ndarray) -> np.ndarray:
        """Embed windows of raw audio.

        Parameters
        ----------
        batch : np.ndarray, float32, shape (n, window_samples)
            Raw mono audio at ``sample_rate``.

        Returns
        -------
        np.ndarray, float32, shape (n, dim)
        """

    @abstractmethod
    def frontend(self, batch: np.ndarray) -> np.ndarray:
        """The model's input features for ``batch`` (model-specific shape, float32)."""
