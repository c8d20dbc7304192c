"""animal2vec model: sinc bank and ALiBi against their formulas, shapes, sizes, batching, checkpoints."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from embedder.models import animal2vec as a2v
from embedder.registry import load_model

SR = 8000


def tiny_config(**kw) -> a2v.Animal2vecConfig:
    """A fast model with the published layer pattern but few channels and a 0.4 s window."""
    layers = ((16, 63, 1), (32, 10, 5)) + ((32, 3, 2),) * 3 + ((32, 3, 1),) + ((32, 2, 1),) * 2
    base = dict(
        window_s=0.4, conv_layers=layers, width=32, prenet_depth=1, depth=2, heads=4,
        ffn_dim=64, pos_conv_layers=2, pos_conv_kernel=5, pos_conv_groups=4,
    )  # fmt: skip
    base.update(kw)
    return a2v.Animal2vecConfig(**base)


def tiny_embedder(batch_size: int = 4, **kw) -> a2v.Animal2vecEmbedder:
    model = a2v.build_model(tiny_config(**kw))
    return a2v.Animal2vecEmbedder(model, "tiny", None, torch.device("cpu"), batch_size=batch_size)


def audio(n: int, samples: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(samples) / SR
    tones = np.sin(2 * np.pi * rng.uniform(200, 3000, (n, 1)) * t)
    return (0.3 * tones + 0.05 * rng.standard_normal((n, samples))).astype(np.float32)


# ---------------------------------------------------------------------------------- sinc bank


def numpy_sinc_bank(low_p, band_p, sr, kernel, min_low=50.0, min_band=127.0):
    """Band-pass filters as the difference of two windowed sinc low-passes (spec formula)."""
    low = min_low + np.abs(low_p)
    high = np.clip(low + min_band + np.abs(band_p), min_low, sr / 2)
    band = high - low
    half = kernel // 2
    m = np.arange(-half, half + 1)  # taps, samples
    t = m / sr  # s
    lp_high = 2 * high[:, None] * np.sinc(2 * high[:, None] * t)  # np.sinc(x) = sin(pi x)/(pi x)
    lp_low = 2 * low[:, None] * np.sinc(2 * low[:, None] * t)
    w_left = 0.53836 - 0.46164 * np.cos(2 * np.pi * np.linspace(0, kernel / 2 - 1, half) / kernel)
    window = np.concatenate([w_left, [1.0], w_left[::-1]])  # centre tap is not windowed
    return (lp_high - lp_low) * window / (2 * band[:, None])


def test_sinc_init_follows_mel_spacing():
    cfg = a2v.Animal2vecConfig.small()
    sinc = a2v.SincConv(cfg)
    mel = lambda f: 2595 * np.log10(1 + f / 700)  # noqa: E731
    edges_mel = np.linspace(mel(50.0), mel(SR / 2 - (50 + 127)), 128)
    edges = 700 * (10 ** (edges_mel / 2595) - 1)
    assert sinc.low_hz_.shape == (127, 1) and sinc.band_hz_.shape == (127, 1)
    np.testing.assert_allclose(sinc.low_hz_[:, 0].detach().numpy(), edges[:-1], rtol=1e-6)
    np.testing.assert_allclose(sinc.band_hz_[:, 0].detach().numpy(), np.diff(edges), rtol=1e-5)


def test_sinc_filters_match_numpy_formula():
    cfg = a2v.Animal2vecConfig.small()
    sinc = a2v.SincConv(cfg)
    rng = np.random.default_rng(3)
    # Negative values exercise |.|; a huge band exercises the clamp at sr/2.
    low = rng.uniform(-2000, 3500, 127)
    band = rng.uniform(-500, 800, 127)
    band[:5] = 10_000
    with torch.no_grad():
        sinc.low_hz_.copy_(torch.tensor(low)[:, None])
        sinc.band_hz_.copy_(torch.tensor(band)[:, None])
    ours = sinc.filters()[:, 0].detach().double().numpy()
    ref = numpy_sinc_bank(low.astype(np.float32), band.astype(np.float32), SR, 63)
    assert ours.shape == (127, 63)
    np.testing.assert_allclose(ours, ref, atol=2e-4)
    np.testing.assert_allclose(ours[:, 31], 1.0, atol=1e-6)  # centre tap 2 band / 2 band


def test_sinc_layer_is_reflect_same_convolution():
    cfg = tiny_config()
    sinc = a2v.SincConv(cfg)
    x = torch.from_numpy(audio(1, 400))[:, None, :]
    y = sinc(x)
    assert y.shape == (1, 16, 400)
    bank = sinc.filters()[:, 0].detach().numpy()  # (F, 63)
    xp = np.pad(x[0, 0].numpy(), 31, mode="reflect")
    ref = np.stack([np.correlate(xp, f, mode="valid") for f in bank])
    np.testing.assert_allclose(y[0].detach().numpy(), ref, atol=1e-4)


# ---------------------------------------------------------------------------------- ALiBi


def test_alibi_slopes_and_bias():
    slopes = a2v.alibi_slopes(16).numpy()  # the spec's 16 heads
    np.testing.assert_allclose(slopes, 2.0 ** (-0.5 * np.arange(1, 17)), rtol=1e-7)
    assert slopes[0] == pytest.approx(2**-0.5) and slopes[-1] == pytest.approx(2**-8)
    # other head counts: the ALiBi paper's rule (4: 2^-2 ... 2^-8; 6: those, then 2^-1, 2^-3)
    np.testing.assert_allclose(a2v.alibi_slopes(4).numpy(), 2.0 ** -np.array([2, 4, 6, 8]))
    np.testing.assert_allclose(a2v.alibi_slopes(6).numpy(), 2.0 ** -np.array([2, 4, 6, 8, 1, 3]))
    assert a2v.alibi_slopes(1).tolist() == [2.0**-8]
    with pytest.raises(ValueError, match="heads"):
        a2v.alibi_slopes(0)
    model = a2v.build_model(tiny_config())
    with torch.no_grad():
        model.alibi_scale.copy_(torch.tensor([1.0, 2.0, -1.0, 0.5]))  # negative clamps to 0
    bias = model.alibi_bias(6)[0].detach().numpy()  # (H, 6, 6)
    dist = np.abs(np.arange(6)[:, None] - np.arange(6)[None, :])
    scale = np.array([1.0, 2.0, 0.0, 0.5])
    ref = -(2.0 ** -np.array([2, 4, 6, 8]) * scale)[:, None, None] * dist  # 4 heads
    np.testing.assert_allclose(bias, ref, rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------------- shapes, sizes


def test_frame_count_and_stride():
    cfg = a2v.Animal2vecConfig.large()
    assert cfg.stride == 40 and cfg.frames == 2000 and cfg.conv_layers[-1][0] == 512
    # The published kernels, strides and paddings with 4 channels: cheap to run for real.
    narrow = dataclasses.replace(cfg, conv_layers=tuple((4, k, s) for _, k, s in cfg.conv_layers))
    fe = a2v.FeatureExtractor(narrow)
    with torch.inference_mode():
        for seconds, frames in ((10.0, 2000), (1.0, 200), (2.5, 500)):
            assert tuple(fe(torch.zeros(2, int(SR * seconds))).shape) == (2, 4, frames)


def test_small_frontend_gives_2000_frames_of_512_for_10_s():
    m = load_model("animal2vec-small", device="cpu")
    assert (m.name, m.sample_rate, m.window_s, m.dim, m.weights) == (
        "animal2vec-small", 8000, 10.0, 256, None,
    )  # fmt: skip
    x = audio(1, 80_000)
    feats = m.frontend(x)
    assert feats.shape == (1, 2000, 512) and feats.dtype == np.float32
    with torch.inference_mode():  # the transformer on those frames (embed() is tested on tiny)
        rep = m.model.encode(torch.from_numpy(feats))
    assert rep.shape == (1, 2000, 256) and torch.isfinite(rep).all()


def test_large_parameter_count_matches_spec():
    cfg = a2v.Animal2vecConfig.large()
    total = a2v.count_parameters(cfg)
    assert abs(total - 313.9e6) / 313.9e6 < 0.01
    with torch.device("meta"):
        fe = a2v.FeatureExtractor(cfg)
    transformer = total - sum(p.numel() for p in fe.parameters())
    assert abs(transformer - 309.1e6) / 309.1e6 < 0.01
    assert a2v.count_parameters(a2v.Animal2vecConfig.small()) < 12e6


# ---------------------------------------------------------------------------------- embedding


def test_batched_and_single_window_embeddings_agree():
    batched = tiny_embedder(batch_size=4)
    single = tiny_embedder(batch_size=1)
    x = audio(5, 3200)
    a, b = batched.embed(x), single.embed(x)
    assert a.shape == (5, 32)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() >= 0.9999


def test_embedding_ignores_gain_and_offset():
    m = tiny_embedder()
    x = audio(2, 3200)
    np.testing.assert_allclose(m.embed(x), m.embed(3.0 * x + 0.1), atol=1e-4)


def test_embedding_is_time_average_of_frames():
    m = tiny_embedder()
    x = audio(2, 3200)
    frames = m.frames(x)
    assert frames.shape == (2, 80, 32)
    np.testing.assert_allclose(m.embed(x), frames.mean(1), atol=1e-5)


def test_random_init_is_reproducible_and_leaves_global_rng_alone():
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a = a2v.build_model(tiny_config()).state_dict()
    b = a2v.build_model(tiny_config()).state_dict()
    assert torch.equal(torch.random.get_rng_state(), before)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_bad_input_and_options_are_rejected():
    m = tiny_embedder()
    with pytest.raises(ValueError, match=r"\(n, 3200\)"):
        m.embed(np.zeros((2, 3000), np.float32))
    with pytest.raises(ValueError, match="precision"):
        a2v.load_small(device="cpu", precision="fp8")
    with pytest.raises(ValueError, match="no classification head"):
        m.logits(audio(1, 3200))


# ---------------------------------------------------------------------------------- checkpoints


def test_chorus_checkpoint_round_trip(tmp_path):
    cfg = a2v.Animal2vecConfig.small()
    cfg.window_s, cfg.depth = 1.0, 2  # keep the test fast; the file carries its own shape
    src = a2v.build_model(cfg)
    path = tmp_path / "small.pt"
    a2v.save_checkpoint(src, path)
    m = a2v.load_small(weights=str(path), device="cpu")
    assert m.weights.startswith(f"{path.resolve()} (sha256 ")
    assert m.window_s == 1.0 and m.model.cfg.depth == 2
    x = audio(2, 8000)
    with torch.inference_mode():
        ref = src.embed(torch.from_numpy(x)).numpy()
    np.testing.assert_allclose(m.embed(x), ref, atol=1e-5)
    with pytest.raises(ValueError, match="width-256"):
        a2v.load_large(weights=str(path), device="cpu")


def test_chorus_checkpoint_mismatch_names_keys(tmp_path):
    src = a2v.build_model(tiny_config())
    path = tmp_path / "bad.pt"
    a2v.save_checkpoint(src, path)
    ckpt = torch.load(path, weights_only=True)
    del ckpt["state_dict"]["blocks.1.mlp.fc2.bias"]
    ckpt["state_dict"]["blocks.1.mlp.fc3.bias"] = torch.zeros(32)
    torch.save(ckpt, path)
    with pytest.raises(ValueError, match=r"blocks\.1\.mlp\.fc2\.bias.*blocks\.1\.mlp\.fc3\.bias"):
        a2v.load_model(tiny_config(), "tiny", weights=str(path), device="cpu")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision, min_cos", [("fp32", 0.9999), ("bf16", 0.99), ("fp16", 0.99)])
def test_gpu_matches_cpu(precision, min_cos):
    x = audio(3, 3200)
    cpu = tiny_embedder()
    model = a2v.build_model(tiny_config())
    gpu = a2v.Animal2vecEmbedder(model, "tiny", None, torch.device("cuda"), precision=precision)
    a, b = gpu.embed(x), cpu.embed(x)
    assert a.dtype == np.float32 and a.shape == b.shape
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() >= min_cos
    fa, fb = gpu.frontend(x), cpu.frontend(x)
    assert np.corrcoef(fa.ravel(), fb.ravel())[0, 1] >= min_cos
