"""Optional compiled CPU kernel: fused depthwise conv + SiLU + channel means (fp32, AVX-512/AVX2).

The kernel (``dwconv_silu.cpp`` beside this module) takes the pre-activation output of an MBConv
block's expand conv and, in one pass, applies SiLU as it reads it, runs the depthwise conv, bias and
SiLU, writes the result and sums each channel for the squeeze-excitation; oneDNN needs three passes
over these tensors (see ``benchmarks/RESULTS.md``, "Perch CPU").

It is built on first use by :mod:`embedder.native` (system C++ compiler, per-user cache), for
AVX-512 or AVX2 as torch's CPU capability says. Where there is no compiler, torch reports neither,
the build fails or ``CHORUS_CPU_KERNELS=0`` is set, :func:`available` is False, :func:`status`
says why, and callers keep the oneDNN path. Nothing here is needed for correctness.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from embedder.native import CACHE_ENV, DISABLE_ENV, KernelUnavailable, NativeLibrary, cache_dir

__all__ = ["CACHE_ENV", "DISABLE_ENV", "KernelUnavailable", "cache_dir", "available", "status"]

KERNEL_SIZES, STRIDES = (3, 5), (1, 2)

_LOCK = threading.Lock()
# Windows of one call spread over threads; one thread per core, so that calls from several of
# run_split's workers at once each still get threads of their own.
_POOL: list[ThreadPoolExecutor] = []


# One source, built for the widest vector set the CPU has (torch's own dispatch decides which).
# (-mno-avx512f: even if $CXX says -march=native, the AVX2 build holds no AVX-512 code)
BUILDS = {"AVX512": ("-mavx512f", "-mfma"), "AVX2": ("-mavx2", "-mfma", "-mno-avx512f")}


def isa() -> str | None:
    """``"AVX512"`` or ``"AVX2"``: the build this CPU runs (None where neither can)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    capability = torch.backends.cpu.get_cpu_capability()
    return {"AVX512": "AVX512", "AMX": "AVX512", "AVX2": "AVX2"}.get(capability)


