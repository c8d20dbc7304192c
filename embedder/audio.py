"""Decoding, resampling and windowing of field recordings.

Files are decoded by *content*, never by extension (see :mod:`embedder.decode`: libsndfile for WAV,
FLAC, Ogg and AIFF, FFmpeg for MP3 and every other container and codec it reads).

Long recordings are streamed: blocks of ``BLOCK_S`` seconds are decoded, checked for NaN/inf and for
samples far beyond full scale (``MAX_SAMPLE``), mixed to
the channel policy and resampled with a streaming soxr resampler (bit-identical to a one-shot
resample, so block boundaries leave no trace). Windows start at ``k * hop``; a window is kept when it
lies fully inside the file, then one zero-padded tail window is added when at least ``min_tail_s`` of
not-yet-covered audio remains. A file shorter than one window gives one padded window.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import soxr

from embedder.decode import AudioError, Damage, PartialAudio, open_audio

__all__ = [
    "AudioError",
    "AudioInfo",
    "Damage",
    "PartialAudio",
    "WindowBatch",
    "count_windows",
    "frame",
    "iter_windows",
    "load",
    "probe",
    "read_blocks",
]

BLOCK_S = 60.0  # s of native-rate audio decoded per block (~11 MB per channel at 48 kHz)
# samples (frames x channels) per decoded block, and per batch of windows of all channels: a
# 64-channel 96 kHz file would need 1.5 GB for one 60 s block, so many channels get shorter ones
MAX_BLOCK_SAMPLES = 1 << 24  # 64 MB of float32
MIN_TAIL_S = 1.0  # s: shortest uncovered tail that still gets its own zero-padded window
BATCH_WINDOWS = 64  # windows per WindowBatch (64 x 5 s x 32 kHz float32 = 41 MB)
CHANNEL_POLICIES = ("mix", "first", "all")
RESAMPLE_QUALITY = "HQ"  # soxr quality preset
# largest |sample| accepted: 2**31 x full scale, so float files written at an integer scale (a
# 32-bit int's range included) still read, while the 1e20s of a corrupt float file, whose squares
# overflow float32 and become silent zero vectors, are refused
MAX_SAMPLE = 2.0**32
LOAD_CONTEXT_S = 0.05  # s read beyond each end of a span; soxr HQ edge transients last < 10 ms


@dataclass(frozen=True)
class AudioInfo:
    """What a file contains, as decoded by content (``container`` may disagree with the extension)."""

    path: str
    container: str  # "WAV", "FLAC", "OGG", "AIFF", ... (libsndfile); "MP3", "MP4", "ASF", ...
    subtype: str  # e.g. "PCM_16", "FLOAT", "VORBIS" (libsndfile); "MP3", "AAC", "OPUS", "WMAV2"
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


def probe(path: str | os.PathLike, exact: bool = True) -> AudioInfo:
    """Describe an audio file.

    Parameters
    ----------
    path : str or PathLike
    exact : bool
        Count the frames the file decodes to. libsndfile's formats (WAV, FLAC, Ogg, AIFF) give that
        count in their headers and are decoded only where the header leaves it unknown; what FFmpeg
        reads (MP3, M4A, WMA, WebM, ...) is decoded whole (about 1 s per hour of MP3), as its
        headers only estimate the length, when they give it at all. ``False`` takes the header's
        word (0 when it has none): for telling audio from other files, not for durations.

    Returns
    -------
    AudioInfo
        Container and subtype as found in the content; ``frames`` at the native ``sample_rate``.

    Raises
    ------
    AudioError
        Missing, empty or unrecognised file (with ``exact``, also undecodable data).
    """
    with open_audio(path) as dec:
        frames = dec.count() if exact else dec.estimate()
        return AudioInfo(
            path=str(path),
            container=dec.container,
            subtype=dec.subtype,
            sample_rate=dec.samplerate,
            channels=dec.channels,
            frames=frames,
            duration_s=frames / dec.samplerate,
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


def block_frames(block_s: float, samplerate: int, channels: int) -> int:
    """Frames per decoded block: ``block_s`` seconds, fewer where that many channels would take
    more than :data:`MAX_BLOCK_SAMPLES` samples (peak memory stays bounded whatever the count)."""
    return max(1, min(int(round(block_s * samplerate)), MAX_BLOCK_SAMPLES // max(1, channels)))


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
        Seconds of native audio decoded per block (fewer for many channels: see
        :func:`block_frames`).

    Yields
    ------
    np.ndarray
        float32 ``(C, n)`` with C = 1 for mix/first and the file's channel count for all. Concatenated
        along axis 1 the blocks equal a one-shot soxr resample of the whole file.

    Raises
    ------
    PartialAudio
        After the last block of a damaged file (cut short, or frames lost mid-file): every block
        that decodes was yielded first, silence standing in for lost frames decoding went on after.
    AudioError
        Undecodable file, NaN/inf samples or samples beyond ``MAX_SAMPLE`` (raised when
        reached), or no samples at all.
    """
    _check_policy(channels)
    _check_rate(sample_rate)
    if block_s <= 0:
        raise ValueError(f"block_s must be > 0, got {block_s}")
    with open_audio(path) as dec:
        n_out = dec.channels if channels == "all" else 1
        rs = _Resampler(dec.samplerate, int(sample_rate), n_out)
        block = block_frames(block_s, dec.samplerate, dec.channels)
        total = 0
        for x in _in_range(dec.blocks(block), dec, 0):
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
    if dec.damage is not None:
        raise PartialAudio(str(path), dec.damage, total / sample_rate)


