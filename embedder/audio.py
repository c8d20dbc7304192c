"""Decoding, resampling and windowing of field recordings.

Files are decoded by *content*, never by extension: archives hold MP3 data named ``.wav`` and WAV data
named ``.mp3``. libsndfile 1.2.2 sniffs most containers when opened by path, but for an unrecognised
``.mp3`` it falls back on the extension and reports a misleading "File does not exist" error, so every
file is opened through a Python file object (libsndfile then sees no name and can only sniff). Our own
magic-byte sniffing only serves to explain failures.

Long recordings are streamed: blocks of ``BLOCK_S`` seconds are decoded, checked for NaN/inf, mixed to
the channel policy and resampled with a streaming soxr resampler (bit-identical to a one-shot
resample, so block boundaries leave no trace). Windows start at ``k * hop``; a window is kept when it
lies fully inside the file, then one zero-padded tail window is added when at least ``min_tail_s`` of
not-yet-covered audio remains. A file shorter than one window gives one padded window.
"""

from __future__ import annotations

import io
import math
import mmap
import os
import struct
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr
from soundfile import _ffi, _snd  # cffi handle: reads without SoundFile.read's re-seek

from embedder import flac

BLOCK_S = 60.0  # s of native-rate audio decoded per block (~11 MB per channel at 48 kHz)
MIN_TAIL_S = 1.0  # s: shortest uncovered tail that still gets its own zero-padded window
BATCH_WINDOWS = 64  # windows per WindowBatch (64 x 5 s x 32 kHz float32 = 41 MB)
CHANNEL_POLICIES = ("mix", "first", "all")
RESAMPLE_QUALITY = "HQ"  # soxr quality preset
LOAD_CONTEXT_S = 0.05  # s read beyond each end of a span; soxr HQ edge transients last < 10 ms
SNIFF_BYTES = 64  # bytes read to recognise a container
ESTIMATED_LENGTH = ("MP3",)  # containers whose header frame count may be a guess
UNKNOWN_FRAMES = 2**62  # a frame count at least this large is libsndfile's "unknown" (SF_COUNT_MAX)
INEXACT_SEEK = ("MP3",)  # libsndfile seeks land on wrong samples here: decode and drop instead
_OPEN_ERRORS = (sf.SoundFileError, RuntimeError, ValueError, TypeError, OSError)


class AudioError(Exception):
    """A file cannot be used as audio: missing, empty, undecodable, or with NaN/inf samples."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file contains, as decoded by content (``container`` may disagree with the extension)."""

    path: str
    container: str  # libsndfile major format: "WAV", "FLAC", "OGG", "MP3", "AIFF", "RF64", ...
    subtype: str  # e.g. "PCM_16", "FLOAT", "VORBIS", "MPEG_LAYER_III"
    sample_rate: int  # Hz
    channels: int
    frames: int  # samples per channel at sample_rate
    duration_s: float


@dataclass
class WindowBatch:
    """Consecutive windows of one channel of one file.

    ``channel`` is -1 for a mix, else the channel index; ``start_s`` and ``end_s`` are ``(W,)`` float64
    seconds from the file start (``end_s = min(start_s + window_s, duration)``); ``audio`` is float32
    ``(W, window_samples)`` with zero padding after the end of the file.
    """

    channel: int
    start_s: np.ndarray
    end_s: np.ndarray
    audio: np.ndarray

    def __len__(self) -> int:
        return len(self.start_s)


# ----------------------------------------------------------------------------------------- opening


def _sniff(fh) -> str | None:
    """Container named by the magic bytes at the start of ``fh`` (an ID3v2 tag is skipped)."""
    head = fh.read(SNIFF_BYTES)
    if head[:3] == b"ID3" and len(head) >= 10:
        # ID3v2: 10-byte header, syncsafe size (7 bits per byte), optional 10-byte footer
        size = sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(head[6:10]))
        fh.seek(10 + size + (10 if head[5] & 0x10 else 0))
        return _sniff_head(fh.read(SNIFF_BYTES)) or "MP3"
    return _sniff_head(head)


