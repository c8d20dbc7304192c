"""The compiled FLAC decoder: bit-identical to libsndfile, and handing over to it on damage."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import soundfile as sf

from embedder import audio, flac

needs_decoder = pytest.mark.skipif(not flac.available(), reason=flac.status())


def read_all(path, block: int) -> np.ndarray:
    """The whole file through :class:`flac.FlacReader`, ``block`` frames per call."""
    with flac.FlacReader(path) as reader:
        parts = []
        while len(part := reader.read(block)):
            parts.append(part)
        assert reader.position == sum(len(p) for p in parts)
    return np.concatenate(parts)


def reference(path) -> np.ndarray:
    return sf.read(path, dtype="float32", always_2d=True)[0]


def signal(n: int, channels: int, kind: str, seed: int) -> np.ndarray:
    """``(n, channels)`` test material that drives the encoder into its different subframe types."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    if kind == "tonal":  # LPC/FIXED subframes; channels alike, so left/side or mid/side stereo
        x = 0.4 * np.sin(2 * np.pi * 440 * t)[:, None] + 0.01 * rng.standard_normal((n, channels))
    elif kind == "noise":  # near full scale: large Rice parameters, escapes, verbatim
        x = 0.99 * rng.uniform(-1, 1, (n, channels))
    elif kind == "silence":  # CONSTANT subframes
        x = np.zeros((n, channels))
    else:  # "coarse": 8-bit steps in wider samples, so wasted bits
        x = np.round(0.5 * np.sin(2 * np.pi * 97 * t)[:, None] * 127) / 128 * np.ones(channels)
    return x.astype(np.float32)


@needs_decoder
@pytest.mark.parametrize(
    "subtype,channels,kind",
    [
        (s, c, k)
        for s, c, k in itertools.product(
            ["PCM_S8", "PCM_16", "PCM_24"], [1, 2, 6], ["tonal", "noise", "silence", "coarse"]
        )
    ],
)
def test_bit_identical_to_libsndfile(tmp_path, subtype, channels, kind):
    for level, n in ((0.0, 1), (0.5, 4097), (1.0, 20_011)):  # compression levels, lengths
        path = tmp_path / f"x{level}.flac"
        sf.write(
            path, signal(n, channels, kind, n), 16000, subtype=subtype, compression_level=level
        )
        want = reference(path)
        got = read_all(path, block=1000)  # reads straddle the 4096-sample frames
        assert got.dtype == np.float32 and got.shape == want.shape == (n, channels)
        np.testing.assert_array_equal(got, want)


@needs_decoder
def test_long_file_across_buffer_refills(tmp_path, noise):
    # ~11 MB of FLAC: the decoder's 4 MB buffer is refilled many times, frames cut at its edge
    path = tmp_path / "long.flac"
    sf.write(path, noise(40.0, 48000, amp=0.3, channels=2), 48000, subtype="PCM_24")
    assert path.stat().st_size > 10e6
    np.testing.assert_array_equal(read_all(path, block=48000 * 7 + 13), reference(path))


@needs_decoder
def test_metadata_larger_than_the_buffer_is_skipped(tmp_path, tone):
    # a 5 MB PADDING block (as cover art would be) between STREAMINFO and the audio
    path = tmp_path / "a.flac"
    sf.write(path, tone(440, 1.0, 16000), 16000)
    data = bytearray(path.read_bytes())
    at, last = 4, False
    while not last:  # find the end of the metadata, clearing the "last block" flag on the way
        last = bool(data[at] & 0x80)
        data[at] &= 0x7F
        at += 4 + int.from_bytes(data[at + 1 : at + 4], "big")
    size = 5 << 20
    padding = bytes([0x81]) + size.to_bytes(3, "big") + bytes(size)  # last block, type 1
    padded = tmp_path / "padded.flac"
    padded.write_bytes(bytes(data[:at]) + padding + bytes(data[at:]))
    np.testing.assert_array_equal(read_all(padded, 4096), reference(path))
    np.testing.assert_array_equal(reference(padded), reference(path))


@needs_decoder
def test_id3v2_tag_before_the_stream(tmp_path, tone):
    path = tmp_path / "a.flac"
    sf.write(path, tone(300, 0.5, 16000), 16000)
    tagged = tmp_path / "tagged.flac"
    tagged.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x10" + bytes(16) + path.read_bytes())
    np.testing.assert_array_equal(read_all(tagged, 999), reference(path))


