"""Fast FLAC decoding for the archive reader (compiled ``flac_decode.cpp``, used when it builds).

FLAC decoding bounds a GPU ingest, and libsndfile spends much of it in its own per-sample copy
loop around libFLAC (``benchmarks/RESULTS.md``, "Decoding FLAC"). This decoder covers
native FLAC streams with 8/16/24-bit samples and 1-8 channels, and returns float32 identical to
libsndfile's (sample / 2^(bits-1); checked bit for bit in the tests). It checks what libFLAC checks
(CRCs, frame order from frame 0 on, sample range, a stream ending before its STREAMINFO length) and
stops at the first frame it does not cover or finds damaged; :mod:`embedder.decode` uses it for
whole-file reads and then lets libsndfile read that file from the start, dropping the samples
already delivered, so a file libsndfile reads whole decodes to libsndfile's samples (a fuzz test
checks that both agree). Where libsndfile fails too, the file is damaged: :meth:`FlacReader.resync`
finds the next frame that decodes, and the frames lost in between become silence (as libFLAC
fills gaps), so a recorder's file cut short or with a bad sector keeps what still decodes.

Built by :mod:`embedder.native`; ``CHORUS_FAST_FLAC=0``, ``CHORUS_CPU_KERNELS=0`` or a missing
compiler leave FLAC to libsndfile.
"""

from __future__ import annotations

import ctypes
import os
import platform
from pathlib import Path

import numpy as np

from embedder.native import NativeLibrary, cpu_flags

ERROR_BYTES = 160  # the decoder's error message buffer


class FlacError(Exception):
    """The fast decoder cannot go on with this stream (the caller falls back to libsndfile)."""


def _flags() -> tuple[str, ...]:
    # BMI2 shifts and LZCNT speed up decoding, carry-less multiplies the frame CRC; only
    # where the CPU has them, and the flags are part of the cache key, so a
    # shared home directory stays safe.
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return ()
    flags = cpu_flags()
    return (("-mbmi2", "-mlzcnt") if {"bmi2", "abm"} <= flags else ()) + (
        ("-mpclmul", "-mssse3") if {"pclmulqdq", "ssse3"} <= flags else ()
    )


def _bind(lib: ctypes.CDLL) -> ctypes.CDLL:
    ptr = ctypes.c_void_p
    lib.chorus_flac_open.restype = ptr
    lib.chorus_flac_open.argtypes = [ctypes.c_char_p, ptr, ctypes.c_char_p, ctypes.c_int]
    lib.chorus_flac_read.restype = ctypes.c_int64
    lib.chorus_flac_read.argtypes = [ptr, ptr, ctypes.c_int64]
    lib.chorus_flac_resync.restype = ctypes.c_int64
    lib.chorus_flac_resync.argtypes = [ptr]
    lib.chorus_flac_error.restype = ctypes.c_char_p
    lib.chorus_flac_error.argtypes = [ptr]
    lib.chorus_flac_close.restype = None
    lib.chorus_flac_close.argtypes = [ptr]
    return lib


SWITCH_ENV = "CHORUS_FAST_FLAC"  # "0": libsndfile decodes FLAC (as does CHORUS_CPU_KERNELS=0)

LIBRARY = NativeLibrary(
    "flac_decode",
    Path(__file__).with_name("flac_decode.cpp"),
    flags=_flags,
    bind=_bind,
    switch=SWITCH_ENV,
)


def available() -> bool:
    """Whether the fast decoder can run here (builds it on the first call)."""
    return LIBRARY.available()


def status() -> str:
    """One line: ``on (path)`` or ``off (reason)``."""
    return LIBRARY.status()


class FlacReader:
    """A native FLAC file opened for sequential reading.

    Parameters
    ----------
    path : str or PathLike

    Raises
    ------
    FlacError
        The decoder is unavailable, or the file is not a stream it covers (not native FLAC, 12- or
        20-bit samples, ...): read it with libsndfile instead.

    Attributes
    ----------
    samplerate, channels, bits : int
    frames : int
        Samples per channel from the stream header; 0 when the header leaves it unknown.
    position : int
        Frames returned so far.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self._handle = None
        lib = LIBRARY.get()
        if lib is None:
            raise FlacError(f"the fast FLAC decoder is {status()}")
        self._lib = lib
        info = np.zeros(4, np.int64)
        err = ctypes.create_string_buffer(ERROR_BYTES)
        self._handle = lib.chorus_flac_open(os.fsencode(path), info.ctypes.data, err, ERROR_BYTES)
        if not self._handle:
            raise FlacError(err.value.decode(errors="replace"))
        self.samplerate, self.channels, self.bits, self.frames = (int(v) for v in info)
        self.position = 0

    def read(self, n: int) -> np.ndarray:
        """Up to ``n`` frames as float32 ``(m, channels)``; ``m == 0`` at the end of the stream.

        Raises
        ------
        FlacError
            The stream cannot be decoded from :attr:`position` on (message says why).
        """
        if not self._handle:
            raise ValueError("read from a closed FlacReader")
        buf = np.empty((n, self.channels), np.float32)  # (n, C)
        got = self._lib.chorus_flac_read(self._handle, buf.ctypes.data, n)
        if got < 0:
            reason = self._lib.chorus_flac_error(self._handle).decode(errors="replace")
            raise FlacError(f"{reason} at frame {self.position}")
        self.position += got
        return buf[:got]

    def resync(self) -> int | None:
        """After a :class:`FlacError` from :meth:`read`: move on to the next frame that decodes.

        Returns
        -------
        int or None
            Frames lost to the damage (:attr:`position` moves past them; the caller fills them
            with silence, as libFLAC does), or None when nothing after the damage decodes (a
            truncated file): the stream ends there.
        """
        if not self._handle:
            raise ValueError("resync of a closed FlacReader")
        lost = int(self._lib.chorus_flac_resync(self._handle))
        if lost < 0:
            return None
        self.position += lost
        return lost

    def close(self) -> None:
        if self._handle:
            self._lib.chorus_flac_close(self._handle)
            self._handle = None

    def __enter__(self) -> FlacReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()