def _sniff_head(head: bytes) -> str | None:
    tag, kind = head[:4], head[8:12]
    if tag in (b"RIFF", b"RIFX") and kind == b"WAVE":
        return "WAV"
    if tag in (b"RF64", b"BW64") and kind == b"WAVE":
        return "RF64"
    if tag == b"riff" and head[24:28] == b"wave":
        return "W64"
    if tag == b"FORM" and kind in (b"AIFF", b"AIFC"):
        return "AIFF"
    simple = {b"fLaC": "FLAC", b"OggS": "OGG", b"caff": "CAF", b".snd": "AU"}
    if tag in simple:
        return simple[tag]
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # MPEG audio frame sync
        return "MP3"
    return None


def _open_error(path: Path, head: bytes, sniffed: str | None, err: Exception) -> AudioError:
    reason = getattr(err, "error_string", None) or str(err)
    if "does not exist" in reason:  # what libsndfile says when mpg123 finds no valid frame
        reason = "no decodable frames"
    if sniffed is None:
        return AudioError(
            f"{path}: not a recognised audio format (first bytes {head[:8].hex(' ')}; {reason})"
        )
    return AudioError(f"{path}: corrupt or truncated {sniffed} data ({reason})")


@contextmanager
def _open(path: str | os.PathLike) -> Iterator[sf.SoundFile]:
    """Open ``path`` for reading by content; every failure becomes an :class:`AudioError`."""
    p = Path(path)
    try:
        fh = open(p, "rb")
    except OSError as err:
        raise AudioError(f"{p}: cannot open ({err.strerror or err})") from None
    with fh:
        if os.fstat(fh.fileno()).st_size == 0:
            raise AudioError(f"{p}: empty file (0 bytes)")
        head = fh.read(SNIFF_BYTES)
        fh.seek(0)
        sniffed = _sniff(fh)
        fh.seek(0)
        try:
            snd = sf.SoundFile(fh)  # a file object: libsndfile sniffs content, ignores the name
        except _OPEN_ERRORS as err:
            raise _open_error(p, head, sniffed, err) from None
        with snd:
            if snd.samplerate <= 0 or snd.channels <= 0:
                raise AudioError(f"{p}: invalid header ({snd.samplerate} Hz, {snd.channels} ch)")
            yield snd


def probe(path: str | os.PathLike, exact: bool = False) -> AudioInfo:
    """Describe an audio file, by default without decoding it.

    Parameters
    ----------
    path : str or PathLike
    exact : bool
        Count the frames of formats whose header length is only an estimate (MP3 without a Xing/Info
        header: libsndfile guesses from the file size, up to ~1-2 % long when tags or cover art are
        embedded) by decoding them. Other formats are never decoded.

    Returns
    -------
    AudioInfo
        Container and subtype as found in the content; ``frames`` at the native ``sample_rate``.

    Raises
    ------
    AudioError
        Missing, empty or unrecognised file (with ``exact``, also undecodable or NaN/inf samples).
    """
    with _open(path) as snd:
        frames = int(snd.frames)
        # libsndfile says SF_COUNT_MAX for a stream whose header leaves the length unknown (FLAC
        # written to a pipe): count those by decoding, whatever ``exact`` says
        unknown = frames >= UNKNOWN_FRAMES
        if unknown or (exact and snd.format in ESTIMATED_LENGTH):
            block = int(round(BLOCK_S * snd.samplerate))
            frames = sum(len(x) for x in _native_blocks(snd, path, block))
        return AudioInfo(
            path=str(path),
            container=snd.format,
            subtype=snd.subtype,
            sample_rate=int(snd.samplerate),
            channels=int(snd.channels),
            frames=frames,
            duration_s=frames / snd.samplerate,
        )


# ---------------------------------------------------------------------------------------- decoding


def _check_policy(channels: str) -> None:
    if channels not in CHANNEL_POLICIES:
        raise ValueError(f"channels must be one of {CHANNEL_POLICIES}, got {channels!r}")


def _check_rate(sample_rate: int) -> None:
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer (Hz), got {sample_rate!r}")


def _apply_policy(x: np.ndarray, channels: str) -> np.ndarray:
    """``(n, C)`` native frames -> ``(n, C')`` with C' = 1 for mix/first."""
    if channels == "mix":
        return x.mean(axis=1, keepdims=True, dtype=np.float32) if x.shape[1] > 1 else x
    if channels == "first":
        return np.ascontiguousarray(x[:, :1])
    return x


