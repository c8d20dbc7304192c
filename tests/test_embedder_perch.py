"""Perch model: blocks vs a NumPy reference in Flax layout, weight loading, shapes, parity."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedder import ort_backend
from embedder.models.perch import (
    PerchConfig,
    flax_leaf_order,
    flax_mapping,
    flax_to_state_dict,
    load,
    random_net,
    state_dict_to_flax,
)
from embedder.models.perch_net import ConvBN, MBConv
from embedder.runtime import cpu_bf16_problem
from embedder.weights import WeightsError

N = 160_000
EPS = 1e-5
N_CLASSES = 5


# --------------------------------------------------------------------- NumPy reference (NHWC / HWIO)
def tf_same(n: int, k: int, s: int) -> tuple[int, int]:
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def np_conv(x, w, stride=1, pad=((0, 0), (0, 0)), depthwise=False):
    """x (B, H, W, Ci), w (kh, kw, Ci or 1, Co) -> (B, Ho, Wo, Co) by summing kernel offsets."""
    x = np.pad(x, ((0, 0), pad[0], pad[1], (0, 0)))
    kh, kw = w.shape[:2]
    ho = (x.shape[1] - kh) // stride + 1
    wo = (x.shape[2] - kw) // stride + 1
    out = 0.0
    for i in range(kh):
        for j in range(kw):
            patch = x[:, i : i + stride * ho : stride, j : j + stride * wo : stride, :]
            out = out + (patch * w[i, j, 0] if depthwise else patch @ w[i, j])
    return out


def np_bn(x, p, scope):
    return (x - p[f"batch_stats/{scope}/mean"]) / np.sqrt(p[f"batch_stats/{scope}/var"] + EPS) * p[
        f"params/{scope}/scale"
    ] + p[f"params/{scope}/bias"]


def swish(x):
    return x / (1.0 + np.exp(-x))


def np_mbconv(x, p, i, kernel, stride, expand, residual):
    s = f"MBConv_{i}"
    y = x
    if expand != 1:
        y = swish(np_bn(np_conv(y, p[f"params/{s}/ExpandConv/kernel"]), p, f"{s}/ExpandBatchNorm"))
    if stride == 1:
        pad = ((kernel // 2,) * 2, (kernel // 2,) * 2)
    else:
        pad = (tf_same(y.shape[1], kernel, 2), tf_same(y.shape[2], kernel, 2))
    w = p[f"params/{s}/DepthwiseConv/kernel"]
    y = swish(np_bn(np_conv(y, w, stride, pad, depthwise=True), p, f"{s}/DepthwiseBatchNorm"))
    se = f"params/{s}/SqueezeAndExcitation_0"
    g = y.mean(axis=(1, 2))  # (B, C)
    g = swish(g @ p[f"{se}/Reduce/kernel"] + p[f"{se}/Reduce/bias"])
    g = 1.0 / (1.0 + np.exp(-(g @ p[f"{se}/Expand/kernel"] + p[f"{se}/Expand/bias"])))
    y = y * g[:, None, None, :]
    y = np_bn(np_conv(y, p[f"params/{s}/ProjectConv/kernel"]), p, f"{s}/ProjectBatchNorm")
    return x + y if residual else y


# ------------------------------------------------------------------------------------- fixtures
def random_flax(config: PerchConfig, seed: int = 0, n_classes: int = 0) -> dict[str, np.ndarray]:
    """A full random checkpoint in Flax layout with non-trivial BatchNorm statistics."""
    rng = np.random.default_rng(seed)
    net = random_net(PerchConfig(**{**config.to_dict(), "n_classes": n_classes}), seed=seed)
    flax = state_dict_to_flax(net.state_dict(), config)
    for k in flax:
        if k.endswith(("/scale", "/mean")) or (k.startswith("params/") and k.endswith("/bias")):
            flax[k] = flax[k] + rng.normal(0, 0.05, flax[k].shape).astype(np.float32)
    return flax


def block_module(config: PerchConfig, i: int, flax: dict) -> MBConv:
    """One MBConv loaded through the model's own Flax mapping."""
    block = MBConv(*config.block_specs()[i], config.activation).eval()
    prefix = f"backbone.blocks.{i}."
    _, state = flax_to_state_dict(flax, config, "test")
    block.load_state_dict({k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)})
    return block


@pytest.fixture(scope="module")
def config() -> PerchConfig:
    return PerchConfig()


@pytest.fixture(scope="module")
def flax(config) -> dict[str, np.ndarray]:
    return random_flax(config, seed=3)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(N) / 32_000
    x = np.stack(
        [
            np.sin(2 * np.pi * (1000 + 400 * t) * t),
            rng.standard_normal(N) * (t % 1 < 0.3),
            np.sin(2 * np.pi * 5000 * t) + 0.3 * rng.standard_normal(N),
        ]
    )
    return x.astype(np.float32)  # (3, N)


