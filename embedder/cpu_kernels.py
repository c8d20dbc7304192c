"""Optional compiled CPU kernel: fused depthwise conv + SiLU + channel means (fp32, AVX-512).

The kernel (``dwconv_silu.cpp`` beside this module) takes the pre-activation output of an MBConv
block's expand conv and, in one pass, applies SiLU as it reads it, runs the depthwise conv, bias and
SiLU, writes the result and sums each channel for the squeeze-excitation; oneDNN needs three passes
over these tensors (see ``benchmarks/RESULTS.md``, "Perch CPU").

It is compiled the first time a model asks for it, with the system's C++ compiler (``$CXX``, else
``c++`` / ``g++`` / ``clang++``), into a per-user cache, and loaded with :mod:`ctypes`. Where there
is no compiler, torch does not report AVX-512, the build fails or ``CHORUS_CPU_KERNELS=0`` is set,
:func:`available` is False, :func:`status` says why, and callers keep the oneDNN path. Nothing here
is needed for correctness.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

SOURCE = Path(__file__).with_name("dwconv_silu.cpp")
SYMBOL = "dwconv_silu"
CXX_FLAGS = ("-O3", "-mavx512f", "-mfma", "-std=c++17", "-shared", "-fPIC")
COMPILERS = ("c++", "g++", "clang++")
DISABLE_ENV = "CHORUS_CPU_KERNELS"  # "0" turns the kernel off
CACHE_ENV = "CHORUS_CACHE_DIR"  # where built kernels are kept (default: the user cache folder)
KERNEL_SIZES, STRIDES = (3, 5), (1, 2)
BUILD_TIMEOUT_S = 120

_LOCK = threading.Lock()
_STATE: dict[str, object] = {}  # "fn" (ctypes function or None) and "status" (str), once resolved
# Windows of one call spread over threads; one thread per core, so that calls from several of
# run_split's workers at once each still get threads of their own.
_POOL: list[ThreadPoolExecutor] = []


class KernelUnavailable(RuntimeError):
    """The kernel cannot be built or loaded here (the message says why)."""


def cache_dir() -> Path:
    """``$CHORUS_CACHE_DIR``, else ``$XDG_CACHE_HOME/chorus`` (``~/.cache/chorus``); a private
    temporary folder where there is no home directory (containers with an unnamed user)."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "chorus"
    try:
        return Path.home() / ".cache" / "chorus"
    except RuntimeError:  # no $HOME and no passwd entry
        uid = os.getuid() if hasattr(os, "getuid") else "user"
        return Path(tempfile.gettempdir()) / f"chorus-cache-{uid}"


def _cpu_problem() -> str | None:
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"the CPU is {platform.machine()}, not x86-64"
    capability = torch.backends.cpu.get_cpu_capability()
    if capability not in ("AVX512", "AMX"):
        return f"torch reports CPU capability {capability}, not AVX512"
    return None


def _compiler() -> list[str]:
    """The compiler command (``$CXX`` may carry a launcher, e.g. ``ccache g++``)."""
    if os.environ.get("CXX"):
        cmd = shlex.split(os.environ["CXX"])
        if not cmd or shutil.which(cmd[0]) is None:
            raise KernelUnavailable(f"CXX={os.environ['CXX']!r} is not a command here")
        return cmd
    for name in COMPILERS:
        found = shutil.which(name)
        if found:
            return [found]
    raise KernelUnavailable("no C++ compiler found; set CXX")


def _private_dir(path: Path) -> Path:
    """Create ``path`` for this user only, and refuse one that another user owns: a library
    loaded from a folder others can write to would run their code."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if hasattr(os, "getuid"):
        st = path.stat()
        if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise KernelUnavailable(f"the kernel cache {path} is writable by other users")
    return path


def library_path(cxx: list[str] | None = None) -> Path:
    """Where the kernel built from this source with this compiler and flags is cached."""
    key = " ".join((*(cxx or _compiler()), *CXX_FLAGS, sys.platform, platform.machine()))
    digest = hashlib.sha256(SOURCE.read_bytes() + key.encode()).hexdigest()[:16]
    return cache_dir() / "kernels" / f"dwconv_silu-{digest}.so"


def _build(cxx: list[str], lib: Path) -> None:
    # Built under a temporary name and renamed: a concurrent build or a crash never leaves a
    # half-written library under the final name.
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
    os.close(fd)
    try:
        done = subprocess.run(
            [*cxx, *CXX_FLAGS, "-o", tmp, str(SOURCE)],
            capture_output=True,
            text=True,
            timeout=BUILD_TIMEOUT_S,
        )
        if done.returncode != 0:
            last = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["no output"]
            raise KernelUnavailable(f"the build failed: {last[0]}")
        os.replace(tmp, lib)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _load(lib: Path):
    fn = getattr(ctypes.CDLL(str(lib)), SYMBOL)
    ptr, i32 = ctypes.c_void_p, ctypes.c_int
    fn.restype = i32
    fn.argtypes = [ptr, i32, i32, i32, i32, ptr, ptr, i32, i32, i32, i32, i32, i32, i32]
    fn.argtypes += [ptr, ptr, ptr, ptr]
    return fn


def _resolve():
    """(kernel function or None, status line)."""
    if os.environ.get(DISABLE_ENV, "1") == "0":
        return None, f"off ({DISABLE_ENV}=0)"
    try:
        problem = _cpu_problem()
        if problem:
            return None, f"off ({problem})"
        cxx = _compiler()
        lib = library_path(cxx)
        _private_dir(lib.parent)
        if lib.exists():
            try:
                return _load(lib), f"on ({lib})"
            except (OSError, AttributeError):  # truncated or foreign file: build it again
                lib.unlink()
        _build(cxx, lib)
        return _load(lib), f"on ({lib})"
    except KernelUnavailable as exc:
        return None, f"off ({exc})"
    except Exception as exc:  # anything else (disk, permissions, timeouts): fall back, say why
        return None, f"off ({type(exc).__name__}: {exc})"


def _kernel():
    with _LOCK:
        if "status" not in _STATE:
            _STATE["fn"], _STATE["status"] = _resolve()
        return _STATE["fn"]


def available() -> bool:
    """Whether the fused kernel can run here (builds it on the first call)."""
    return _kernel() is not None


def status() -> str:
    """One line: ``on (path)`` or ``off (reason)``."""
    _kernel()
    with _LOCK:
        return str(_STATE["status"])


def reset() -> None:
    """Forget the resolved state, so the next call re-checks the environment (for tests)."""
    with _LOCK:
        _STATE.clear()


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
