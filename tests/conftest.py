"""Shared fixtures: synthetic signals and an audio-file writer (any libsndfile format/subtype)."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile

os.environ["OMP_WAIT_POLICY"] = "PASSIVE"  # idle OpenMP threads must not spin on the shared CPUs
# Compiled helpers (embedder.native) and exported networks are built into a folder of this run, not the user's cache.
if "CHORUS_CACHE_DIR" not in os.environ:
    os.environ["CHORUS_CACHE_DIR"] = tempfile.mkdtemp(prefix="chorus-test-cache-")
    atexit.register(shutil.rmtree, os.environ["CHORUS_CACHE_DIR"], ignore_errors=True)

from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import soundfile as sf  # noqa: E402


def _t(duration_s: float, sr: int) -> np.ndarray:
    return np.arange(int(round(duration_s * sr))) / sr  # (n,) seconds


@pytest.fixture
def tone():
    """``tone(freq_hz, duration_s, sr, amp=0.5, phase=0.0) -> float32 (n,)`` sine."""

    def make(freq_hz: float, duration_s: float, sr: int, amp: float = 0.5, phase: float = 0.0):
        return (amp * np.sin(2 * np.pi * freq_hz * _t(duration_s, sr) + phase)).astype(np.float32)

    return make


@pytest.fixture
def chirp():
    """``chirp(f0_hz, f1_hz, duration_s, sr, amp=0.5) -> float32 (n,)`` linear sweep f0 -> f1."""

    def make(f0_hz: float, f1_hz: float, duration_s: float, sr: int, amp: float = 0.5):
        t = _t(duration_s, sr)
        rate = (f1_hz - f0_hz) / duration_s  # Hz/s
        return (amp * np.sin(2 * np.pi * (f0_hz * t + 0.5 * rate * t**2))).astype(np.float32)

    return make


@pytest.fixture
def noise():
    """``noise(duration_s, sr, amp=0.1, channels=None, seed=0) -> float32 (n,) or (n, C)`` Gaussian."""

    def make(duration_s: float, sr: int, amp: float = 0.1, channels: int | None = None, seed=0):
        n = int(round(duration_s * sr))
        shape = (n,) if channels is None else (n, channels)
        return (amp * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)

    return make


@pytest.fixture
def write_audio(tmp_path):
    """``write_audio(path, signal, sr, format=None, subtype=None) -> Path``.

    ``signal`` is ``(n,)`` or ``(n, C)`` floats in [-1, 1]; a relative ``path`` lands in ``tmp_path``.
    ``format`` (e.g. ``"MP3"``) overrides the extension, so content and name can disagree on purpose.
    """

    def write(path, signal, sr: int, format: str | None = None, subtype: str | None = None) -> Path:
        path = Path(path)
        if not path.is_absolute():
            path = tmp_path / path
        path.parent.mkdir(parents=True, exist_ok=True)
        sf.write(path, np.asarray(signal), sr, format=format, subtype=subtype)
        return path

    return write


@pytest.fixture
def settle():
    """``settle(db_folder)``: age the ``_versions`` folder of every table of a database by a
    minute, as time passing since its last commit would (``index.db.VERSIONS_SETTLE_S``)."""

    def age(folder) -> None:
        import time

        old = time.time_ns() - 60 * 10**9
        for versions in (Path(folder) / "lance").glob("*.lance/_versions"):
            os.utime(versions, ns=(old, old))

    return age