def _read(snd: sf.SoundFile, n: int) -> np.ndarray:
    """Up to ``n`` frames as float32 ``(m, C)``, straight from libsndfile.

    ``SoundFile.read`` seeks to the new position after every read; on MP3 that seek (mpg123_seek)
    garbles or zeroes what follows in some files, so reads bypass it through soundfile's cffi handle.
    """
    buf = np.empty((n, snd.channels), np.float32)  # (n, C)
    got = _snd.sf_readf_float(snd._file, _ffi.cast("float *", buf.ctypes.data), n)
    err = _snd.sf_error(snd._file)
    if err:
        raise sf.LibsndfileError(err)
    return buf[:got]


def _native_blocks(
    snd: sf.SoundFile,
    path: str | os.PathLike,
    block: int,
    start: int = 0,
    limit: int | None = None,
) -> Iterator[np.ndarray]:
    """float32 ``(n, C)`` blocks of native frames ``[start, start + limit)``.

    Whole FLAC files go through the fast decoder of :mod:`embedder.flac` (same numbers); if it stops
    short, libsndfile decodes the file from the start and drops what was delivered already (a seek
    into a damaged stream may land elsewhere than reading on would). Seeks to ``start`` where that
    is exact, else decodes and drops. Raises on NaN/inf as soon as they are met. An MP3 cut short by
    libsndfile's length guess is continued (see _mp3_resume).
    """
    end = math.inf if limit is None else start + limit
    resumed = 0  # frames the fast decoder delivered before stopping short
    if start == 0 and snd.format == "FLAC":
        start = resumed = yield from _fast_flac_blocks(snd, path, block, end)
        if start >= end:
            return
    pos = local = 0  # next native frame index: in the file, in the current decoder
    stalled_at = -1  # where the last MP3 continuation started
    exact_seek = snd.format not in INEXACT_SEEK and not resumed
    if start and snd.seekable() and exact_seek and start <= snd.frames:
        try:
            snd.seek(start)
        except _OPEN_ERRORS as err:
            at = start / snd.samplerate
            raise AudioError(f"{path}: decoding failed near {at:.2f} s ({err})") from err
        pos = start
    sr = snd.samplerate
    with ExitStack() as stack:
        while pos < end:
            try:
                x = _read(snd, int(min(block, end - pos)))  # (n, C)
            except _OPEN_ERRORS as err:
                raise AudioError(f"{path}: decoding failed near {pos / sr:.2f} s ({err})") from err
            if len(x) == 0:
                if pos == stalled_at:  # a resumed decoder gave nothing: never loop, never cut
                    raise AudioError(f"{path}: MP3 decoding stalled at {pos / sr:.2f} s")
                resumed_at, stalled_at = _mp3_resume(snd, local, path, pos, stack), pos
                if resumed_at is None:
                    return
                snd, local = resumed_at  # its own length guess counts the pre-roll it dropped
                continue
            first, pos, local = pos, pos + len(x), local + len(x)
            if pos <= start:
                continue
            x = x[max(0, start - first) :]
            finite = np.isfinite(x).all(axis=1)  # (n,)
            if not finite.all():
                at = (max(first, start) + int(np.argmin(finite))) / sr
                raise AudioError(f"{path}: non-finite sample (NaN or inf) at {at:.3f} s")
            yield x


def _fast_flac_blocks(snd: sf.SoundFile, path: str | os.PathLike, block: int, end: float):
    """Blocks from the fast decoder (integer samples: always finite). Returns the frames delivered,
    ``end`` or more when done (inf at the end of the stream), fewer where libsndfile must go on."""
    try:
        reader = flac.FlacReader(path)
    except flac.FlacError:
        return 0  # not covered here (or not built): libsndfile reads the whole file
    with reader:
        if (reader.samplerate, reader.channels) != (snd.samplerate, snd.channels):
            return 0
        while reader.position < end:
            try:
                x = reader.read(int(min(block, end - reader.position)))  # (n, C)
            except flac.FlacError:
                return reader.position  # damage, or a frame it does not cover
            if len(x) == 0:
                return math.inf
            yield x
        return reader.position


