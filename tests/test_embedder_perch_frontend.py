"""Perch log-mel frontend vs an independent NumPy implementation written from the spec."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedder.models.perch_frontend import LogMelFrontend, mel_matrix, normalize_windows

SR, N = 32_000, 160_000


def ref_mel_matrix() -> np.ndarray:
    """tf.signal.linear_to_mel_weight_matrix(128, 513, 32000, 60, 16000), written out with loops."""

    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    freqs = np.linspace(0.0, 16000.0, 513)
    edges = np.linspace(mel(60.0), mel(16000.0), 130)
    w = np.zeros((513, 128))
    for j in range(128):
        lo, c, hi = edges[j], edges[j + 1], edges[j + 2]
        for k in range(1, 513):  # DC row stays zero
            m = mel(freqs[k])
            w[k, j] = max(0.0, min((m - lo) / (c - lo), (hi - m) / (hi - c)))
    return w


def ref_frontend(x: np.ndarray, periodic=False, reference_pad=False, floor=1e-5) -> np.ndarray:
    """(n,) audio -> (500, 128), float64, one frame at a time."""
    x = x.astype(np.float64)
    x = x - x.mean()
    peak = np.abs(x).max()
    x = np.zeros_like(x) if peak < 1e-8 else x * (0.25 / peak)
    win = np.hanning(641)[:640] if periodic else np.hanning(640)
    pad = 320 if reference_pad else 160
    xp = np.concatenate([np.zeros(pad), x, np.zeros(pad)])
    mel = ref_mel_matrix()
    out = np.zeros((500, 128))
    for i in range(500):
        frame = xp[320 * i : 320 * i + 640] * win
        spec = np.abs(np.fft.rfft(frame, n=1024)) / win.sum()  # (513,)
        out[i] = 0.1 * np.log(np.maximum(spec @ mel, floor))
    return out


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(N) / SR
    chirp = 0.3 * np.sin(2 * np.pi * (800 * t + 600 * t**2))
    noise = 0.05 * rng.standard_normal(N)
    tone = 0.8 * np.sin(2 * np.pi * 3000 * t) * (t % 1.0 < 0.2) + 0.2  # DC offset on purpose
    return np.stack([chirp + noise, tone]).astype(np.float32)  # (2, N)


def test_mel_matrix_matches_tf_construction():
    ours = mel_matrix()
    assert ours.shape == (513, 128)
    np.testing.assert_allclose(ours, ref_mel_matrix(), atol=1e-12)
    assert np.all(ours[0] == 0)
    assert ours.max() <= 1.0 and np.all(ours.sum(axis=0) > 0)  # every band gets some bins


@pytest.mark.parametrize(
    "options",
    [
        {},
        {"window_type": "periodic"},
        {"padding_mode": "reference320"},
        {"log_floor": 1e-2},
    ],
)
def test_frontend_matches_numpy_reference(audio, options):
    fe = LogMelFrontend(**options)
    with torch.no_grad():
        ours = fe(torch.from_numpy(audio)).numpy()  # (2, 500, 128)
    assert ours.shape == (2, 500, 128) and ours.dtype == np.float32
    ref_opts = {
        "periodic": options.get("window_type") == "periodic",
        "reference_pad": options.get("padding_mode") == "reference320",
        "floor": options.get("log_floor", 1e-5),
    }
    for b in range(2):
        ref = ref_frontend(audio[b], **ref_opts)
        assert np.abs(ours[b] - ref).max() <= 1e-4


def test_silent_window_stays_at_floor():
    fe = LogMelFrontend()
    x = torch.full((1, N), 0.3)  # constant = silence after mean removal
    with torch.no_grad():
        out = fe(x).numpy()
    np.testing.assert_allclose(out, 0.1 * np.log(1e-5), atol=1e-6)
    assert np.isfinite(out).all()


def test_normalisation_peak_and_mean():
    rng = np.random.default_rng(1)
    x = torch.from_numpy(rng.standard_normal((3, 1000)).astype(np.float32) * [[5.0], [0.01], [0.0]])
    y = normalize_windows(x + 2.0).numpy()
    np.testing.assert_allclose(np.abs(y[:2]).max(axis=1), 0.25, rtol=1e-5)
    np.testing.assert_allclose(y[:2].mean(axis=1), 0.0, atol=1e-5)
    assert np.all(y[2] == 0.0)  # silent (constant) window is left at zero


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="window type"):
        LogMelFrontend(window_type="hamming")
    with pytest.raises(ValueError, match="padding mode"):
        LogMelFrontend(padding_mode="reflect")
