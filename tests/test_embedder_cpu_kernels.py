"""The compiled fused depthwise kernel: numbers vs an independent reference, build and fallback."""

from __future__ import annotations

import itertools
import math
import os
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from embedder import cpu_kernels
from embedder.perch import load

needs_kernel = pytest.mark.skipif(not cpu_kernels.available(), reason=cpu_kernels.status())


@pytest.fixture
def fresh_state(monkeypatch, tmp_path):
    """Resolve the kernel again under this test's environment, with its own empty cache."""
    monkeypatch.setenv(cpu_kernels.CACHE_ENV, str(tmp_path / "cache"))
    cpu_kernels.reset()
    yield tmp_path
    cpu_kernels.reset()


RUNNABLE = {"AVX512": ("AVX512",), "AVX2": ("AVX512", "AVX2")}  # build -> CPUs that run it


@pytest.fixture(params=list(cpu_kernels.BUILDS))
def build(request, monkeypatch):
    """Each build of the kernel (AVX-512, AVX2) that this CPU can run, selected in turn."""
    if cpu_kernels.isa() not in RUNNABLE[request.param]:
        pytest.skip(f"this CPU does not run the {request.param} build")
    monkeypatch.setattr(cpu_kernels, "isa", lambda: request.param)
    assert cpu_kernels.available(), cpu_kernels.status()
    return request.param