# ----------------------------------------------------------------------------- MP3 continuation
# libsndfile reports mpg123's length *guess* (file size / first frame size) for MP3s without a
# Xing/Info/VBRI header and never reads past it, so a VBR file whose first frames are large is cut
# short silently. When a decoder stops at that guess, decoding goes on with a decoder that reads the
# stream behind a synthesized Xing header holding the frame count we walked (see _mp3_resume).

MP3_XING_BITRATE_INDEX = 9  # synthesized frame: 128 kbit/s (MPEG-1), 80 (MPEG-2): room for the tag
MP3_XING_SLACK_FRAMES = 16  # added to the frame count in the synthesized header (see _mp3_resume)
_L3_KBPS = {  # Layer III bitrate index -> kbit/s, for MPEG-1 and MPEG-2/2.5
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_L3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _l3_frame(buf, pos: int) -> tuple[int, int] | None:
    """(frame bytes, samples per frame) of a Layer III header at ``pos``, or None."""
    if pos + 4 > len(buf) or buf[pos] != 0xFF or buf[pos + 1] & 0xE0 != 0xE0:
        return None
    version, layer = (buf[pos + 1] >> 3) & 3, (buf[pos + 1] >> 1) & 3
    rate_i, kbps_i, pad = (buf[pos + 2] >> 2) & 3, buf[pos + 2] >> 4, (buf[pos + 2] >> 1) & 1
    if version == 1 or layer != 1 or rate_i == 3 or kbps_i in (0, 15):
        return None
    mpeg1 = version == 3
    kbps = _L3_KBPS[1 if mpeg1 else 2][kbps_i]
    size = (144000 if mpeg1 else 72000) * kbps // _L3_RATES[version][rate_i] + pad
    return size, 1152 if mpeg1 else 576


def _mp3_frames(path: str | os.PathLike) -> tuple[list[int], int]:
    """Byte offsets of the frames of a Layer III stream, and its samples per frame.

    Empty when the stream starts with a Xing/Info/VBRI header (its length is then exact).
    """
    with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        pos = 0
        if buf[:3] == b"ID3" and len(buf) >= 10:
            pos = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(buf[6:10]))
        offsets, spf = [], 0
        while pos < len(buf):
            frame = _l3_frame(buf, pos)
            # a frame counts when the next one follows it (or the file ends): resyncs past junk/tags
            if frame and (pos + frame[0] >= len(buf) or _l3_frame(buf, pos + frame[0])):
                body = buf[pos : pos + frame[0]]
                if not offsets and (b"Xing" in body or b"Info" in body or body[36:40] == b"VBRI"):
                    return [], 0
                offsets.append(pos)
                spf = frame[1]
                pos += frame[0]
            else:
                pos += 1
    return offsets, spf


def _mp3_resume(
    snd: sf.SoundFile, done: int, path: str | os.PathLike, pos: int, stack: ExitStack
) -> tuple[sf.SoundFile, int] | None:
    """A decoder at native frame ``pos`` when ``snd`` stopped at its length guess after ``done``
    frames, and the frames it has read already; None at a real end of stream.

    The new decoder reads the stream from its start again, behind a synthesized Xing header that
    gives the exact frame count, so it has no guess to stop at; mpg123 then drops its decoder
    delay at the start, which the skip accounts for (its samples are the same, shifted).
    """
    if snd.format != "MP3" or done < snd.frames:
        return None  # a real end of stream
    offsets, spf = _mp3_frames(path)
    if not spf or pos // spf >= len(offsets):
        return None
    # an upper bound, not the walked count: the walk misses a frame before a trailing tag or junk,
    # and the decoder stops at the real end of the data anyway (a count too high costs nothing)
    count = 2 * len(offsets) + MP3_XING_SLACK_FRAMES
    try:
        xing = _XingStream(path, offsets[0], count)
        sub = stack.enter_context(sf.SoundFile(stack.enter_context(xing)))
    except _OPEN_ERRORS as err:  # frames remain: never end here as if the stream had
        raise AudioError(f"{path}: MP3 decoding stalled at {pos / snd.samplerate:.2f} s") from err
    skip = pos - (count * spf - sub.frames)  # minus the delay dropped at the start
    if skip < 0 or len(_read(sub, skip)) < skip:
        raise AudioError(f"{path}: MP3 decoding stalled at {pos / snd.samplerate:.2f} s")
    return sub, skip


