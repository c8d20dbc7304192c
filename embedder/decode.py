"""Opening audio files by content and decoding them to native-rate float32 blocks.

Two libraries decode, chosen by what a file contains, never by its name (archives hold MP3 data
named ``.wav`` and WAV data named ``.mp3``):

- libsndfile (soundfile) for WAV/RF64/W64, FLAC, Ogg Vorbis and FLAC, AIFF, CAF and AU: its
  header lengths are exact and its seeks land on the exact sample, which makes spans cheap. Whole
  FLAC files go through our faster decoder (:mod:`embedder.flac`), which gives the same numbers.
- FFmpeg (PyAV) for everything else FFmpeg reads: MP3 (also MPEG audio inside WAV, whose libsndfile
  length is a guess), M4A/AAC, WMA, Opus (in Ogg too), and the audio track of a video file.
  These are always decoded from the start, so a sample's position is its index in the one decoded
  stream (codec delay and padding trimmed as FFmpeg trims them), and their length is counted by
  decoding: headers of such files often only estimate it, or lie.

Files are opened through Python file objects: neither library sees a name, so both can only sniff
content. Our own magic-byte sniffing only serves to explain failures.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import soundfile as sf

from embedder import flac

SNIFF_BYTES = 64  # bytes read to recognise a container
SALVAGE_FRAMES = 256  # libsndfile reads this much at a time past damage (it fails whole reads)
# a stream this much shorter than its header's exact length ended early (codec delay and padding
# are a few thousand samples; a truncated file loses whole seconds)
SHORT_BY_S = 0.5
# FFmpeg containers whose header length is exact (sample tables, play durations), and an MP3's
# when a Xing/Info/VBRI frame counts its frames; elsewhere FFmpeg guesses it from the bit rate
EXACT_LENGTH_CONTAINERS = ("MP4", "ASF", "MATROSKA", "OGG")
UNKNOWN_FRAMES = 2**62  # a frame count at least this large is libsndfile's "unknown" (SF_COUNT_MAX)
# libsndfile opens these, but guesses MPEG lengths (from the file size) and its Opus seeks, also
# the one SoundFile.read makes after every read, garble Ogg Opus files other muxers wrote (FFmpeg's)
FFMPEG_SUBTYPES = ("MPEG_LAYER_I", "MPEG_LAYER_II", "MPEG_LAYER_III", "OPUS")
_SF_ERRORS = (sf.SoundFileError, RuntimeError, ValueError, TypeError, OSError)
_AV_ERRORS = (av.FFmpegError, OSError, ValueError)
_CONTAINERS = {"mov": "MP4", "matroska": "MATROSKA", "asf": "ASF"}  # FFmpeg demuxer -> our name
_INT_SCALE = {"u8": 2.0**-7, "s16": 2.0**-15, "s32": 2.0**-31, "s64": 2.0**-63}  # to [-1, 1)


class AudioError(Exception):
    """A file cannot be used as audio: missing, empty, undecodable, or with NaN/inf samples."""


@dataclass(frozen=True)
class Damage:
    """Where a file's audio stops decoding: a recorder cut off mid-write, a bad sector.

    Attributes
    ----------
    at_s : float
        Seconds from the file start where the first damage begins (the first sample lost).
    reason : str
        What the decoder found there ("frame CRC mismatch", "truncated frame", ...).
    lost_s : float
        Seconds lost: silence stands in for them where decoding resumed after the damage.
    resumed : bool
        Whether decoding went on after the damage (False: nothing after it decodes).
    """

    at_s: float
    reason: str
    lost_s: float
    resumed: bool

    def describe(self) -> str:
        """One line, e.g. ``damaged at 19.97 s (truncated frame); nothing decodes after it``."""
        text = f"damaged at {self.at_s:.2f} s ({self.reason})"
        if self.resumed:
            return text + f"; {self.lost_s:.2f} s lost (silence), decoded on after it"
        return text + "; nothing decodes after it"


class PartialAudio(AudioError):
    """Raised after the last block of a damaged file: every block that decodes was delivered.

    Attributes
    ----------
    damage : Damage
    duration_s : float
        Seconds delivered (silence for lost spans included): the recording's real length.
    """

    def __init__(self, path: str, damage: Damage, duration_s: float) -> None:
        super().__init__(f"{path}: partial: {damage.describe()}")
        self.damage, self.duration_s = damage, duration_s


# ----------------------------------------------------------------------------------------- sniffing


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
    simple = {
        b"fLaC": "FLAC",
        b"OggS": "OGG",
        b"caff": "CAF",
        b".snd": "AU",
        b"\x1aE\xdf\xa3": "MATROSKA",
    }
    if tag in simple:
        return simple[tag]
    if head[4:8] == b"ftyp":
        return "MP4"
    if head[:16] == bytes.fromhex("3026b2758e66cf11a6d900aa0062ce6c"):
        return "ASF"
    if len(head) >= 2 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0:  # MPEG audio frame sync
        return "MP3"
    return None


def _open_error(path: Path, sniffed: str | None, reason: str) -> AudioError:
    if sniffed is None:
        return AudioError(
            f"{path}: not a recognised audio format ({reason})"  # never the file's bytes
        )
    return AudioError(f"{path}: corrupt or truncated {sniffed} data ({reason})")


def _reason(err: Exception) -> str:
    reason = getattr(err, "error_string", None) or str(err)
    # what libsndfile says when its MPEG decoder finds no valid frame
    return "no decodable frames" if "does not exist" in reason else reason


# ---------------------------------------------------------------------------------------- decoders


class Decoder:
    """An open audio file: what it holds, and its samples as native-rate float32 blocks.

    Attributes
    ----------
    path : str
    container, subtype : str
        As found in the content, e.g. ("WAV", "PCM_16"), ("FLAC", "PCM_24"), ("MP3", "MP3"),
        ("MP4", "AAC"), ("MATROSKA", "OPUS").
    samplerate, channels : int
    frames : int or None
        Samples per channel when known without decoding (exact), else None.
    damage : Damage or None
        After :meth:`blocks` read the file from its start: the first damage met, if any. What
        decodes around it was delivered (silence for frames lost in between).
    """

    path: str
    container: str
    subtype: str
    samplerate: int
    channels: int
    frames: int | None
    damage: Damage | None = None  # set once a whole read from the start met damage

    def blocks(self, block: int, start: int = 0, limit: int | None = None) -> Iterator[np.ndarray]:
        """float32 ``(n, C)`` blocks of native frames ``[start, start + limit)``, about ``block``
        frames each; raises :class:`AudioError` on NaN/inf as soon as they are met."""
        sr, first = self.samplerate, start
        for x in self._blocks(block, start, limit):
            finite = np.isfinite(x).all(axis=1)  # (n,)
            if not finite.all():
                at = (first + int(np.argmin(finite))) / sr
                raise AudioError(f"{self.path}: non-finite sample (NaN or inf) at {at:.3f} s")
            first += len(x)
            yield x

    def count(self) -> int:
        """Samples per channel: the exact count, by decoding where it is not known otherwise."""
        if self.frames is not None:
            return self.frames
        return sum(len(x) for x in self._blocks(1 << 20))

    def estimate(self) -> int:
        """Samples per channel without decoding: exact where ``frames`` is, else a header guess."""
        return self.count() if self.frames is not None else 0

    def _blocks(self, block: int, start: int = 0, limit: int | None = None):
        raise NotImplementedError


class _Sndfile(Decoder):
    """A file libsndfile reads: exact header lengths and exact seeks."""

    def __init__(self, snd: sf.SoundFile, path: str, fh) -> None:
        self.snd, self.path, self.fh = snd, path, fh
        self.container, self.subtype = snd.format, snd.subtype
        self.samplerate, self.channels = int(snd.samplerate), int(snd.channels)
        # libsndfile says SF_COUNT_MAX where the header leaves the length unknown (FLAC written
        # to a pipe): such a stream is counted by decoding
        self.frames = None if snd.frames >= UNKNOWN_FRAMES else int(snd.frames)

    def _fail(self, pos: int, err: Exception) -> AudioError:
        at = pos / self.samplerate
        return AudioError(f"{self.path}: decoding failed near {at:.2f} s ({_reason(err)})")

    def _blocks(self, block: int, start: int = 0, limit: int | None = None):
        """Whole FLAC files go through the fast decoder first; where it stops short (damage, or a
        frame it does not cover), libsndfile decodes the file from the start, reading exactly as
        it would have on its own, and drops what was delivered already: a file libsndfile reads
        whole decodes to libsndfile's samples. Where libsndfile fails too, the rest is salvaged
        (:meth:`_salvage`) and :attr:`damage` says where and why."""
        end = math.inf if limit is None else start + limit
        pos, reader = 0, None
        if start == 0 and self.container == "FLAC":
            reader = _fast_reader(self)
        try:
            if reader is not None:
                start = yield from _fast_flac(reader, block, end)
                if start >= end:
                    return
            elif start:
                try:
                    pos = self.snd.seek(start)
                except _SF_ERRORS as err:
                    raise self._fail(start, err) from err
            while pos < end:
                try:
                    x = self.snd.read(int(min(block, end - pos)), dtype="float32", always_2d=True)
                except _SF_ERRORS as err:
                    yield from self._salvage(reader, max(start, pos), block, end, _reason(err))
                    return
                if len(x) == 0:
                    break
                first, pos = pos, pos + len(x)
                if pos > start:
                    yield x[max(0, start - first) :]
            if limit is None and self.frames is not None and pos < min(self.frames, end):
                lost = (self.frames - pos) / self.samplerate  # data shorter than its header says
                self.damage = Damage(pos / self.samplerate, "the data ends early", lost, False)
        finally:
            if reader is not None:
                reader.close()

    def _salvage(self, reader, done: int, block: int, end: float, reason: str):
        """After libsndfile failed: what still decodes from frame ``done`` on. The fast decoder
        goes on at the next frame that decodes; without it, libsndfile reads again from the
        start in small steps and stops at the damage."""
        if reader is None and self.container == "FLAC" and flac.available():
            reader = _fast_reader(self)  # a span's read: decoded from the start, kept from done
        if reader is not None:
            with reader:
                yield from _resync_flac(self, reader, done, block, end, reason)
            return
        try:
            self.fh.seek(0)
            snd = sf.SoundFile(self.fh)
        except (*_SF_ERRORS, OSError):
            raise AudioError(
                f"{self.path}: decoding failed near {done / self.samplerate:.2f} s ({reason})"
            ) from None
        pos = 0
        with snd:
            while pos < end:
                try:
                    x = snd.read(int(min(SALVAGE_FRAMES, end - pos)), "float32", always_2d=True)
                except _SF_ERRORS:  # the damage again (the first reason says what it is)
                    break
                if len(x) == 0:
                    break
                first, pos = pos, pos + len(x)
                if pos > done:
                    yield x[max(0, done - first) :]
        reason, pos = _flac_reason(reason), max(pos, done)
        if pos == 0:
            raise AudioError(f"{self.path}: decoding failed near 0.00 s ({reason})")
        lost = max(0, (self.frames or pos) - pos) / self.samplerate
        self.damage = Damage(pos / self.samplerate, reason, lost, False)


def _fast_reader(dec: _Sndfile) -> flac.FlacReader | None:
    """The fast decoder on this file, or None where it does not cover it (or is not built)."""
    try:
        reader = flac.FlacReader(dec.path)
    except flac.FlacError:
        return None
    if (reader.samplerate, reader.channels) != (dec.samplerate, dec.channels):
        reader.close()
        return None
    return reader


def _fast_flac(reader: flac.FlacReader, block: int, end: float):
    """Blocks from the fast decoder (integer samples: always finite). Returns the frames delivered:
    ``end`` or more when done (inf at the end of the stream), fewer where libsndfile must go on."""
    while reader.position < end:
        try:
            x = reader.read(int(min(block, end - reader.position)))  # (n, C)
        except flac.FlacError:
            return reader.position  # damage, or a frame it does not cover
        if len(x) == 0:
            return math.inf
        yield x
    return reader.position


def _resync_flac(dec: _Sndfile, reader: flac.FlacReader, done: int, block: int, end, reason: str):
    """Frames ``[done, end)`` of a damaged FLAC file, resynchronising after each damage at the
    next frame that decodes (the frames lost in between become silence); sets ``dec.damage`` to
    the first damage. ``reader`` may sit at a frame that failed already."""
    sr, lost, at, resumed = dec.samplerate, 0, None, False
    while reader.position < end:
        first = reader.position
        try:
            x = reader.read(int(min(block, end - first)))  # (n, C)
        except flac.FlacError as err:
            if at is None:  # the first damage: where, and the fast decoder's precise reason
                at, reason = max(first, done), str(err).rsplit(" at frame ", 1)[0]
            gap = reader.resync()
            if gap is None:
                break
            resumed, lost = True, lost + gap
            yield from _silence(first, first + gap, done, end, dec.channels, block)
            continue
        if len(x) == 0:
            break
        if first + len(x) > done:
            yield x[max(0, done - first) :]
    if at is None:
        at = reader.position
    if max(reader.position, done) == 0:
        raise AudioError(f"{dec.path}: decoding failed near 0.00 s ({_flac_reason(reason)})")
    tail = max(0, (dec.frames or 0) - reader.position) if reader.position < end else 0
    dec.damage = Damage(at / sr, _flac_reason(reason), (lost + tail) / sr, resumed)


def _silence(a: int, b: int, done: int, end: float, channels: int, block: int):
    """Zero blocks ``(n, C)`` for frames ``[a, b)`` clipped to ``[done, end)``."""
    lo, hi = max(a, done), min(b, end)
    while lo < hi:
        n = int(min(block, hi - lo))
        yield np.zeros((n, channels), np.float32)
        lo += n


def _flac_reason(reason: str) -> str:
    # libsndfile's words come with an "Error : " prefix and a full stop
    return reason.removeprefix("Error : ").rstrip(".")


class _NoFrames(Exception):
    """FFmpeg opened the file but decodes nothing from it."""


class _FFmpeg(Decoder):
    """A file FFmpeg reads, always decoded from the start (exact where a seek would not be)."""

    def __init__(self, fh, path: str) -> None:
        self.fh, self.path = fh, path
        fh.seek(0)
        with av.open(fh, "r") as container:
            stream = container.streams.best("audio")
            name = container.format.name.split(",")[0]  # "mov,mp4,m4a,..." -> "mov"
            self.container = _CONTAINERS.get(name, name.upper())
            if stream is None:
                raise AudioError(f"{path}: no audio stream in this {self.container} file")
            self.subtype = (stream.codec_context.codec.canonical_name or "").upper()
            duration = stream.duration * stream.time_base if stream.duration else None
            if duration is None and container.duration:
                duration = container.duration / av.time_base
        # the first decoded frame, not the header, sets rate and channels (HE-AAC headers give
        # the core rate); none at all means nothing here decodes
        frames = self._decode()
        first = next(frames, None)
        frames.close()
        if first is None:
            raise _NoFrames("no decodable frames")
        self.samplerate, self.channels = first.sample_rate, first.layout.nb_channels
        self.frames = None
        self.guess = round(float(duration or 0) * self.samplerate)

    @functools.cached_property
    def exact_guess(self) -> bool:
        """Whether the header's length counts the frames (not one FFmpeg guessed from the bit
        rate). Asked only after a whole read, so a span's open does not read the header again."""
        return self.container in EXACT_LENGTH_CONTAINERS or (
            self.container == "MP3" and _mp3_counts_frames(self.fh)
        )

    def estimate(self) -> int:
        return self.guess

    def count(self) -> int:
        return sum(frame.samples for frame in self._frames())

    def _decode(self) -> Iterator[av.AudioFrame]:
        """The audio frames of a fresh decode from the start of the file."""
        self.fh.seek(0)
        with av.open(self.fh, "r") as container:
            stream = container.streams.best("audio")
            for packet in container.demux(stream):
                try:
                    frames = packet.decode()
                except av.InvalidDataError:
                    continue  # a damaged packet is skipped, as the ffmpeg tool does
                yield from frames

    def _frames(self) -> Iterator[av.AudioFrame]:
        """:meth:`_decode`, checked: same rate and channels throughout, errors as AudioError."""
        sr, nch, pos = self.samplerate, self.channels, 0
        frames = self._decode()
        while True:
            try:
                frame = next(frames, None)
            except _AV_ERRORS as err:
                raise AudioError(
                    f"{self.path}: decoding failed near {pos / sr:.2f} s ({err})"
                ) from err
            if frame is None:
                return
            if (frame.sample_rate, frame.layout.nb_channels) != (sr, nch):
                raise AudioError(
                    f"{self.path}: the stream changes to {frame.sample_rate} Hz, "
                    f"{frame.layout.nb_channels} channels at {pos / sr:.2f} s"
                )
            pos += frame.samples
            yield frame

    def _blocks(self, block: int, start: int = 0, limit: int | None = None):
        end = math.inf if limit is None else start + limit
        parts, held, pos = [], 0, 0  # arrays not yet yielded, their frames, frames decoded
        frames = self._frames()
        for frame in frames:
            first, pos = pos, pos + frame.samples
            if pos <= start:  # before the span: decoded (the codec state needs it), not converted
                continue
            x = _frame_array(frame, self.channels)
            parts.append(x[max(0, start - first) : frame.samples - max(0, pos - end)])
            held += len(parts[-1])
            if held >= block:
                yield np.concatenate(parts) if len(parts) > 1 else parts[0]
                parts, held = [], 0
            if pos >= end:
                break
        else:
            self._check_length(pos, start, end)
        frames.close()
        if parts:
            yield np.concatenate(parts)

    def _check_length(self, pos: int, start: int, end: float) -> None:
        """Set :attr:`damage` when a whole read ended well short of the header's exact length
        (a truncated file: FFmpeg stops there without an error)."""
        short = self.guess - pos
        if (
            start == 0
            and math.isinf(end)
            and self.exact_guess
            and short > SHORT_BY_S * self.samplerate
        ):
            sr = self.samplerate
            reason = f"the stream ends early: its header says {self.guess / sr:.2f} s"
            self.damage = Damage(pos / sr, reason, short / sr, False)