def cosine(a, b):
    a = a / np.linalg.norm(a, axis=-1, keepdims=True)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True)
    return (a * b).sum(-1)


# ---------------------------------------------------------------------------------------- tests
def test_flax_leaf_order_matches_released_layout(config):
    order = flax_leaf_order(config)
    assert len(order) == 494
    assert all(p.startswith("batch_stats/") for p in order[:156])
    assert all(p.startswith("params/") for p in order[156:])
    assert order.index("params/MBConv_10/DepthwiseConv/kernel") < order.index(
        "params/MBConv_2/DepthwiseConv/kernel"
    )
    assert "params/MBConv_1/ExpandConv/kernel" not in flax_mapping(config)


def test_stem_matches_reference(config, flax):
    net = random_net(config)
    _, state = flax_to_state_dict(flax, config, "test")
    net.load_state_dict(state)
    x = np.random.default_rng(1).standard_normal((2, 21, 14, 1)).astype(np.float32)  # NHWC
    ref = swish(
        np_bn(np_conv(x, flax["params/Stem_0/Conv_0/kernel"], 2), flax, "Stem_0/BatchNorm_0")
    )
    with torch.no_grad():
        ours = net.backbone.stem(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    assert ours.shape == ref.shape == (2, 10, 6, 40)  # VALID: (21 - 3) // 2 + 1, (14 - 3) // 2 + 1
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4, rtol=1e-4)


BF16_PROBLEM = cpu_bf16_problem()
needs_bf16 = pytest.mark.skipif(BF16_PROBLEM is not None, reason=f"CPU bf16: {BF16_PROBLEM}")
needs_ort = pytest.mark.skipif(not ort_backend.available(), reason="onnxruntime is not installed")
# plain eager PyTorch: one thread team, no slicing, contiguous layout
PLAIN = {"backend": "torch", "micro_batch": 0, "cpu_workers": 1, "channels_last": False}
MBCONV_CASES = pytest.mark.parametrize(
    ("i", "size"),
    [(3, (13, 8)), (2, (13, 8)), (2, (13, 9)), (5, (12, 9)), (0, (7, 6))],
    ids=["stride1-residual", "stride2-k3", "stride2-k3-odd", "stride2-k5-even", "no-expand"],
)


@MBCONV_CASES
@pytest.mark.parametrize("fused", [False, True], ids=["", "fused"])
def test_mbconv_matches_reference(config, flax, i, size, fused):
    in_ch, out_ch, kernel, stride, expand = config.block_specs()[i]
    block = block_module(config, i, flax)
    if fused:  # BatchNorm folded into the convs, as for inference
        for m in block.modules():
            if isinstance(m, ConvBN):
                m.fuse()
    x = np.random.default_rng(i).standard_normal((2, *size, in_ch)).astype(np.float32)
    ref = np_mbconv(x, flax, i, kernel, stride, expand, stride == 1 and in_ch == out_ch)
    with torch.no_grad():
        ours = block(torch.from_numpy(x).permute(0, 3, 1, 2)).permute(0, 2, 3, 1).numpy()
    assert ours.shape == ref.shape
    np.testing.assert_allclose(ours, ref, atol=2e-4, rtol=1e-4)