class _XingStream(io.RawIOBase):
    """An MP3 stream from byte ``offset`` (its first frame) on, behind one synthesized frame
    holding a Xing header with the stream's frame count."""

    def __init__(self, path: str | os.PathLike, offset: int, n_frames: int) -> None:
        self.fh = open(path, "rb")  # noqa: SIM115 -- closed in close()
        self.fh.seek(offset)
        head = bytearray(self.fh.read(4))
        head[1] |= 0x01  # no CRC
        head[2] = (head[2] & 0x0D) | (MP3_XING_BITRATE_INDEX << 4)  # room for the tag, no padding
        version, mono = (head[1] >> 3) & 3, head[3] >> 6 == 3
        side = (17 if mono else 32) if version == 3 else (9 if mono else 17)  # side-info bytes
        size = _l3_frame(bytes(head) + bytes(8), 0)[0]
        tag = bytes(side) + b"Xing" + struct.pack(">II", 1, n_frames)  # flags: frame count only
        self.prefix = bytes(head) + tag + bytes(size - 4 - len(tag))
        self.offset = offset
        self.size = len(self.prefix) + os.fstat(self.fh.fileno()).st_size - offset
        self.at = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.at

    def seek(self, pos: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.at, io.SEEK_END: self.size}[whence]
        self.at = max(0, base + pos)
        return self.at

    def readinto(self, buf) -> int:
        view, n = memoryview(buf), 0
        if self.at < len(self.prefix):
            head = self.prefix[self.at : self.at + len(view)]
            view[: len(head)] = head
            n = len(head)
        if n < len(view):
            self.fh.seek(self.offset + self.at + n - len(self.prefix))
            n += self.fh.readinto(view[n:]) or 0
        self.at += n
        return n

    def close(self) -> None:
        self.fh.close()
        super().close()


class _Resampler:
    """Streaming soxr resampler over ``(n, C)`` float32 blocks; identity when rates match."""

    def __init__(self, in_rate: int, out_rate: int, n_channels: int) -> None:
        self.same = in_rate == out_rate
        self.n_channels = n_channels
        if not self.same:
            self.stream = soxr.ResampleStream(
                in_rate, out_rate, n_channels, dtype="float32", quality=RESAMPLE_QUALITY
            )

    def push(self, x: np.ndarray, last: bool = False) -> np.ndarray:
        if self.same:
            return x
        return self.stream.resample_chunk(np.ascontiguousarray(x, dtype=np.float32), last=last)

    def flush(self) -> np.ndarray:
        return self.push(np.zeros((0, self.n_channels), np.float32), last=True)


def read_blocks(
    path: str | os.PathLike, sample_rate: int, channels: str = "mix", block_s: float = BLOCK_S
) -> Iterator[np.ndarray]:
    """Decode a file block by block, resampled to ``sample_rate``.

    Parameters
    ----------
    path : str or PathLike
    sample_rate : int
        Output rate (Hz).
    channels : {"mix", "first", "all"}
        Mean of the channels, the first one, or all of them.
    block_s : float
        Seconds of native audio decoded per block.

    Yields
    ------
    np.ndarray
        float32 ``(C, n)`` with C = 1 for mix/first and the file's channel count for all. Concatenated
        along axis 1 the blocks equal a one-shot soxr resample of the whole file.

    Raises
    ------
    AudioError
        Undecodable file, NaN/inf samples (raised when reached) or no samples at all.
    """
    _check_policy(channels)
    _check_rate(sample_rate)
    if block_s <= 0:
        raise ValueError(f"block_s must be > 0, got {block_s}")
    with _open(path) as snd:
        n_out = snd.channels if channels == "all" else 1
        rs = _Resampler(snd.samplerate, int(sample_rate), n_out)
        block = max(1, int(round(block_s * snd.samplerate)))
        total = 0
        for x in _native_blocks(snd, path, block):
            y = rs.push(_apply_policy(x, channels))  # (m, C)
            if len(y):
                total += len(y)
                yield np.ascontiguousarray(y.T)  # (C, m)
        y = rs.flush()
        if len(y):
            total += len(y)
            yield np.ascontiguousarray(y.T)  # (C, m)
    if total == 0:
        raise AudioError(f"{path}: no audio samples")