def _mp3_counts_frames(fh) -> bool:
    """Whether an MP3's first frame is a Xing/Info/VBRI frame (it counts the stream's frames)."""
    fh.seek(0)
    _sniff(fh)  # past an ID3v2 tag
    fh.seek(max(0, fh.tell() - SNIFF_BYTES))
    data = fh.read(1 << 16)
    sync = data.find(b"\xff")
    while 0 <= sync < len(data) - 1 and data[sync + 1] & 0xE0 != 0xE0:
        sync = data.find(b"\xff", sync + 1)
    if not 0 <= sync < len(data) - 1:
        return False
    head = data[sync + 4 : sync + 48]
    return b"Xing" in head or b"Info" in head or data[sync + 36 : sync + 40] == b"VBRI"


def _frame_array(frame: av.AudioFrame, channels: int) -> np.ndarray:
    """float32 ``(n, C)`` samples of a decoded frame, integers scaled to [-1, 1)."""
    a = frame.to_ndarray()  # planar (C, n), packed (1, n * C)
    a = a.T if frame.format.is_planar else a.reshape(-1, channels)
    kind = frame.format.name.rstrip("p")
    if kind == "u8":
        return (a.astype(np.float32) - 128) * np.float32(_INT_SCALE["u8"])
    if kind in _INT_SCALE:
        return a.astype(np.float32) * np.float32(_INT_SCALE[kind])
    return np.ascontiguousarray(a, dtype=np.float32)