def tf_same(size: int, k: int, s: int) -> tuple[int, int]:
    out = math.ceil(size / s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def reference(x, w, b, stride, act_in):
    """Independent path: explicit zero pad (TF-SAME), grouped conv2d, SiLU, mean."""
    c, k = x.shape[1], w.shape[0]
    h = F.silu(x) if act_in else x
    (top, bottom), (left, right) = tf_same(x.shape[2], k, stride), tf_same(x.shape[3], k, stride)
    weight = w.permute(2, 0, 1)[:, None]  # (K, K, C) -> (C, 1, K, K)
    y = F.silu(F.conv2d(F.pad(h, (left, right, top, bottom)), weight, b, stride, 0, 1, c))
    return y, y.mean(dim=(2, 3))


@needs_kernel
@pytest.mark.parametrize(
    "k, stride, c, h, w, act_in",
    [
        (3, 1, 24, 9, 7, True),  # 24 channels: full vectors and a masked tail (AVX-512)
        (3, 1, 13, 6, 6, True),  # 13 channels: a masked tail with both builds
        (3, 2, 40, 10, 8, False),  # even sizes: TF-SAME pads (0, 1), asymmetric
        (5, 2, 20, 11, 6, True),  # odd x even
        (5, 1, 33, 5, 5, True),  # map smaller than two kernel widths
        (3, 2, 48, 7, 9, True),  # odd sizes: symmetric pads
        (5, 2, 144, 13, 16, True),
    ],
)
def test_kernel_matches_reference(build, k, stride, c, h, w, act_in):
    g = torch.Generator().manual_seed(k * 100 + c)
    x = torch.randn(3, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
    wt, b = torch.randn(k, k, c, generator=g) * 0.3, torch.randn(c, generator=g) * 0.1
    want_y, want_mean = reference(x, wt, b, stride, act_in)
    pads = tf_same(h, k, stride)[0], tf_same(w, k, stride)[0]
    out_hw = (math.ceil(h / stride), math.ceil(w / stride))
    y, mean = cpu_kernels.dwconv_silu(x, wt, b, stride, *pads, out_hw, act_in)
    assert y.shape == want_y.shape and y.is_contiguous(memory_format=torch.channels_last)
    np.testing.assert_allclose(y.numpy(), want_y.numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(mean.numpy(), want_mean.numpy(), rtol=1e-5, atol=1e-6)


@needs_kernel
@pytest.mark.parametrize("k, stride", [(3, 1), (3, 2), (5, 1), (5, 2)])
def test_kernel_matches_reference_on_tiny_maps(build, k, stride):
    """Maps smaller than the kernel, where most taps fall in the padding."""
    g = torch.Generator().manual_seed(k + stride)
    for (h, w), c in itertools.product([(1, 1), (2, 3), (4, 1), (3, 2)], [1, 17]):
        x = torch.randn(2, c, h, w, generator=g).contiguous(memory_format=torch.channels_last)
        wt, b = torch.randn(k, k, c, generator=g), torch.randn(c, generator=g)
        pads = tf_same(h, k, stride)[0], tf_same(w, k, stride)[0]
        out_hw = (math.ceil(h / stride), math.ceil(w / stride))
        y, mean = cpu_kernels.dwconv_silu(x, wt, b, stride, *pads, out_hw, True)
        want_y, want_mean = reference(x, wt, b, stride, True)
        np.testing.assert_allclose(y.numpy(), want_y.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(mean.numpy(), want_mean.numpy(), rtol=1e-5, atol=1e-6)


@needs_kernel
def test_kernel_silu_holds_at_extremes(build):
    """Inputs far outside the exp range still give silu(x) ~ x or ~ 0, never inf or NaN."""
    c = 16
    x = torch.tensor([-500.0, -90.0, -20.0, -1.0, 0.0, 1.0, 20.0, 90.0, 500.0]).repeat(2)[:16]
    x = x.reshape(1, 1, 1, c).permute(0, 3, 1, 2).contiguous(memory_format=torch.channels_last)
    wt = torch.zeros(3, 3, c)
    wt[1, 1] = 1.0  # identity depthwise conv: y = silu(silu(x))
    y, _ = cpu_kernels.dwconv_silu(x, wt, torch.zeros(c), 1, 1, 1, (1, 1), True)
    want = F.silu(F.silu(x.double())).float()
    assert torch.isfinite(y).all()
    np.testing.assert_allclose(y.numpy(), want.numpy(), rtol=1e-6, atol=1e-30)


@needs_kernel
def test_kernel_refuses_what_it_cannot_do():
    x = torch.randn(1, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="unsupported depthwise"):
        cpu_kernels.dwconv_silu(x, torch.randn(7, 7, 8), torch.zeros(8), 1, 3, 3, (6, 6), True)
    with pytest.raises(ValueError, match="float32"):
        cpu_kernels.dwconv_silu(
            x.double(), torch.randn(3, 3, 8), torch.zeros(8), 1, 1, 1, (6, 6), 1
        )
    with pytest.raises(ValueError, match="geometry"):  # output too small to cover the input
        cpu_kernels.dwconv_silu(x, torch.randn(3, 3, 8), torch.zeros(8), 1, 1, 1, (6, 2), True)


@needs_kernel
def test_perch_with_kernel_matches_plain_fp32(build):
    rng = np.random.default_rng(5)
    audio = (0.1 * rng.standard_normal((3, 160_000))).astype(np.float32)
    fused = load(None, device="cpu", batch_size=3)
    assert sum(b.dw_kkc is not None for b in fused.model.backbone.blocks) == 26
    plain = load(None, device="cpu", onednn=False, micro_batch=0, cpu_workers=1)
    a, b = fused.embed(audio), plain.embed(audio)
    cos = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
    assert cos.min() >= 0.99999
    np.testing.assert_allclose(a, b, atol=1e-5)
    one = np.concatenate([fused.embed(audio[i : i + 1]) for i in range(3)])  # batched vs single
    np.testing.assert_allclose(a, one, atol=1e-5)


def test_disabled_by_environment_and_model_falls_back(fresh_state, monkeypatch):
    monkeypatch.setenv(cpu_kernels.DISABLE_ENV, "0")
    assert not cpu_kernels.available() and "CHORUS_CPU_KERNELS=0" in cpu_kernels.status()
    model = load(None, device="cpu")  # default: silently the oneDNN path
    assert all(b.dw_kkc is None for b in model.model.backbone.blocks)
    with pytest.raises(ValueError, match="CHORUS_CPU_KERNELS=0"):
        load(None, device="cpu", cpu_kernels=True)
    with pytest.raises(ValueError, match="precision fp32"):
        load(None, device="cpu", precision="bf16", cpu_kernels=True)


def test_missing_compiler_is_reported(fresh_state, monkeypatch):
    monkeypatch.setenv("CXX", str(fresh_state / "no-such-compiler"))
    assert not cpu_kernels.available()
    status = cpu_kernels.status()
    assert status.startswith("off (") and ("no-such-compiler" in status or "CPU" in status)


@pytest.mark.skipif(os.name != "posix", reason="uses a shell script as the compiler")
def test_failed_build_is_reported_and_leaves_no_library(fresh_state, monkeypatch):
    if cpu_kernels._cpu_problem():
        pytest.skip(f"the build is never tried: {cpu_kernels._cpu_problem()}")
    fake = fresh_state / "cxx"
    fake.write_text("#!/bin/sh\necho 'error: boom' >&2\nexit 1\n")
    fake.chmod(0o755)
    monkeypatch.setenv("CXX", str(fake))
    assert not cpu_kernels.available()
    assert cpu_kernels.status() == "off (the build failed: error: boom)"
    assert not list((fresh_state / "cache" / "kernels").glob("*"))  # no half-written files


@needs_kernel
def test_build_is_cached(fresh_state):
    assert cpu_kernels.available()
    (lib,) = (fresh_state / "cache" / "kernels").glob("dwconv_silu_*.so")
    stamp = lib.stat().st_mtime_ns
    cpu_kernels.reset()
    assert cpu_kernels.available() and str(lib) in cpu_kernels.status()
    assert lib.stat().st_mtime_ns == stamp  # loaded, not rebuilt


@needs_kernel
def test_kernel_rejects_bad_weight_and_bias():
    x = torch.randn(2, 8, 6, 6).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(3, 3, 8), torch.zeros(8)
    args = (1, 1, 1, (6, 6), True)
    with pytest.raises(ValueError, match="bias must have shape"):
        cpu_kernels.dwconv_silu(x, w, torch.zeros(4), *args)
    with pytest.raises(ValueError, match="bias must be a float32"):
        cpu_kernels.dwconv_silu(x, w, b.bfloat16(), *args)
    with pytest.raises(ValueError, match="weight must be a float32"):
        cpu_kernels.dwconv_silu(x, w.double(), b, *args)


@needs_kernel
def test_kernel_threads_split_windows_without_changing_numbers(build):
    x = torch.randn(5, 40, 9, 7).contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(3, 3, 40), torch.randn(40)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        y1, m1 = cpu_kernels.dwconv_silu(x, w, b, 2, 0, 0, (5, 4), True)
        torch.set_num_threads(3)  # 5 windows over 3 threads: slices of 1, 2, 2
        y3, m3 = cpu_kernels.dwconv_silu(x, w, b, 2, 0, 0, (5, 4), True)
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(y1, y3) and torch.equal(m1, m3)
    empty, mean = cpu_kernels.dwconv_silu(x[:0], w, b, 2, 0, 0, (5, 4), True)
    assert empty.shape == (0, 40, 5, 4) and mean.shape == (0, 40)


@needs_kernel
def test_perch_kernel_follows_weight_edits_grad_mode_and_switch_off():
    rng = np.random.default_rng(6)
    audio = (0.1 * rng.standard_normal((2, 160_000))).astype(np.float32)
    fused = load(None, device="cpu", batch_size=2)
    net = fused.model
    plain = load(None, device="cpu", cpu_kernels=False, batch_size=2).model
    x = torch.from_numpy(audio)
    with torch.no_grad():  # edit the weights after load, as load_state_dict would
        for m in (net, plain):
            m.backbone.blocks[3].depthwise.conv.weight.mul_(1.5)
        want = plain(x)
        np.testing.assert_allclose(net(x).numpy(), want.numpy(), atol=1e-5)
    with torch.enable_grad():  # autograd: the oneDNN / eager path, same numbers
        np.testing.assert_allclose(net(x).detach().numpy(), want.numpy(), atol=1e-5)
    assert net.backbone.use_cpu_kernels(False) == 0
    assert all(b.dw_kkc is None for b in net.backbone.blocks)
    with torch.no_grad():
        np.testing.assert_allclose(net(x).numpy(), want.numpy(), atol=1e-5)


@needs_kernel
def test_unloadable_cached_library_is_rebuilt(fresh_state):
    # Planted before this process loads it: overwriting a library in use would crash the process.
    lib = cpu_kernels.library_path()
    lib.parent.mkdir(parents=True, mode=0o700)
    lib.write_bytes(b"not a shared library")
    assert cpu_kernels.available()
    assert lib.read_bytes()[:4] == b"\x7fELF" and str(lib) in cpu_kernels.status()


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_cache_writable_by_others_is_refused(fresh_state):
    if cpu_kernels._cpu_problem():
        pytest.skip(f"the cache is never used: {cpu_kernels._cpu_problem()}")
    folder = fresh_state / "cache" / "kernels"
    folder.mkdir(parents=True)
    folder.chmod(0o777)
    assert not cpu_kernels.available()
    assert "writable by other users" in cpu_kernels.status()


def test_cache_dir_without_a_home(monkeypatch):
    for name in (cpu_kernels.CACHE_ENV, "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(Path, "home", staticmethod(no_home))
    assert cpu_kernels.cache_dir().parent == Path(tempfile.gettempdir())