def load(
    path: str | os.PathLike,
    sample_rate: int,
    channels: str = "mix",
    start_s: float = 0.0,
    end_s: float | None = None,
) -> np.ndarray:
    """Read a span of a file, seeking to it rather than decoding from the start.

    MP3 is the exception: libsndfile's MP3 seeks can land on wrong samples, so the file is decoded
    from the start up to the span (about 1 s of CPU per 3 min of audio).

    Parameters
    ----------
    path : str or PathLike
    sample_rate : int
        Output rate (Hz).
    channels : {"mix", "first", "all"}
    start_s, end_s : float
        Span in seconds from the file start; ``end_s=None`` (or past the end) reads to the end.

    Returns
    -------
    np.ndarray
        float32 ``(C, n)``, equal (to float rounding) to samples ``round(start_s * sample_rate)`` to
        ``round(end_s * sample_rate)`` of the whole file decoded with :func:`read_blocks`.

    Raises
    ------
    AudioError
        Undecodable file, NaN/inf in the span, or a span starting after the end of the file.
    ValueError
        Negative or empty span, bad policy or rate.
    """
    _check_policy(channels)
    _check_rate(sample_rate)
    sample_rate = int(sample_rate)
    if start_s < 0 or (end_s is not None and end_s <= start_s):
        raise ValueError(f"bad span {start_s}-{end_s} s: need 0 <= start < end")
    with _open(path) as snd:
        sr_in = int(snd.samplerate)
        # an MP3 header's length is a guess: read until the data ends, check the span afterwards
        frames = math.inf if snd.format in ESTIMATED_LENGTH else int(snd.frames)
        if start_s >= frames / sr_in:
            raise AudioError(
                f"{path}: span starts at {start_s} s, after the end ({frames / sr_in:.3f} s)"
            )
        i0 = round(start_s * sample_rate)
        i1 = math.inf if end_s is None else round(end_s * sample_rate)
        # Start on an input sample that falls exactly on the output grid (multiple of step_in), with
        # context before the span, so the output samples line up with a whole-file decode.
        g = math.gcd(sr_in, sample_rate)
        step_in, step_out = sr_in // g, sample_rate // g
        ctx = 0 if sr_in == sample_rate else math.ceil(LOAD_CONTEXT_S * sr_in)
        a = max(0, math.floor((i0 * sr_in / sample_rate - ctx) / step_in)) * step_in  # native
        b = min(frames, i1 * sr_in / sample_rate)  # native, exclusive (may be inf)
        b = b if math.isinf(b) else math.ceil(b) + ctx
        n_out = snd.channels if channels == "all" else 1
        rs = _Resampler(sr_in, sample_rate, n_out)
        block = int(round(BLOCK_S * sr_in))
        limit = None if math.isinf(b) else b - a
        blocks = _native_blocks(snd, path, block, start=a, limit=limit)
        parts = [rs.push(_apply_policy(x, channels)) for x in blocks]
        parts.append(rs.flush())
    y = np.concatenate(parts, axis=0)  # (m, C) starting at output sample a * step_out / step_in
    off = a // step_in * step_out
    if i0 - off >= len(y):  # an MP3 header may promise more frames than there are
        end = (off + len(y)) / sample_rate
        raise AudioError(f"{path}: span starts at {start_s} s, after the end ({end:.3f} s)")
    stop = None if math.isinf(i1) else i1 - off
    return np.ascontiguousarray(y[i0 - off : stop].T, dtype=np.float32)  # (C, n)


# --------------------------------------------------------------------------------------- windowing