def test_fused_batchnorm_matches_unfused():
    conv = ConvBN(8, 16, 3, 2, padding="same").eval()
    torch.nn.init.normal_(conv.bn.running_mean)
    torch.nn.init.uniform_(conv.bn.running_var, 0.5, 2.0)
    x = torch.randn(2, 8, 11, 10)
    with torch.no_grad():
        before = conv(x)
        conv.fuse()
        after = conv(x)
    torch.testing.assert_close(before, after, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_npz_and_safetensors_load_with_expected_shapes(tmp_path, config, flax, audio):
    from safetensors.numpy import save_file

    np.savez(tmp_path / "perch.npz", **flax)
    save_file(flax, str(tmp_path / "perch.safetensors"))
    a = load(str(tmp_path / "perch.npz"), device="cpu")
    b = load(str(tmp_path / "perch.safetensors"), device="cpu", fuse_bn=False)
    assert a.weights and "sha256" in a.weights
    ea, eb = a.embed(audio[:2]), b.embed(audio[:2])
    assert ea.shape == (2, 1536) and ea.dtype == np.float32
    assert np.all(cosine(ea, eb) > 0.9999)
    spatial = a.embed_spatial(audio[:1])
    assert spatial.shape == (1, 16, 4, 1536)
    assert cosine(spatial.mean(axis=(1, 2))[0], ea[0]) > 0.9999
    assert cosine(ea[0], ea[1]) < 0.999  # different audio, different vectors


@pytest.mark.parametrize("kind", ["renamed", "reshaped", "missing"])
def test_bad_checkpoint_names_the_tensor(tmp_path, config, flax, kind):
    bad = dict(flax)
    victim = "params/MBConv_7/ProjectConv/kernel"
    if kind == "renamed":
        bad["params/MBConv_7/ProjectKonv/kernel"] = bad.pop(victim)
    elif kind == "reshaped":
        bad[victim] = bad[victim][..., :-1]
    else:
        del bad[victim]
    np.savez(tmp_path / "bad.npz", **bad)
    with pytest.raises(WeightsError) as err:
        load(str(tmp_path / "bad.npz"), device="cpu")
    assert victim in str(err.value)
    if kind == "renamed":
        assert "ProjectKonv" in str(err.value) and "unused" in str(err.value)


@pytest.mark.slow
def test_prototype_head_logits_and_labels(tmp_path, config, audio):
    flax = random_flax(config, seed=4, n_classes=N_CLASSES)
    flax = {k.replace("ProtoHead", "label_head"): v for k, v in flax.items()}
    np.savez(tmp_path / "head.npz", **flax)
    (tmp_path / "labels.csv").write_text("ebird\n" + "\n".join(f"sp{i}" for i in range(N_CLASSES)))
    m = load(str(tmp_path / "head.npz"), device="cpu", labels=str(tmp_path / "labels.csv"))
    logits = m.logits(audio[:2])
    assert logits.shape == (2, N_CLASSES) and np.isfinite(logits).all()
    assert m.class_names == [f"sp{i}" for i in range(N_CLASSES)]
    m.config.logit_rescale = True
    np.testing.assert_allclose(m.logits(audio[:2]), 0.97 * logits - 10.0, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="labels"):
        (tmp_path / "short.txt").write_text("a\nb\n")
        load(str(tmp_path / "head.npz"), device="cpu", labels=str(tmp_path / "short.txt"))


def test_random_init_is_seeded_and_batched_matches_single(audio):
    state = torch.random.get_rng_state()
    m1 = load(None, device="cpu", batch_size=3)
    assert torch.equal(state, torch.random.get_rng_state())  # global RNG untouched
    assert m1.weights is None and not m1.trained
    assert (m1.name, m1.sample_rate, m1.window_s, m1.dim) == ("perch", 32_000, 5.0, 1536)
    batched = m1.embed(audio)
    m2 = load(None, device="cpu", batch_size=1)
    single = np.concatenate([m2.embed(audio[i]) for i in range(len(audio))])
    assert batched.shape == (3, 1536)
    assert np.all(cosine(batched, single) >= 0.9999)
    assert m1.frontend(audio[:1]).shape == (1, 500, 128)
    assert m1.embed(np.zeros((0, N), np.float32)).shape == (0, 1536)


@needs_bf16
def test_bf16_on_cpu_is_close_to_fp32(audio):
    fp32 = load(None, device="cpu").embed(audio[:2])
    bf16 = load(None, device="cpu", precision="bf16")
    assert bf16.backend == "torch"
    assert bf16.model.backbone.stem.conv.weight.dtype == torch.bfloat16  # stored, not re-cast
    assert bf16.model.frontend.mel.dtype == torch.float32
    assert np.all(cosine(fp32, bf16.embed(audio[:2])) > 0.98)  # random weights; 26 bf16 blocks
    noise = (0.1 * np.random.default_rng(5).standard_normal((4, N))).astype(np.float32)
    assert np.all(cosine(load(None, device="cpu").embed(noise), bf16.embed(noise)) >= 0.99)


def test_bf16_refused_where_the_cpu_cannot_run_it(monkeypatch):
    import embedder.runtime

    monkeypatch.setattr(embedder.runtime, "cpu_bf16_problem", lambda: "no bf16 here")
    with pytest.raises(ValueError, match="bf16 is not supported on this CPU .no bf16 here."):
        load(None, device="cpu", precision="bf16")


def test_cpu_defaults_match_plain_fp32(audio):
    """The CPU default (onnxruntime where installed, else eager torch with micro-batches and the
    batch split on threads) and the torch options vs plain eager fp32."""
    plain = load(None, device="cpu", **PLAIN)
    ref, ref_spatial = plain.embed(audio), plain.embed_spatial(audio)
    cases = ({}, {"batch_size": 2}, {"micro_batch": (1, 26)}, {"backend": "torch"})
    for options in cases:
        fast = load(None, device="cpu", **options)
        assert np.all(cosine(ref, fast.embed(audio)) >= 0.99999), options
        spatial = fast.embed_spatial(audio).reshape(len(audio), -1)
        assert np.all(cosine(ref_spatial.reshape(len(audio), -1), spatial) >= 0.99999), options
    np.testing.assert_allclose(fast.frontend(audio), plain.frontend(audio), atol=1e-5)


@needs_ort
def test_onnxruntime_backend_is_the_cpu_default_and_exported_once(audio):
    m = load(None, device="cpu")
    assert m.backend == "onnxruntime" and m.config_dict()["backend"] == "onnxruntime"
    exported = m.model.backbone.path
    stamp = exported.stat().st_mtime_ns
    again = load(None, device="cpu", backend="onnxruntime", batch_size=2)
    assert again.model.backbone.path == exported and exported.stat().st_mtime_ns == stamp
    other = load(None, device="cpu", backend="onnxruntime", activation="relu")
    assert other.model.backbone.path != exported  # other weights, another export
    torch_m = load(None, device="cpu", backend="torch")
    # float32 summation order differs (MLAS vs oneDNN); 26 random-weight blocks amplify it
    assert np.all(cosine(again.embed(audio), torch_m.embed(audio)) >= 0.99999)
    assert load(None, device="cpu", cpu_workers=2).backend == "torch"  # a torch-only option
    with pytest.raises(ValueError, match="micro_batch"):
        load(None, device="cpu", backend="onnxruntime", micro_batch=0)
    with pytest.raises(ValueError, match="onnxruntime runs fp32"):
        load(None, device="cpu", backend="onnxruntime", precision="fp16")


def test_micro_batches_do_not_change_the_result(audio):
    """Slicing the early layers and the frontend is exact, on the plain path too."""
    whole = load(None, device="cpu", micro_batch=0)
    sliced = load(None, device="cpu", micro_batch=(1, 5))
    assert sliced.model.frontend.micro_batch == 1
    np.testing.assert_allclose(sliced.embed(audio), whole.embed(audio), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="micro-batch"):
        load(None, device="cpu", micro_batch=(2, 99))


@pytest.mark.parametrize(
    "options", [{}, pytest.param({"precision": "bf16"}, marks=needs_bf16)], ids=str
)
def test_cpu_workers_split_matches_one_thread(audio, options):
    """The batch split across threads gives the same result and leaves the thread count alone;
    the plain bf16 case checks that the caller's autocast reaches the worker threads."""
    threads = torch.get_num_threads()
    one = load(None, device="cpu", cpu_workers=1, micro_batch=0, **options)
    split = load(None, device="cpu", cpu_workers=2, micro_batch=0, **options)
    assert split.model.cpu_workers == 2
    a, b = one.embed(audio), split.embed(audio)  # 3 windows: slices of 2 and 1
    assert torch.get_num_threads() == threads
    assert np.all(cosine(a, b) >= 0.99999)
    assert split.embed_spatial(audio[:2]).shape == (2, 16, 4, 1536)


def test_bad_options_and_input():
    with pytest.raises(ValueError, match="backend"):
        load(None, device="cpu", backend="tensorflow")
    with pytest.raises(ValueError, match="cpu_workers"):
        load(None, device="cpu", compile=True, cpu_workers=2)
    with pytest.raises(TypeError, match="bogus"):
        load(None, device="cpu", bogus=1)
    with pytest.raises(ValueError, match="precision"):
        load(None, device="cpu", precision="int8")
    m = load(None, device="cpu")
    with pytest.raises(ValueError, match="160000"):
        m.embed(np.zeros((1, 1000), np.float32))
    with pytest.raises(RuntimeError, match="head"):
        m.logits(np.zeros((1, N), np.float32))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_matches_cpu(audio):
    cpu = load(None, device="cpu").embed(audio)
    gpu32 = load(None, device="cuda", precision="fp32").embed(audio)
    gpu16 = load(None, device="cuda").embed(audio)  # bf16 autocast by default
    assert np.all(cosine(cpu, gpu32) > 0.9999)
    # bf16 rounding through 26 random-weight blocks costs up to ~0.015 of cosine (0.984 on the
    # H200, 0.986 with bf16 on the CPU): the GPU must lose no more than the CPU's own bf16 path
    if BF16_PROBLEM is None:
        cpu16 = load(None, device="cpu", precision="bf16").embed(audio)
        assert np.all(cosine(cpu, gpu16) > cosine(cpu, cpu16) - 0.005)
        assert np.all(cosine(cpu16, gpu16) > 0.98)
    else:  # the worst the CPU's bf16 path gave where it runs (0.986)
        assert np.all(cosine(cpu, gpu16) > 0.98)
    spatial = load(None, device="cuda").embed_spatial(audio[:1])
    assert spatial.shape == (1, 16, 4, 1536)
