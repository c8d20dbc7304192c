"""Optional compiled helpers: C++ sources beside this package, built on first use and cached.

Each :class:`NativeLibrary` is compiled the first time it is asked for, with the system's C++
compiler (``$CXX``, else ``c++`` / ``g++`` / ``clang++``), into a per-user cache, and loaded with
:mod:`ctypes`. Where there is no compiler, the CPU cannot run it, the build fails or
``CHORUS_CPU_KERNELS=0`` is set, :meth:`NativeLibrary.get` returns None, :meth:`~NativeLibrary.status`
says why, and callers keep their pure-Python/library path. Nothing compiled is needed for
correctness. ``python -m embedder.native`` builds them all and prints where each stands (exit
status 0 when those this CPU uses are on).
"""

from __future__ import annotations

import ctypes
import functools
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
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

COMPILERS = ("c++", "g++", "clang++")
BASE_FLAGS = ("-O3", "-std=c++17", "-shared", "-fPIC")
DISABLE_ENV = "CHORUS_CPU_KERNELS"  # "0" turns every compiled helper off
CACHE_ENV = "CHORUS_CACHE_DIR"  # where built libraries are kept (default: the user cache folder)
BUILD_TIMEOUT_S = 120

_LOCK = threading.Lock()
LIBRARIES: dict[str, NativeLibrary] = {}  # by name, as defined by the modules that use them


class KernelUnavailable(RuntimeError):
    """A compiled helper cannot be built or loaded here (the message says why)."""


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


@functools.cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux reports them (empty elsewhere); read once per process."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def compiler() -> list[str]:
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


def private_dir(path: Path) -> Path:
    """Create ``path`` for this user only, and refuse one that another user owns: a library
    loaded from a folder others can write to would run their code."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    if hasattr(os, "getuid"):
        st = path.stat()
        if st.st_uid != os.getuid() or st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise KernelUnavailable(f"the kernel cache {path} is writable by other users")
    return path


@dataclass
class NativeLibrary:
    """One C++ source file of this package, compiled into a shared library on first use.

    Parameters
    ----------
    name : str
        Also the cached file's prefix.
    source : Path
    flags : callable
        Extra compiler flags for this CPU. They, the compiler command and the CPU's feature flags
        make the cache key, so machines sharing a home directory each get a build they can run.
    problem : callable
        Why this CPU cannot run it, or None.
    bind : callable
        Takes the loaded :class:`ctypes.CDLL`, declares argument types and returns the handle
        that :meth:`get` hands out.
    switch : str, optional
        An environment variable that turns this library alone off when set to ``0``.
    """

    name: str
    source: Path
    flags: Callable[[], tuple[str, ...]] = tuple
    problem: Callable[[], str | None] = lambda: None
    bind: Callable[[ctypes.CDLL], object] = lambda lib: lib
    switch: str | None = None
    _state: dict = field(default_factory=dict, repr=False)  # "handle", "status" once resolved

    def __post_init__(self) -> None:
        LIBRARIES[self.name] = self

    def library_path(self, cxx: list[str] | None = None) -> Path:
        """Where the build from this source with this compiler and these flags is cached."""
        flags = (*BASE_FLAGS, *self.flags())
        # the CPU's features too: `$CXX` may say -march=native, and a home folder may be shared
        cpu = " ".join(sorted(cpu_flags()))
        key = " ".join((*(cxx or compiler()), *flags, sys.platform, platform.machine(), cpu))
        digest = hashlib.sha256(self.source.read_bytes() + key.encode()).hexdigest()[:16]
        return cache_dir() / "kernels" / f"{self.name}-{digest}.so"

    def _build(self, cxx: list[str], lib: Path) -> None:
        # Built under a temporary name and renamed: a concurrent build or a crash never leaves a
        # half-written library under the final name.
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=lib.parent)
        os.close(fd)
        try:
            done = subprocess.run(
                [*cxx, *BASE_FLAGS, *self.flags(), "-o", tmp, str(self.source)],
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

    def _resolve(self) -> tuple[object | None, str]:
        for env in (DISABLE_ENV, self.switch):
            if env and os.environ.get(env, "1") == "0":
                return None, f"off ({env}=0)"
        try:
            problem = self.problem()
            if problem:
                return None, f"off ({problem})"
            cxx = compiler()
            lib = self.library_path(cxx)
            private_dir(lib.parent)
            if lib.exists():
                try:
                    return self.bind(ctypes.CDLL(str(lib))), f"on ({lib})"
                except (OSError, AttributeError):  # truncated or foreign file: build it again
                    lib.unlink()
            self._build(cxx, lib)
            return self.bind(ctypes.CDLL(str(lib))), f"on ({lib})"
        except KernelUnavailable as exc:
            return None, f"off ({exc})"
        except Exception as exc:  # anything else (disk, permissions, timeouts): fall back, say why
            return None, f"off ({type(exc).__name__}: {exc})"

    def get(self):
        """The bound library, or None where it cannot run (builds it on the first call)."""
        with _LOCK:
            if "status" not in self._state:
                self._state["handle"], self._state["status"] = self._resolve()
            return self._state["handle"]

    def available(self) -> bool:
        return self.get() is not None

    def status(self) -> str:
        """One line: ``on (path)`` or ``off (reason)``."""
        self.get()
        return str(self._state["status"])

    def reset(self) -> None:
        """Forget the resolved state, so the next call re-checks the environment (for tests)."""
        with _LOCK:
            self._state.clear()


if __name__ == "__main__":  # python -m embedder.native: build everything now, say where
    from embedder import flac  # each module defines its libraries on import
    from embedder.native import LIBRARIES as defined  # this file runs as __main__, not as that

    for lib in defined.values():
        print(f"{lib.name}: {lib.status()}")
    sys.exit(0 if flac.available() else 1)