def _cpu_problem(build: str | None = None) -> str | None:
    """Why this CPU cannot run ``build`` (default: the one :func:`isa` picks), or None."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the CPU is {platform.machine()}, not x86-64"
    have = isa()
    if have is None or (build == "AVX512" and have != "AVX512"):
        capability = torch.backends.cpu.get_cpu_capability()
        return f"torch reports CPU capability {capability}, not {build or 'AVX512 or AVX2'}"
    return None


def _bind(lib: ctypes.CDLL):
    fn = lib.dwconv_silu
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    fn.restype = i32
    fn.argtypes = [ptr, i32, i32, i32, i32, ptr, ptr, i32, i32, i32, i32, i32, i32, i32]
    fn.argtypes += [ptr, ptr, ptr, ptr]
    return fn


LIBRARIES = {
    name: NativeLibrary(
        f"dwconv_silu_{name.lower()}",
        Path(__file__).with_name("dwconv_silu.cpp"),
        flags=lambda flags=flags: flags,
        problem=lambda name=name: _cpu_problem(name),
        bind=_bind,
    )
    for name, flags in BUILDS.items()
}


def _library() -> NativeLibrary:
    return LIBRARIES[isa() or "AVX512"]  # (on other CPUs its status gives the reason)


def library_path() -> Path:
    """Where the kernel built from this source with this compiler and flags is cached."""
    return _library().library_path()


def _kernel():
    return _library().get()


def available() -> bool:
    """Whether the fused kernel can run here (builds it on the first call)."""
    return _library().available()


def status() -> str:
    """One line: ``on (path)`` or ``off (reason)``."""
    return _library().status()


def reset() -> None:
    """Forget the resolved state, so the next call re-checks the environment (for tests)."""
    for lib in LIBRARIES.values():
        lib.reset()


def _pool() -> ThreadPoolExecutor:
    with _LOCK:  # one pool for the life of the process; its threads start on demand
        if not _POOL:
            _POOL.append(ThreadPoolExecutor(os.cpu_count() or 1, "chorus-dw"))
        return _POOL[0]


def _check(x, weight, bias, stride, pad_top, pad_left, out_hw) -> int:
    """Refuse what the kernel would read out of bounds; return the padded input width."""
    n, c, h, w = x.shape
    k, (ho, wo) = weight.shape[0], out_hw
    if k not in KERNEL_SIZES or stride not in STRIDES or tuple(weight.shape) != (k, k, c):
        raise ValueError(
            f"unsupported depthwise conv: weight {tuple(weight.shape)}, stride {stride}"
        )
    if tuple(bias.shape) != (c,):
        raise ValueError(f"bias must have shape ({c},), got {tuple(bias.shape)}")
    for name, t in (("x", x), ("weight", weight), ("bias", bias)):
        if t.dtype != torch.float32 or t.device.type != "cpu":
            raise ValueError(f"{name} must be a float32 CPU tensor, got {t.dtype} on {t.device}")
    width = (wo - 1) * stride + k  # padded input columns the kernel reads
    if pad_left + w > width or min(ho, wo) < 1 or min(pad_top, pad_left) < 0:
        raise ValueError(f"bad depthwise geometry: {h}x{w} -> {ho}x{wo}, pads {pad_top}/{pad_left}")
    return width


def dwconv_silu(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor,
    stride: int,
    pad_top: int,
    pad_left: int,
    out_hw: tuple[int, int],
    act_in: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``silu(depthwise(act(x)) + bias)`` and its per-channel mean, in one pass.

    The windows of a batch are spread over ``torch.get_num_threads()`` threads.

    Parameters
    ----------
    x : (N, C, H, W) float32 CPU tensor (made channels_last, i.e. NHWC in memory, if it is not)
    weight : (K, K, C) float32; K in ``KERNEL_SIZES``
    bias : (C,) float32
    stride : int, in ``STRIDES``
    pad_top, pad_left : int
        Zero rows above and columns left of ``x``; the rows below and columns right follow from
        ``out_hw`` (so TF-"SAME" asymmetric padding needs no copy).
    out_hw : (Ho, Wo)
    act_in : bool
        Apply SiLU to ``x`` as it is read (``x`` is an expand conv's pre-activation).

    Returns
    -------
    out : (N, C, Ho, Wo) float32, channels_last
    mean : (N, C) float32, the mean of ``out`` over (Ho, Wo)
    """
    fn = _kernel()
    if fn is None:
        raise KernelUnavailable(f"the fused depthwise kernel is {status()}")
    width = _check(x, weight, bias, stride, pad_top, pad_left, out_hw)
    n, c, h, w = x.shape
    k, (ho, wo) = weight.shape[0], out_hw
    x = x.contiguous(memory_format=torch.channels_last)
    weight, bias = weight.contiguous(), bias.contiguous()
    out = torch.empty((n, c, ho, wo), memory_format=torch.channels_last)
    sums = torch.empty((n, c))
    if n == 0:
        return out, sums

    def run(lo: int, hi: int) -> int:  # windows [lo, hi), each call with its own scratch
        ring, zero = torch.empty(k * width * c), torch.empty(width * c)
        return fn(
            x[lo].data_ptr(), hi - lo, h, w, c, weight.data_ptr(), bias.data_ptr(), k, stride,
            pad_top, pad_left, ho, wo, int(act_in), out[lo].data_ptr(), sums[lo].data_ptr(),
            ring.data_ptr(), zero.data_ptr(),
        )  # fmt: skip

    threads = min(torch.get_num_threads(), n)
    if threads > 1:  # ctypes releases the GIL, so the slices run in parallel
        bounds = [n * i // threads for i in range(threads + 1)]
        codes = list(_pool().map(run, bounds[:-1], bounds[1:]))
    else:
        codes = [run(0, n)]
    if any(codes):
        raise ValueError(f"unsupported depthwise conv: kernel {k}, stride {stride}")
    return out, sums.div_(ho * wo)


if __name__ == "__main__":  # python -m embedder.cpu_kernels: build now and say where
    print(status())
    sys.exit(0 if available() else 1)
