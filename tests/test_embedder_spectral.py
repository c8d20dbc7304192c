"""Tests for the training-free ``spectral`` embedding (embedder/spectral.py)."""

from __future__ import annotations

import numpy as np
import pytest

import embedder
from embedder.models import spectral as sp

SR = sp.SAMPLE_RATE
N = int(SR * sp.WINDOW_S)


@pytest.fixture(scope="module")
def model() -> sp.SpectralEmbedder:
    return embedder.load_model("spectral")


def _pink(rng: np.random.Generator, n: int = N) -> np.ndarray:
    f = np.fft.rfftfreq(n)
    f[0] = f[1]
    x = np.fft.irfft(np.fft.rfft(rng.standard_normal(n)) / np.sqrt(f), n)
    return x / x.std()


def _sweep(rng: np.random.Generator) -> np.ndarray:
    dur = 0.35 * rng.uniform(0.9, 1.1)
    t = np.arange(int(dur * SR)) / SR
    f0, f1 = 7000 * rng.uniform(0.95, 1.05), 3000 * rng.uniform(0.95, 1.05)
    return np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * dur))) * np.hanning(t.size)


def _hoot(rng: np.random.Generator) -> np.ndarray:
    t = np.arange(int(0.7 * SR)) / SR
    f = rng.uniform(450, 520)
    return sum(0.6**h * np.sin(2 * np.pi * (h + 1) * f * t) for h in range(5)) * np.hanning(t.size)


def _trill(rng: np.random.Generator) -> np.ndarray:
    rate, freq = 18 * rng.uniform(0.9, 1.1), 4200 * rng.uniform(0.97, 1.03)
    x = np.zeros(int(1.2 * SR))
    pip = np.sin(2 * np.pi * freq * np.arange(int(0.012 * SR)) / SR) * np.hanning(int(0.012 * SR))
    for k in range(int(1.2 * rate)):
        i = int(k / rate * SR)
        x[i : i + pip.size] += pip[: x.size - i]
    return x


def _scene(rng: np.random.Generator, call: np.ndarray, snr_db: float) -> np.ndarray:
    """One 5 s window: pink noise at 0.05 RMS plus ``call`` at ``snr_db`` (call power / noise power)."""
    x = 0.05 * _pink(rng)
    call = call * 0.05 * 10 ** (snr_db / 20) / np.sqrt(np.mean(call**2))
    i = int(rng.uniform(0.5, 3.0) * SR)
    x[i : i + call.size] += call
    return x.astype(np.float32)


def test_shape_dtype_unit_norm_and_metadata(model):
    x = 0.05 * _pink(np.random.default_rng(0))[None].astype(np.float32)
    e = model.embed(np.repeat(x, 3, axis=0))
    assert e.shape == (3, model.dim) and e.dtype == np.float32
    assert model.dim == sum(sp.block_dims().values()) == 928
    assert np.isfinite(e).all()
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    assert (model.name, model.sample_rate, model.window_s) == ("spectral", 32000, 5.0)
    assert model.weights == "training-free" and model.trained
    cfg = model.config_dict()["config"]
    assert cfg["background_pct"] == 50.0 and cfg["frame_norm_blocks"] == ("fm", "patches")


def test_frontend_shape(model):
    x = np.zeros((2, N), np.float32)
    mel = model.frontend(x)
    assert mel.shape == (2, 500, sp.N_MELS) and mel.dtype == np.float32
    np.testing.assert_allclose(mel, sp.FLOOR_DB)  # digital silence sits on the floor


def test_deterministic_across_instances():
    x = np.random.default_rng(1).standard_normal((2, N)).astype(np.float32) * 0.1
    a = embedder.load_model("spectral").embed(x)
    b = embedder.load_model("spectral").embed(x)
    np.testing.assert_array_equal(a, b)