@dataclass(frozen=True)
class _Grid:
    """Window geometry in samples: start of window k is ``round(k * hop)``."""

    win: int  # samples per window
    hop: float  # samples between starts (fractional hops do not drift)
    min_tail: int  # samples of uncovered audio needed for a padded tail window

    @classmethod
    def make(cls, sample_rate: int, window_s: float, hop_s: float, min_tail_s: float) -> _Grid:
        _check_rate(sample_rate)
        if window_s <= 0 or hop_s <= 0 or min_tail_s < 0:
            raise ValueError(
                f"need window_s > 0, hop_s > 0, min_tail_s >= 0; got "
                f"{window_s}, {hop_s}, {min_tail_s}"
            )
        win = int(round(window_s * sample_rate))
        if win < 1 or hop_s * sample_rate < 1:
            raise ValueError(
                f"window {window_s} s / hop {hop_s} s under one sample at {sample_rate} Hz"
            )
        return cls(win, hop_s * sample_rate, int(round(min_tail_s * sample_rate)))

    def start(self, k: int) -> int:
        return int(math.floor(k * self.hop + 0.5))

    def n_full(self, n: int) -> int:
        """Number of windows lying fully inside ``n`` samples."""
        if n < self.win:
            return 0
        k = int((n - self.win) / self.hop) + 1
        while self.start(k) + self.win <= n:
            k += 1
        while k > 0 and self.start(k - 1) + self.win > n:
            k -= 1
        return k

    def tail(self, n: int, k: int) -> int | None:
        """Start of the padded tail window after ``k`` full windows, or None when there is none."""
        s = self.start(k)
        if n <= 0 or s >= n:
            return None
        if k == 0:
            return s  # shorter than one window: one padded window, whatever its length
        covered = self.start(k - 1) + self.win
        new = n - max(s, covered)
        return s if new > 0 and new >= self.min_tail else None


def count_windows(
    n_samples: int,
    sample_rate: int,
    window_s: float,
    hop_s: float,
    min_tail_s: float = MIN_TAIL_S,
) -> int:
    """Windows that :func:`frame` / :func:`iter_windows` give for ``n_samples`` at ``sample_rate``."""
    grid = _Grid.make(sample_rate, window_s, hop_s, min_tail_s)
    k = grid.n_full(n_samples)
    return k + (grid.tail(n_samples, k) is not None)


def frame(
    x: np.ndarray,
    sample_rate: int,
    window_s: float,
    hop_s: float,
    min_tail_s: float = MIN_TAIL_S,
) -> tuple[np.ndarray, np.ndarray]:
    """Cut a whole mono signal into windows (the in-memory reference for :func:`iter_windows`).

    Parameters
    ----------
    x : np.ndarray
        ``(n,)`` samples at ``sample_rate``.
    sample_rate : int
    window_s, hop_s : float
        Window length and hop (s); hop may be shorter or longer than the window.
    min_tail_s : float
        Shortest uncovered tail (s) that still gets a zero-padded window.

    Returns
    -------
    starts_s : np.ndarray
        ``(W,)`` float64 window starts in seconds.
    windows : np.ndarray
        ``(W, round(window_s * sample_rate))`` float32, zero-padded past the end of ``x``.
    """
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 1:
        raise ValueError(f"frame expects a 1-D signal, got shape {x.shape}")
    grid = _Grid.make(sample_rate, window_s, hop_s, min_tail_s)
    n = len(x)
    k = grid.n_full(n)
    starts = [grid.start(i) for i in range(k)]
    tail = grid.tail(n, k)
    windows = np.zeros((k + (tail is not None), grid.win), np.float32)  # (W, win)
    if k:
        windows[:k] = np.lib.stride_tricks.sliding_window_view(x, grid.win)[starts]
    if tail is not None:
        windows[k, : n - tail] = x[tail:]
        starts.append(tail)
    return np.asarray(starts, np.float64) / sample_rate, windows