# ----------------------------------------------------------------------------------------- opening


@contextmanager
def c_stderr_muted() -> Iterator[None]:
    """Silence what C code writes to file descriptor 2 meanwhile.

    libsndfile's MPEG decoder (mpg123) prints notes such as "Warning: Xing stream size off by
    more than 1%" straight to the descriptor while a file is opened; such a file goes to FFmpeg
    anyway, and its real faults are reported by us, once. Kept to the open (milliseconds):
    whatever another thread writes to stderr then is lost too.
    """
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a detached process): nothing to mute
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@contextmanager
def open_audio(path: str | os.PathLike) -> Iterator[Decoder]:
    """Open ``path`` for decoding by content; every failure becomes an :class:`AudioError`."""
    p = Path(path)
    try:
        fh = open(p, "rb")
    except OSError as err:
        raise AudioError(f"{p}: cannot open ({err.strerror or err})") from None
    with ExitStack() as stack:
        stack.enter_context(fh)
        if os.fstat(fh.fileno()).st_size == 0:
            raise AudioError(f"{p}: empty file (0 bytes)")
        sniffed = _sniff(fh)
        fh.seek(0)
        reason = None
        try:
            with c_stderr_muted():
                snd = stack.enter_context(sf.SoundFile(fh))
        except _SF_ERRORS as err:
            reason = _reason(err)
        else:
            if snd.samplerate <= 0 or snd.channels <= 0:
                raise AudioError(f"{p}: invalid header ({snd.samplerate} Hz, {snd.channels} ch)")
            if snd.format != "MP3" and snd.subtype not in FFMPEG_SUBTYPES:
                yield _Sndfile(snd, str(path), fh)
                return
            snd.close()
        try:
            dec = _FFmpeg(fh, str(path))
        except (*_AV_ERRORS, _NoFrames) as err:
            raise _open_error(p, sniffed, reason or _reason(err)) from None
        yield dec