def test_batch_matches_single(model):
    rng = np.random.default_rng(2)
    x = np.stack([_scene(rng, c(rng), 10.0) for c in (_sweep, _hoot, _trill)])
    batched = sp.SpectralEmbedder(batch_size=2).embed(x)
    single = np.concatenate([model.embed(row) for row in x])  # 1-D input = one window
    np.testing.assert_allclose(batched, single, atol=1e-6)


def test_silent_and_short_padded_windows(model):
    silent = np.zeros((1, N), np.float32)
    e = model.embed(silent)
    assert np.isfinite(e).all() and not e.any()  # zero vector: "no content"
    # a 1.5 s clip zero-padded to 5 s embeds like its content, not like the padding
    rng = np.random.default_rng(3)
    clip = _scene(rng, _trill(rng), 10.0)
    padded = clip.copy()
    padded[int(1.5 * SR) :] = 0.0
    v = model.embed(padded[None])[0]
    assert np.isfinite(v).all() and abs(np.linalg.norm(v) - 1) < 1e-5


def test_call_types_separate_across_snr(model):
    """Two instances of one call type at different SNR are closer than different call types."""
    rng = np.random.default_rng(4)
    makers = {"sweep": _sweep, "hoot": _hoot, "trill": _trill}
    hi = {k: model.embed(_scene(rng, f(rng), 12.0)[None])[0] for k, f in makers.items()}
    lo = {k: model.embed(_scene(rng, f(rng), 2.0)[None])[0] for k, f in makers.items()}
    for k in makers:
        same = float(hi[k] @ lo[k])
        for other in makers:
            if other != k:
                assert same > float(hi[k] @ lo[other]), (k, other)
                assert same > float(hi[k] @ hi[other]), (k, other)


def test_same_call_type_beats_the_query_recordings_own_rain():
    """The ``chorus demo`` failure mode: rain clicks and wind gusts shared with the query.

    A call at +5 dB in heavy rain (the demo's rainy site) must be closer, on average, to the same call
    type in other rainy recordings (0, 5, 10 dB) than to call-free windows of its own recording. Before
    the per-frame median over the bands was removed this failed for sweeps and trills.
    """
    from explorer import demo

    m = sp.SpectralEmbedder()
    rng = np.random.default_rng(0)
    own = demo.background(rng, 5 * N, SR, site=1)  # 25 s of the query's recording
    for name, make in demo.CALLS.items():
        scenes = [
            _plant(rng, bg, make(rng), snr)
            for bg, snr in [(own[:N], 5.0)]
            + [(demo.background(rng, N, SR, 1), s) for s in (0, 5, 10)]
        ]
        empty = [own[k * N : (k + 1) * N] for k in range(1, 5)]
        e = m.embed(0.05 * np.stack(scenes + empty).astype(np.float32))  # (8, dim)
        sim = e[1:] @ e[0]
        assert sim[:3].mean() > sim[3:].mean() + 0.05, name


def _plant(rng: np.random.Generator, bg: np.ndarray, call: np.ndarray, snr_db: float) -> np.ndarray:
    """``bg`` (unit RMS) plus ``call`` at ``snr_db``, starting 0.5-3 s into the window."""
    x = bg.copy()
    i = int(rng.uniform(0.5, 3.0) * SR)
    x[i : i + call.size] += call * 10 ** (snr_db / 20) / np.sqrt(np.mean(call**2))
    return x


def test_frame_norm_blocks_option():
    m = embedder.load_model("spectral", frame_norm_blocks=["fm"])
    assert m.config.frame_norm_blocks == ("fm",) and m.dim == 928
    assert m.config_dict()["config"]["frame_norm_blocks"] == ("fm",)
    x = 0.05 * _pink(np.random.default_rng(8))[None].astype(np.float32)
    assert not np.allclose(m.embed(x), embedder.load_model("spectral").embed(x))
    with pytest.raises(ValueError, match="unknown frame_norm_blocks"):
        embedder.load_model("spectral", frame_norm_blocks=("bands", "mfcc"))