@needs_decoder
def test_streams_it_does_not_cover_are_refused_at_open(tmp_path, tone):
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(300, 0.2, 16000), 16000)
    with pytest.raises(flac.FlacError, match="not a native FLAC stream"):
        flac.FlacReader(wav)
    with pytest.raises(flac.FlacError, match="cannot open"):
        flac.FlacReader(tmp_path / "missing.flac")


def damaged(tmp_path, kind: str):
    """A 3 s stereo FLAC and a damaged copy: a flipped bit, a cut, or junk in mid-stream."""
    x = (0.2 * np.random.default_rng(0).standard_normal((48000 * 3, 2))).astype(np.float32)
    path = tmp_path / "good.flac"
    sf.write(path, x, 48000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    mid = len(data) // 2
    if kind == "bitflip":
        data[mid] ^= 0x40
    elif kind == "truncated":
        data = data[: mid + 100]
    else:
        data = data[:mid] + bytes(5000) + data[mid:]
    bad = tmp_path / f"{kind}.flac"
    bad.write_bytes(bytes(data))
    return path, bad


@needs_decoder
@pytest.mark.parametrize("kind", ["bitflip", "truncated", "junk"])
def test_damage_stops_at_the_frame_and_says_why(tmp_path, kind):
    good, bad = damaged(tmp_path, kind)
    want = reference(good)
    with flac.FlacReader(bad) as reader:
        got = reader.read(10**6)  # what precedes the damage comes out first ...
        assert 0 < len(got) < len(want)
        np.testing.assert_array_equal(got, want[: len(got)])
        with pytest.raises(flac.FlacError, match=r"(CRC mismatch|truncated frame) at frame \d+"):
            reader.read(10**6)  # ... then the reason, with the frame reached


def read_damaged(path) -> tuple[np.ndarray, audio.PartialAudio]:
    """What :func:`audio.read_blocks` delivers of a damaged file ``(n, C)``, and how it ends."""
    blocks = []
    with pytest.raises(audio.PartialAudio) as caught:
        for b in audio.read_blocks(path, 48000, channels="all", block_s=0.5):
            blocks.append(b)
    return np.concatenate(blocks, axis=1).T, caught.value


@needs_decoder
@pytest.mark.parametrize("kind", ["bitflip", "truncated", "junk"])
def test_damaged_file_keeps_what_decodes_and_says_where(tmp_path, kind):
    # libsndfile fails on all three; the fast decoder resynchronises at the next frame after a bad
    # one (lost frames become silence, so times after the damage stay right) and stops at a cut
    good, bad = damaged(tmp_path, kind)
    with pytest.raises(sf.LibsndfileError):
        reference(bad)
    want = reference(good)
    got, err = read_damaged(bad)
    with flac.FlacReader(bad) as reader:
        first_bad = len(reader.read(10**6))  # the samples of the frames before the damage
    assert 0 < first_bad < len(want) and err.damage.at_s == first_bad / 48000
    np.testing.assert_array_equal(got[:first_bad], want[:first_bad])
    if kind == "truncated":
        assert len(got) == first_bad and not err.damage.resumed
        assert err.duration_s == first_bad / 48000
        assert err.damage.lost_s == (len(want) - first_bad) / 48000
        assert f"damaged at {first_bad / 48000:.2f} s (truncated frame)" in str(err)
        return
    lost = round(err.damage.lost_s * 48000)
    assert err.damage.resumed and 0 < lost <= 4096 * 2  # one frame (junk: maybe the next too)
    assert len(got) == len(want) and err.duration_s == 3.0
    assert not got[first_bad : first_bad + lost].any()
    np.testing.assert_array_equal(got[first_bad + lost :], want[first_bad + lost :])


@needs_decoder
@pytest.mark.parametrize("kind", ["bitflip", "junk"])
def test_a_span_across_the_damage_reads_as_the_whole_file_does(tmp_path, kind):
    # the explorer's clips and span queries read spans: across the damage they get the same
    # samples (silence where frames were lost) as the windows embedded from the whole file
    _, bad = damaged(tmp_path, kind)
    whole, _ = read_damaged(bad)
    span = audio.load(bad, 48000, "all", 1.3, 1.7)  # (C, n)
    assert span.shape == (2, 19200)
    np.testing.assert_array_equal(span.T, whole[62400:81600])


@pytest.mark.parametrize("kind", ["bitflip", "truncated"])
def test_without_the_fast_decoder_a_damaged_file_keeps_what_comes_before(
    tmp_path, monkeypatch, kind
):
    # libsndfile cannot resynchronise: its samples up to the damage are kept, the position of the
    # damage is that of its last good read (not 0.00 s), and nothing after it is delivered
    monkeypatch.setenv(flac.SWITCH_ENV, "0")
    flac.LIBRARY.reset()
    try:
        good, bad = damaged(tmp_path, kind)
        want = reference(good)
        got, err = read_damaged(bad)
    finally:
        flac.LIBRARY.reset()
    at = err.damage.at_s * 48000
    assert len(got) == at and 1.0 * 48000 < at <= len(want) / 2 + 4096
    np.testing.assert_array_equal(got, want[: len(got)])
    assert not err.damage.resumed and "flac decoder" in str(err)


@needs_decoder
def test_trailing_tag_after_the_last_frame_is_ignored(tmp_path, tone):
    path = tmp_path / "a.flac"
    sf.write(path, tone(300, 1.0, 16000), 16000)
    tagged = tmp_path / "tagged.flac"
    tagged.write_bytes(path.read_bytes() + b"TAG" + bytes(125))  # an ID3v1 tag
    np.testing.assert_array_equal(read_all(tagged, 5000), reference(path))


@needs_decoder
def test_audio_reads_flac_through_the_fast_decoder(tmp_path, monkeypatch, chirp):
    path = tmp_path / "a.flac"
    x = chirp(200, 6000, 3.0, 44100)
    sf.write(path, x, 44100, subtype="PCM_24")
    want = np.concatenate(list(audio.read_blocks(path, 32000, block_s=0.7)), axis=1)

    def no_libsndfile_reads(*args, **kwargs):
        raise AssertionError("libsndfile was asked to decode")

    monkeypatch.setattr(sf.SoundFile, "read", no_libsndfile_reads)
    got = np.concatenate(list(audio.read_blocks(path, 32000, block_s=0.7)), axis=1)
    np.testing.assert_array_equal(got, want)
    # a read from an offset keeps libsndfile's exact seek
    with pytest.raises(AssertionError, match="libsndfile was asked"):
        audio.load(path, 32000, start_s=1.0)


@pytest.mark.parametrize("switch", ["CHORUS_CPU_KERNELS", "CHORUS_FAST_FLAC"])
def test_disabled_decoder_leaves_libsndfile_reading(tmp_path, monkeypatch, tone, switch):
    monkeypatch.setenv(switch, "0")
    flac.LIBRARY.reset()
    try:
        assert not flac.available() and f"{switch}=0" in flac.status()
        with pytest.raises(flac.FlacError, match=f"{switch}=0"):
            flac.FlacReader(tmp_path / "whatever.flac")
        path = tmp_path / "a.flac"
        sf.write(path, tone(500, 0.5, 16000), 16000)
        got = audio.load(path, 16000)
        np.testing.assert_array_equal(got, reference(path).T)
    finally:
        flac.LIBRARY.reset()


def crc8(data: bytes) -> int:
    c = 0
    for byte in data:
        c ^= byte
        for _ in range(8):
            c = ((c << 1) ^ 0x07) & 0xFF if c & 0x80 else (c << 1) & 0xFF
    return c


def frame_offsets(data: bytes) -> list[int]:
    """Where the frames of a libsndfile-written stream start (sync code + a header whose CRC-8
    holds; 4096-sample frames at a standard rate, so the header ends after the frame number)."""
    found = []
    at = data.find(b"\xff\xf8")
    while 0 <= at <= len(data) - 7:  # a header's bytes and its CRC-8 are all there
        size = 5 if data[at + 4] < 0x80 else 6  # frame numbers below 2^11: 1 or 2 bytes
        if crc8(data[at : at + size]) == data[at + size]:
            found.append(at)
        at = data.find(b"\xff\xf8", at + 1)
    return found


def outcome(path, sr: int = 16000) -> np.ndarray | str:
    """What :func:`audio.read_blocks` gives: the samples, or the error it ends with."""
    try:
        return np.concatenate(list(audio.read_blocks(path, sr, block_s=0.5)), axis=1)
    except audio.AudioError as err:
        return str(err)


def outcome_without_fast_decoder(monkeypatch, path, sr: int = 16000) -> np.ndarray | str:
    with monkeypatch.context() as m:
        m.setenv(flac.SWITCH_ENV, "0")
        flac.LIBRARY.reset()
        try:
            return outcome(path, sr)
        finally:
            flac.LIBRARY.reset()


def assert_same_outcome(got, want) -> None:
    assert type(got) is type(want), (got, want)
    if isinstance(want, str):
        assert got == want
    else:
        np.testing.assert_array_equal(got, want)


@needs_decoder
@pytest.mark.parametrize("damage", ["frame dropped", "frame repeated"])
def test_frames_out_of_sequence_are_resynchronised(tmp_path, monkeypatch, noise, damage):
    # the fast decoder stops at such a frame and hands over to libsndfile: it reads a repeated
    # frame as libFLAC does (skipped), but fails on a dropped one (the seek soundfile makes after
    # each read cannot land inside the gap); there the fast decoder goes on, with silence as long
    # as the frame lost
    path = tmp_path / "a.flac"
    sf.write(path, noise(2.0, 16000, amp=0.2), 16000, subtype="PCM_16")
    data = path.read_bytes()
    starts = frame_offsets(data)
    assert len(starts) == 7  # the 4096-sample frames of 32000 samples (not the short last one)
    a, b = starts[3], starts[4]
    if damage == "frame dropped":
        bad, good_frames = data[:a] + data[b:], 3
    else:
        bad, good_frames = data[:b] + data[a:b] + data[b:], 4
    damaged_path = tmp_path / "bad.flac"
    damaged_path.write_bytes(bad)
    with flac.FlacReader(damaged_path) as reader:
        assert len(reader.read(10**6)) == good_frames * 4096  # up to the frame out of order
        with pytest.raises(flac.FlacError, match="frames out of sequence"):
            reader.read(10**6)
    if damage == "frame repeated":
        assert_same_outcome(
            outcome(damaged_path), outcome_without_fast_decoder(monkeypatch, damaged_path)
        )
        return
    assert "partial: damaged at" in outcome_without_fast_decoder(monkeypatch, damaged_path)
    want = reference(path)[:, 0]
    blocks = []
    with pytest.raises(audio.PartialAudio) as caught:
        blocks.extend(audio.read_blocks(damaged_path, 16000, block_s=0.5))
    got = np.concatenate(blocks, axis=1)[0]
    at = good_frames * 4096
    assert caught.value.damage.at_s == at / 16000 and caught.value.damage.resumed
    assert len(got) == len(want)
    lost = 4096
    assert caught.value.damage.lost_s == lost / 16000
    np.testing.assert_array_equal(got[:at], want[:at])
    assert not got[at : at + lost].any()
    np.testing.assert_array_equal(got[at + lost :], want[at + lost :])


@needs_decoder
def test_unknown_length_reads_to_the_end(tmp_path, noise):
    # STREAMINFO may leave the total at 0 (streamed encoders): read until the stream ends
    path = tmp_path / "a.flac"
    x = noise(1.5, 16000, amp=0.2, channels=2)
    sf.write(path, x, 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    info = 8  # "fLaC" + block header; the total is the low 36 bits of bytes 13-17
    data[info + 13] &= 0xF0
    data[info + 14 : info + 18] = bytes(4)
    unknown = tmp_path / "unknown.flac"
    unknown.write_bytes(bytes(data))
    with flac.FlacReader(unknown) as reader:
        assert reader.frames == 0
        got = np.concatenate([reader.read(7000) for _ in range(4)])
        assert len(got) == len(x) and len(reader.read(7000)) == 0 and len(reader.read(10)) == 0
    np.testing.assert_array_equal(got, reference(path))
    info = audio.probe(unknown)  # libsndfile says 2^63 - 1 frames here: counted by decoding
    assert (info.frames, info.duration_s) == (len(x), 1.5)


@needs_decoder
def test_id3_tag_claiming_more_than_the_file_is_refused(tmp_path, tone):
    path = tmp_path / "a.flac"
    sf.write(path, tone(300, 0.2, 16000), 16000)
    tagged = tmp_path / "tagged.flac"
    tagged.write_bytes(b"ID3\x03\x00\x00\x7f\x7f\x7f\x7f" + path.read_bytes())  # 256 MB tag
    with pytest.raises(flac.FlacError, match="truncated ID3 tag"):
        flac.FlacReader(tagged)


def _crc16_bitwise(data: bytes) -> int:
    """FLAC's frame CRC-16 (polynomial x^16 + x^15 + x^2 + 1, MSB first, init 0), bit by bit."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x8005) & 0xFFFF if crc & 0x8000 else (crc << 1) & 0xFFFF
    return crc


def test_frame_crc_matches_the_definition_at_every_length():
    # the compiled CRC folds 16-byte blocks with carry-less multiplies where the CPU has them and
    # finishes with tables; a wrong fold would send every frame to libsndfile, silently slower
    import ctypes

    lib = flac.LIBRARY.get()
    if lib is None:
        pytest.skip(f"the fast decoder is {flac.status()}")
    lib.chorus_flac_crc16.restype = ctypes.c_uint16
    lib.chorus_flac_crc16.argtypes = [ctypes.c_char_p, ctypes.c_int64]
    rng = np.random.default_rng(0)
    for n in [*range(0, 80), 127, 128, 129, 1000, 4097]:
        for pattern in ("random", "zeros", "ones"):
            data = {
                "random": rng.integers(0, 256, n, dtype=np.uint8).tobytes(),
                "zeros": bytes(n),
                "ones": b"\xff" * n,
            }[pattern]
            assert lib.chorus_flac_crc16(data, n) == _crc16_bitwise(data), (n, pattern)


def handmade_frame(number: int, samples: list[int], pad: int) -> bytes:
    """One mono 16-bit frame (a FIXED order-0 subframe, Rice parameter 0) written bit by bit, with
    ``pad`` in the bits that fill its last byte before the CRC-16 (the format says zeros)."""
    bits = "".join(f"{b:08b}" for b in (0xFF, 0xF8, 0x60, 0x08, number, len(samples) - 1))
    header = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))
    bits += f"{crc8(header):08b}" + "00010000" + "00" + "0000" + "0000"  # subframe, residual coding
    for s in samples:  # zigzag, then unary (param 0: no remainder bits)
        bits += "0" * (2 * s if s >= 0 else -2 * s - 1) + "1"
    fill = -len(bits) % 8
    assert fill and pad < 2**fill
    bits += format(pad, f"0{fill}b")
    frame = bytes(int(bits[i : i + 8], 2) for i in range(0, len(bits), 8))
    return frame + _crc16_bitwise(frame).to_bytes(2, "big")


def handmade_stream(frames: list[bytes], block: int, total: int) -> bytes:
    info = (
        block.to_bytes(2, "big") * 2  # min and max block size
        + bytes(6)  # frame sizes unknown
        + ((16000 << 44) | (0 << 41) | (15 << 36) | total).to_bytes(8, "big")  # rate, mono, 16-bit
        + bytes(16)  # no MD5
    )
    return b"fLaC" + bytes([0x80]) + len(info).to_bytes(3, "big") + info + b"".join(frames)


@needs_decoder
def test_nonzero_padding_before_the_frame_crc_is_damage(tmp_path, monkeypatch):
    # a frame whose fill bits are not zero has a valid CRC, yet libFLAC treats it as a lost sync:
    # the fast decoder must stop there too; libsndfile fails on it, so the fast decoder goes on
    # at the next frame, with silence for the one it dropped
    block = 16
    parts = [[(5 * k + i) % 7 - 3 for k in range(block)] for i in range(3)]  # none byte-aligned
    want = np.concatenate(parts)[:, None] / 32768
    good = tmp_path / "good.flac"
    good.write_bytes(
        handmade_stream([handmade_frame(i, p, 0) for i, p in enumerate(parts)], block, 48)
    )
    np.testing.assert_array_equal(reference(good), want)  # the handmade stream is valid FLAC
    np.testing.assert_array_equal(read_all(good, 10), want)

    bad = tmp_path / "bad.flac"
    frames = [handmade_frame(i, p, 1 if i == 1 else 0) for i, p in enumerate(parts)]
    bad.write_bytes(handmade_stream(frames, block, 48))
    with flac.FlacReader(bad) as reader:
        np.testing.assert_array_equal(reader.read(100), want[:block])
        with pytest.raises(flac.FlacError, match="lost frame sync at frame 1"):
            reader.read(100)
    assert "decoding failed near 0.00 s" in outcome_without_fast_decoder(monkeypatch, bad)
    rate = audio.probe(bad).sample_rate
    with pytest.raises(audio.PartialAudio, match="lost frame sync"):
        got = []
        for b in audio.read_blocks(bad, rate, block_s=0.5):
            got.append(b)
    want[block : 2 * block] = 0
    np.testing.assert_array_equal(np.concatenate(got, axis=1).T, want)


# ------------------------------------------------------------------------------------------- fuzzing
# Mutated files (bit flips, truncations, deleted, swapped and repeated frames, junk) are decoded in
# a worker process, one at a time under a timeout, so a crash or a hang names its file. Where
# libsndfile alone reads a file whole, the fast decoder and its hand-over give the same samples;
# where it finds damage, both give the same samples up to the first damage either finds (the fast
# decoder may then resynchronise and give more).

FUZZ_WORKER = r"""
import hashlib, json, os, sys
import numpy as np
from embedder import audio, flac

def outcome():  # (samples (C, n) or None; None when clean, else the damage's first sample or error)
    blocks = []
    try:
        for b in audio.read_blocks(path, rate, "all", block_s):
            blocks.append(b)
    except audio.PartialAudio as err:
        return np.concatenate(blocks, axis=1), round(err.damage.at_s * rate)
    except audio.AudioError as err:
        return None, "error: " + str(err)
    return np.concatenate(blocks, axis=1), None

def verdict(fast, ref):  # (agree, what): clean files decode alike, damaged ones up to the damage
    (f, f_end), (r, r_end) = fast, ref
    if r_end is None:  # libsndfile reads it whole: the same samples, no damage
        same = f_end is None and f.shape == r.shape and np.array_equal(f, r)
        return same, "clean" if same else f"fast {f_end!r} where libsndfile reads it whole"
    if f_end is None:
        return False, f"fast reads it whole where libsndfile says {r_end!r}"
    if r is None or f is None:  # nothing decodes for libsndfile (the fast decoder may resync)
        return True, "error"
    n = min(r.shape[1], f_end)
    same = np.array_equal(f[:, :n], r[:, :n])
    return same, "partial" if same else f"samples before the damage differ ({n})"

for line in sys.stdin:
    path, rate, block_s = line.rstrip("\n").rsplit(" ", 2)
    rate, block_s = int(rate), float(block_s)
    fast = outcome()
    os.environ[flac.SWITCH_ENV] = "0"
    flac.LIBRARY.reset()
    ref = outcome()
    del os.environ[flac.SWITCH_ENV]
    flac.LIBRARY.reset()
    print(json.dumps(verdict(fast, ref)), flush=True)
"""


class FuzzWorker:
    """A Python process decoding one file per request; restarted after a crash or a hang."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s, self.proc = timeout_s, None

    def _start(self) -> None:
        import os
        import subprocess
        import sys

        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", FUZZ_WORKER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env=env,
        )

    def decode(self, path, rate: int, block_s: float) -> tuple[str, str] | str:
        """(whether both decoders agree, what was compared), or why the worker gave none."""
        import json
        import select

        if self.proc is None:
            self._start()
            timeout = self.timeout_s + 30  # the first request waits for the imports
        else:
            timeout = self.timeout_s
        self.proc.stdin.write(f"{path} {rate} {block_s}\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if line:
            return tuple(json.loads(line))
        self.close()
        return "hang" if not ready else "crash"

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


def fuzz_bases(tmp_path) -> list[tuple[bytes, int]]:
    """Small valid streams (8 frames or so) of different widths, channels and subframe types."""
    bases = []
    for i, (n, channels, kind, subtype, rate) in enumerate(
        [
            (8 * 4096 + 123, 1, "tonal", "PCM_16", 16000),
            (6 * 4096 + 7, 2, "noise", "PCM_24", 16000),
            (5 * 4096, 2, "coarse", "PCM_S8", 8000),
        ]
    ):
        path = tmp_path / f"base{i}.flac"
        sf.write(path, signal(n, channels, kind, i), rate, subtype=subtype)
        bases.append((path.read_bytes(), rate))
    return bases


def mutate(data: bytes, rng: np.random.Generator) -> tuple[bytes, str]:
    """One random damage (sometimes two) to a FLAC stream, and what it was."""
    frames = frame_offsets(data)
    bounds = [*frames, len(data)]
    spans = [(bounds[i], bounds[i + 1]) for i in range(len(frames))]
    kind = rng.choice(["bits", "cut", "cut frame", "delete", "swap", "repeat", "junk"])
    if kind == "bits":  # anywhere, metadata included; mostly few bits
        out = bytearray(data)
        flips = rng.integers(0, len(data) * 8, int(rng.integers(1, 9)))
        for bit in flips:
            out[bit // 8] ^= 1 << (bit % 8)
        data, what = bytes(out), f"bits {sorted(flips.tolist())}"
    elif kind == "cut":
        at = int(rng.integers(1, len(data)))
        data, what = data[:at], f"cut at byte {at}"
    elif kind == "cut frame":  # at a frame boundary: nothing in the stream looks damaged
        i = int(rng.integers(0, len(frames)))
        data, what = data[: frames[i]], f"cut before frame {i}"
    elif kind == "delete":
        i = int(rng.integers(0, len(spans)))
        a, b = spans[i]
        data, what = data[:a] + data[b:], f"frame {i} deleted"
    elif kind == "swap":
        i, j = sorted(rng.choice(len(spans), 2, replace=False).tolist())
        (a, b), (c, d) = spans[i], spans[j]
        data, what = (
            data[:a] + data[c:d] + data[b:c] + data[a:b] + data[d:],
            f"frames {i}, {j} swapped",
        )
    elif kind == "repeat":
        i = int(rng.integers(0, len(spans)))
        a, b = spans[i]
        data, what = data[:b] + data[a:b] + data[b:], f"frame {i} repeated"
    else:
        at = int(rng.integers(frames[0], len(data)))
        junk = rng.bytes(int(rng.integers(1, 3000)))
        data, what = data[:at] + junk + data[at:], f"{len(junk)} junk bytes at {at}"
    if rng.random() < 0.15 and len(frame_offsets(data)) > 1:
        data, more = mutate(data, rng)
        what += f"; {more}"
    return data, what


def run_fuzz(tmp_path, n_files: int, seed: int, timeout_s: float = 20.0) -> None:
    bases = fuzz_bases(tmp_path)
    rng = np.random.default_rng(seed)
    worker = FuzzWorker(timeout_s)
    failures, compared = [], 0
    try:
        for k in range(n_files):
            data, rate = bases[k % len(bases)]
            bad, what = mutate(data, rng)
            path = tmp_path / f"fuzz{k}.flac"
            path.write_bytes(bad)
            # whole-file reads, and reads with seeks between (soundfile makes one after each)
            got = worker.decode(path, rate, 60.0 if k % 2 else 0.25)
            if isinstance(got, str):  # no answer: a crash or a hang
                failures.append(f"{what} (base {k % len(bases)}): {got}")
            elif not got[0]:
                failures.append(f"{what} (base {k % len(bases)}): {got[1]}")
            else:
                compared += got[1] == "clean"
            path.unlink()
    finally:
        worker.close()
    assert not failures, f"seed {seed}: {len(failures)} of {n_files} differ:\n" + "\n".join(
        failures
    )
    print(f"{compared} of {n_files} decoded by libsndfile: the same samples")
    assert compared > n_files // 10  # libsndfile decoded enough of them for a comparison


@needs_decoder
def test_fuzzed_files_decode_as_libsndfile_decodes_them(tmp_path):
    run_fuzz(tmp_path, n_files=300, seed=20240611)


@needs_decoder
@pytest.mark.slow
@pytest.mark.parametrize("seed", range(5))
def test_fuzzed_files_decode_as_libsndfile_decodes_them_heavier(tmp_path, seed):
    run_fuzz(tmp_path, n_files=2000, seed=seed)