def iter_windows(
    path: str | os.PathLike,
    sample_rate: int,
    window_s: float,
    hop_s: float,
    channels: str = "mix",
    min_tail_s: float = MIN_TAIL_S,
    max_windows: int = BATCH_WINDOWS,
    block_s: float = BLOCK_S,
) -> Iterator[WindowBatch]:
    """Stream the windows of a file without holding it whole in memory.

    Windows and times are identical to :func:`frame` applied to the whole decoded channel; overlap
    (hop < window) is carried between decode blocks and gaps (hop > window) are skipped.

    Parameters
    ----------
    path : str or PathLike
    sample_rate : int
        Model rate (Hz) the audio is resampled to.
    window_s, hop_s, min_tail_s : float
        As in :func:`frame`.
    channels : {"mix", "first", "all"}
        Batches carry channel -1 for mix, 0 for first, 0..C-1 for all.
    max_windows : int
        Most windows per batch.
    block_s : float
        Seconds of native audio decoded at a time (memory use is about one block plus one window).

    Yields
    ------
    WindowBatch
        ``audio`` float32 ``(W, win)`` with ``W <= max_windows``, in time order per channel.
    """
    _check_policy(channels)
    grid = _Grid.make(sample_rate, window_s, hop_s, min_tail_s)
    if max_windows < 1:
        raise ValueError(f"max_windows must be >= 1, got {max_windows}")
    adjacent = grid.hop == grid.win  # windows tile the signal: runs of them are views of a block
    labels: list[int] = []  # channel number of each row of a block
    buf = np.zeros((0, 0), np.float32)  # (C, m) samples [off, n) not yet in a window
    off = n = k = 0  # buffer start, samples seen, next window index
    pend = _Pending(max_windows, grid.win)
    for block in read_blocks(path, sample_rate, channels, block_s):  # (C, m)
        if not labels:
            labels = [-1] if channels == "mix" else list(range(block.shape[0]))
            buf = np.zeros((block.shape[0], 0), np.float32)
        b0, n = n, n + block.shape[1]  # the block holds samples [b0, n)
        while grid.start(k) + grid.win <= n:
            s = grid.start(k)
            if s < b0:  # started in earlier blocks (s >= off: the buffer starts at window k)
                x = np.concatenate([buf[:, s - off :], block[:, : s + grid.win - b0]], axis=1)
            elif adjacent:  # a run of windows inside this block
                r = min(max_windows, (n - s) // grid.win)
                yield from pend.flush(labels, n, sample_rate)  # keep time order
                yield from _run(labels, block[:, s - b0 : s - b0 + r * grid.win], s, r, sample_rate)
                k += r
                continue
            else:
                x = block[:, s - b0 : s - b0 + grid.win]
            pend.add(s, x)
            k += 1
            if pend.full():
                yield from pend.flush(labels, n, sample_rate)
        nxt = grid.start(k)  # keep only what the next window needs (it may start past n)
        if nxt >= b0:
            buf, off = block[:, nxt - b0 :], nxt
        else:
            buf, off = np.concatenate([buf[:, nxt - off :], block], axis=1), nxt
    tail = grid.tail(n, k)
    if tail is not None:
        pend.add(tail, buf[:, tail - off :])  # zero-padded
    yield from pend.flush(labels, n, sample_rate)


def _run(labels: list[int], x: np.ndarray, start: int, r: int, sample_rate: int):
    """``r`` adjacent full windows from ``x`` ``(C, r * win)``, as views (no copy)."""
    win = x.shape[1] // r
    starts = start + win * np.arange(r, dtype=np.int64)  # (r,)
    start_s, end_s = starts / sample_rate, (starts + win) / sample_rate
    windows = x.reshape(x.shape[0], r, win)  # (C, r, win), a view
    for c, label in enumerate(labels):
        yield WindowBatch(label, start_s.copy(), end_s.copy(), windows[c])  # (r, win)


class _Pending:
    """Windows collected straight into a ``(C, max_windows, win)`` array until a batch is full."""

    def __init__(self, max_windows: int, win: int) -> None:
        self.max_windows, self.win = max_windows, win
        self.starts: list[int] = []
        self.audio: np.ndarray | None = None  # (C, max_windows, win)

    def full(self) -> bool:
        return len(self.starts) == self.max_windows

    def add(self, start: int, x: np.ndarray) -> None:
        if self.audio is None:  # a fresh array per batch: yielded batches are never overwritten
            self.audio = np.zeros((x.shape[0], self.max_windows, self.win), np.float32)
        self.audio[:, len(self.starts), : x.shape[1]] = x  # (C, m <= win)
        self.starts.append(start)

    def flush(self, labels: list[int], n: int, sample_rate: int) -> Iterator[WindowBatch]:
        if not self.starts:
            return
        w = len(self.starts)
        starts = np.array(self.starts, np.int64)  # (W,)
        start_s, end_s = starts / sample_rate, np.minimum(starts + self.win, n) / sample_rate
        audio, self.audio, self.starts = self.audio, None, []
        if w < self.max_windows:  # do not keep a mostly empty batch array alive
            audio = audio[:, :w].copy()
        for c, label in enumerate(labels):
            yield WindowBatch(label, start_s.copy(), end_s.copy(), audio[c, :w])  # (W, win)