def test_gain_invariance(model):
    x = _scene(np.random.default_rng(5), _hoot(np.random.default_rng(6)), 8.0)
    a, b = model.embed(np.stack([x, 20.0 * x]))
    assert float(a @ b) > 0.999


def _reference_mel_filterbank(sr, n_fft, n_mels, fmin, fmax):
    """Independent loop version: HTK mel triangles, unit area in Hz."""

    def mel(f):
        return 1127.0 * np.log(1.0 + f / 700.0)

    def hz(m):
        return 700.0 * (np.exp(m / 1127.0) - 1.0)

    pts = [hz(mel(fmin) + i * (mel(fmax) - mel(fmin)) / (n_mels + 1)) for i in range(n_mels + 2)]
    fb = np.zeros((n_fft // 2 + 1, n_mels))
    for m in range(n_mels):
        lo, c, hi = pts[m], pts[m + 1], pts[m + 2]
        for k in range(n_fft // 2 + 1):
            f = k * sr / n_fft
            if lo < f <= c:
                fb[k, m] = (f - lo) / (c - lo)
            elif c < f < hi:
                fb[k, m] = (hi - f) / (hi - c)
        fb[:, m] *= 2.0 / (hi - lo)
    return fb


def test_mel_filterbank_matches_reference():
    ours = sp.mel_filterbank()
    ref = _reference_mel_filterbank(SR, sp.N_FFT, sp.N_MELS, sp.FMIN_HZ, sp.FMAX_HZ)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-9)


def test_log_mel_matches_reference():
    """A 1 kHz tone: our log-mel frame equals a direct windowed-DFT computation."""
    t = np.arange(N) / SR
    x = (0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32)
    fb = sp.mel_filterbank()
    ours = sp.log_mel(x[None], fb)[0]
    frame_i = (
        100  # frames are centred on t * HOP + HOP / 2: starts at 100 * HOP - (N_FFT - HOP) / 2
    )
    start = frame_i * sp.HOP - (sp.N_FFT - sp.HOP) // 2
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(sp.N_FFT) / sp.N_FFT)
    seg = x[start : start + sp.N_FFT].astype(np.float64) * w
    k = np.arange(sp.N_FFT // 2 + 1)
    dft = np.exp(-2j * np.pi * np.outer(k, np.arange(sp.N_FFT)) / sp.N_FFT) @ seg
    ref = 10 * np.log10(np.maximum((np.abs(dft) ** 2 / np.sum(w**2)) @ fb, 1e-10))
    np.testing.assert_allclose(ours[frame_i], ref, atol=0.05)
    assert np.argmax(ours[frame_i]) == np.argmax(ref)


def test_dct_is_orthonormal():
    d = sp.dct_matrix(sp.N_MELS, sp.N_MELS)
    np.testing.assert_allclose(d.T @ d, np.eye(sp.N_MELS), atol=1e-5)


def test_registry_lists_and_loads():
    assert "spectral" in embedder.list_models()
    m = embedder.load_model("spectral", batch_size=8, background_pct=20.0)
    assert isinstance(m, sp.SpectralEmbedder) and m.config.background_pct == 20.0


@pytest.mark.parametrize(
    "bad",
    [np.zeros((2, N - 1), np.float32), np.zeros((2, 3, N), np.float32), np.zeros(10, np.float32)],
)
def test_wrong_shape_is_clear_value_error(model, bad):
    with pytest.raises(ValueError, match=r"expected audio of shape \(n, 160000\)"):
        model.embed(bad)
    with pytest.raises(ValueError, match="expected audio of shape"):
        model.frontend(bad)


def test_bad_options_are_value_errors():
    with pytest.raises(ValueError, match="takes no weights"):
        embedder.load_model("spectral", weights="/some/file.pt")
    with pytest.raises(ValueError, match="unknown blocks"):
        embedder.load_model("spectral", block_weights={"nope": 1.0})
    with pytest.raises(ValueError, match="bad option"):
        embedder.load_model("spectral", n_filters=3)
