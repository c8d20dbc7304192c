"""The compiled fused depthwise kernel: numbers vs an independent reference, build and fallback."""

from __future__ import annotations

import itertools
import math
import os

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
        (3, 1, 24, 9, 7, True),  # 24 channels: one full vector and a masked tail
        (3, 2, 40, 10, 8, False),  # even sizes: TF-SAME pads (0, 1), asymmetric
        (5, 2, 20, 11, 6, True),  # odd x even
        (5, 1, 33, 5, 5, True),  # map smaller than two kernel widths
        (3, 2, 48, 7, 9, True),  # odd sizes: symmetric pads
        (5, 2, 144, 13, 16, True),
    ],
)
def test_kernel_matches_reference(k, stride, c, h, w, act_in):
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
def test_kernel_matches_reference_on_tiny_maps(k, stride):
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
def test_kernel_silu_holds_at_extremes():
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
def test_perch_with_kernel_matches_plain_fp32():
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
    assert status.startswith("off (") and ("compiler" in status or "AVX-512" in status)


@pytest.mark.skipif(os.name != "posix", reason="uses a shell script as the compiler")
def test_failed_build_is_reported_and_leaves_no_library(fresh_state, monkeypatch):
    if not cpu_kernels._cpu_has_avx512f():
        pytest.skip("no AVX-512: the build is never tried")
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
    (lib,) = (fresh_state / "cache" / "kernels").glob("dwconv_silu-*.so")
    stamp = lib.stat().st_mtime_ns
    cpu_kernels.reset()
    assert cpu_kernels.available() and str(lib) in cpu_kernels.status()
    assert lib.stat().st_mtime_ns == stamp  # loaded, not rebuilt