def _in_range(blocks: Iterator[np.ndarray], dec, start: int) -> Iterator[np.ndarray]:
    """``blocks`` (native ``(n, C)`` frames from frame ``start``), with an AudioError at the first
    sample beyond ``MAX_SAMPLE``: the file's finite nonsense would embed as zero vectors."""
    first = start
    for x in blocks:
        # max and min: two passes, no copy of the block (np.abs would make one)
        if len(x) and (x.max() > MAX_SAMPLE or x.min() < -MAX_SAMPLE):
            bad = np.flatnonzero((np.abs(x) > MAX_SAMPLE).any(axis=1))[0]
            # the position, not the value: messages never carry the file's bytes
            raise AudioError(
                f"{dec.path}: a sample beyond ±{MAX_SAMPLE:.3g} at {(first + bad) / dec.samplerate:.3f} s "
                "(full scale is 1): a damaged float file, not audio"
            )
        first += len(x)
        yield x


def load(
    path: str | os.PathLike,
    sample_rate: int,
    channels: str = "mix",
    start_s: float = 0.0,
    end_s: float | None = None,
) -> np.ndarray:
    """Read a span of a file, seeking to it rather than decoding from the start.

    What FFmpeg decodes (MP3, M4A, WMA, ...) is the exception: it is decoded from the start up to
    the span (about 1 s of CPU per hour of MP3), since a seek into such a stream gives other samples
    than decoding on to the same point.

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
        Undecodable file, NaN/inf or samples beyond ``MAX_SAMPLE`` in the span, or a span
        starting after the end of the file.
    ValueError
        Negative or empty span, bad policy or rate.
    """
    _check_policy(channels)
    _check_rate(sample_rate)
    sample_rate = int(sample_rate)
    if start_s < 0 or (end_s is not None and end_s <= start_s):
        raise ValueError(f"bad span {start_s}-{end_s} s: need 0 <= start < end")
    with open_audio(path) as dec:
        sr_in = dec.samplerate
        # a length known only by decoding: read until the data ends, check the span afterwards
        frames = math.inf if dec.frames is None else dec.frames
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
        n_out = dec.channels if channels == "all" else 1
        rs = _Resampler(sr_in, sample_rate, n_out)
        block = block_frames(BLOCK_S, sr_in, dec.channels)
        limit = None if math.isinf(b) else b - a
        blocks = _in_range(dec.blocks(block, start=a, limit=limit), dec, a)
        parts = [rs.push(_apply_policy(x, channels)) for x in blocks]
        parts.append(rs.flush())
    y = np.concatenate(parts, axis=0)  # (m, C) starting at output sample a * step_out / step_in
    off = a // step_in * step_out
    if i0 - off >= len(y):  # the span starts after the end of a stream counted by decoding
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

    Raises
    ------
    PartialAudio
        After the windows of what decodes of a damaged file (see :func:`read_blocks`).
    """
    _check_policy(channels)
    grid = _Grid.make(sample_rate, window_s, hop_s, min_tail_s)
    if max_windows < 1:
        raise ValueError(f"max_windows must be >= 1, got {max_windows}")
    adjacent = grid.hop == grid.win  # windows tile the signal: runs of them are views of a block
    labels: list[int] = []  # channel number of each row of a block
    buf = np.zeros((0, 0), np.float32)  # (C, m) samples [off, n) not yet in a window
    off = n = k = 0  # buffer start, samples seen, next window index
    pend = _Pending(max_windows, grid.win)  # sized for the channel count at the first block
    partial: list[PartialAudio] = []  # raised once the windows of what decoded are out
    blocks = read_blocks(path, sample_rate, channels, block_s)
    for block in _until_partial(blocks, partial):  # (C, m)
        if not labels:
            labels = [-1] if channels == "mix" else list(range(block.shape[0]))
            buf = np.zeros((block.shape[0], 0), np.float32)
            # a batch holds max_windows windows of every channel: fewer for many channels
            room = MAX_BLOCK_SAMPLES // (block.shape[0] * grid.win)
            max_windows = max(1, min(max_windows, room))
            pend = _Pending(max_windows, grid.win)
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
    if partial:
        raise partial[0]


def _until_partial(blocks: Iterator[np.ndarray], found: list) -> Iterator[np.ndarray]:
    """``blocks``, ending quietly where they end with :class:`PartialAudio` (appended to ``found``)."""
    try:
        yield from blocks
    except PartialAudio as err:
        found.append(err)


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
