"""Optional compiled CPU kernel: fused depthwise conv + SiLU + channel means (fp32, AVX-512).

The kernel (``dwconv_silu.cpp`` beside this module) takes the pre-activation output of an MBConv
block's expand conv and, in one pass, applies SiLU as it reads it, runs the depthwise conv, bias and
SiLU, writes the result and sums each channel for the squeeze-excitation; oneDNN needs three passes
over these tensors (see ``benchmarks/RESULTS.md``, "Perch CPU").

It is compiled on first use with the system's C++ compiler (``$CXX``, else ``c++`` / ``g++`` /
``clang++``) into a per-user cache and loaded with :mod:`ctypes`. Where there is no compiler, the
CPU lacks AVX-512, the build fails or ``CHORUS_CPU_KERNELS=0`` is set, :func:`available` is False,
:func:`status` says why, and callers keep the oneDNN path. Nothing here is needed for correctness.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("dwconv_silu.cpp")
CXX_FLAGS = ("-O3", "-mavx512f", "-mfma", "-std=c++17", "-shared", "-fPIC")
COMPILERS = ("c++", "g++", "clang++")
DISABLE_ENV = "CHORUS_CPU_KERNELS"  # "0" turns the kernel off
CACHE_ENV = "CHORUS_CACHE_DIR"  # where built kernels are kept (default: the user cache folder)
KERNEL_SIZES, STRIDES = (3, 5), (1, 2)
BUILD_TIMEOUT_S = 120

_LOCK = threading.Lock()
_STATE: dict[str, object] = {}  # "lib" (ctypes.CDLL or None) and "status" (str), once resolved


def cache_dir() -> Path:
    """``$CHORUS_CACHE_DIR``, else ``$XDG_CACHE_HOME/chorus`` (``~/.cache/chorus``)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "chorus"


def _cpu_has_avx512f() -> bool:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX")
    except AttributeError:  # older torch: ask the kernel instead
        try:
            return " avx512f" in Path("/proc/cpuinfo").read_text()
        except OSError:
            return False


def _compiler() -> str | None:
    names = [os.environ["CXX"]] if os.environ.get("CXX") else list(COMPILERS)
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    return None


def _build(cxx: str) -> Path:
    """Compile the kernel once per source, flags and compiler; return the shared library."""
    key = hashlib.sha256(SOURCE.read_bytes() + " ".join((cxx, *CXX_FLAGS)).encode()).hexdigest()
    lib = cache_dir() / "kernels" / f"dwconv_silu-{key[:16]}.so"
    if lib.exists():
        return lib
    lib.parent.mkdir(parents=True, exist_ok=True)
    # Built under a temporary name and renamed: a concurrent build or a crash never leaves a
    # half-written library under the final name.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
    os.close(fd)
    try:
        subprocess.run(
            [cxx, *CXX_FLAGS, "-o", tmp, str(SOURCE)],
            check=True,
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return lib


def _resolve() -> tuple[ctypes.CDLL | None, str]:
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return None, f"off ({DISABLE_ENV}=0)"
    if not _cpu_has_avx512f():
        return None, "off (the CPU has no AVX-512)"
    cxx = _compiler()
    if cxx is None:
        return None, "off (no C++ compiler found; set CXX)"
    try:
        path = _build(cxx)
        lib = ctypes.CDLL(str(path))
    except subprocess.CalledProcessError as exc:
        last = (exc.stderr or "").strip().splitlines()[-1:] or ["no output"]
        return None, f"off (the build failed: {last[0]})"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"off ({type(exc).__name__}: {exc})"
    fn = lib.dwconv_silu
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    fn.restype = i32
    fn.argtypes = [ptr, i32, i32, i32, i32, ptr, ptr, i32, i32, i32, i32, i32, i32, i32]
    fn.argtypes += [ptr, ptr, ptr, ptr]
    return lib, f"on ({path})"


def _library() -> ctypes.CDLL | None:
    with _LOCK:
        if "status" not in _STATE:
            _STATE["lib"], _STATE["status"] = _resolve()
        return _STATE["lib"]  # type: ignore[return-value]


def available() -> bool:
    """Whether the fused kernel can run here (builds it on the first call)."""
    return _library() is not None


def status() -> str:
    """One line: ``on (path)`` or ``off (reason)``."""
    _library()
    return str(_STATE["status"])


def reset() -> None:
    """Forget the resolved state, so the next call re-checks the environment (for tests)."""
    with _LOCK:
        _STATE.clear()


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

    Parameters
    ----------
    x : (N, C, H, W) float32 CPU tensor, channels_last (NHWC in memory)
    weight : (K, K, C) float32, contiguous; K in ``KERNEL_SIZES``
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
    lib = _library()
    if lib is None:
        raise RuntimeError(f"the fused depthwise kernel is {status()}")
    n, c, h, w = x.shape
    k, ho, wo = weight.shape[0], *out_hw
    if k not in KERNEL_SIZES or stride not in STRIDES or weight.shape != (k, k, c):
        raise ValueError(
            f"unsupported depthwise conv: weight {tuple(weight.shape)}, stride {stride}"
        )
    if x.dtype != torch.float32 or x.device.type != "cpu":
        raise ValueError(f"needs a float32 CPU tensor, got {x.dtype} on {x.device}")
    width = (wo - 1) * stride + k  # padded input columns the kernel reads
    if pad_left + w > width or min(ho, wo, pad_top, pad_left) < 0:
        raise ValueError(f"bad depthwise geometry: {h}x{w} -> {ho}x{wo}, pads {pad_top}/{pad_left}")
    x = x.contiguous(memory_format=torch.channels_last)
    weight, bias = weight.contiguous(), bias.contiguous()
    out = torch.empty((n, c, ho, wo), memory_format=torch.channels_last)
    sums = torch.empty((n, c))
    ring, zero = torch.empty(k * width * c), torch.empty(width * c)
    rc = lib.dwconv_silu(
        x.data_ptr(), n, h, w, c, weight.data_ptr(), bias.data_ptr(), k, stride, pad_top,
        pad_left, ho, wo, int(act_in), out.data_ptr(), sums.data_ptr(), ring.data_ptr(),
        zero.data_ptr(),
    )  # fmt: skip
    if rc != 0:
        raise ValueError(f"unsupported depthwise conv: kernel {k}, stride {stride}")
    return out, sums.div_(ho * wo)


if __name__ == "__main__":  # python -m embedder.cpu_kernels: build now and say where
    print(status())
    sys.exit(0 if available() else 1)
