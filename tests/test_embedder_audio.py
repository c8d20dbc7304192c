"""Decoding by content, resampling, channel policies and windowing of embedder.audio."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import soundfile as sf
import soxr

from embedder import audio
from embedder.audio import AudioError

SR = 16000  # Hz, native rate of most synthetic files


def decode(path, sr=SR, channels="mix", block_s=audio.BLOCK_S) -> np.ndarray:
    return np.concatenate(list(audio.read_blocks(path, sr, channels, block_s)), axis=1)  # (C, n)


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)])


# ------------------------------------------------------------------------------------- decoding

LOSSLESS = [
    ("a.wav", "WAV", "PCM_16", 1e-4),
    ("a.wav", "WAV", "PCM_U8", 1e-2),
    ("a.wav", "WAV", "FLOAT", 1e-7),
    ("a.wav", "WAV", "ALAW", 3e-2),
    ("a.wav", "WAV", "ULAW", 3e-2),
    ("a.flac", "FLAC", "PCM_16", 1e-4),
    ("a.flac", "FLAC", "PCM_24", 1e-6),
]


@pytest.mark.parametrize("name,fmt,subtype,tol", LOSSLESS)
def test_decodes_pcm_and_companded(write_audio, tone, name, fmt, subtype, tol):
    x = tone(440, 1.0, SR)
    path = write_audio(name, x, SR, format=fmt, subtype=subtype)
    info = audio.probe(path)
    assert (info.container, info.subtype, info.sample_rate, info.channels) == (fmt, subtype, SR, 1)
    assert info.frames == SR and info.duration_s == pytest.approx(1.0)
    y = decode(path)
    assert y.shape == (1, SR) and y.dtype == np.float32
    assert np.abs(y[0] - x).max() < tol


@pytest.mark.parametrize("name,fmt", [("a.ogg", "OGG"), ("a.mp3", "MP3")])
def test_decodes_lossy(write_audio, tone, name, fmt):
    x = tone(1000, 2.0, 44100)
    path = write_audio(name, x, 44100, format=fmt)
    assert audio.probe(path).container == fmt
    y = decode(path, 44100)[0]
    assert abs(len(y) - len(x)) < 2000  # codec delay/padding may differ slightly
    assert peak_hz(y, 44100) == pytest.approx(1000, abs=2)
    rms = np.sqrt(np.mean(y[4410:-4410] ** 2))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.05)


def test_content_wins_over_extension(write_audio, tone):
    x = tone(1000, 1.0, 44100)
    mp3_as_wav = write_audio("really_mp3.wav", x, 44100, format="MP3")
    wav_as_mp3 = write_audio("really_wav.mp3", x, 44100, format="WAV", subtype="PCM_16")
    flac_as_ogg = write_audio("really_flac.ogg", x, 44100, format="FLAC")
    assert audio.probe(mp3_as_wav).container == "MP3"
    assert audio.probe(wav_as_mp3).container == "WAV"
    assert audio.probe(flac_as_ogg).container == "FLAC"
    for p in (mp3_as_wav, wav_as_mp3, flac_as_ogg):
        assert peak_hz(decode(p, 44100)[0], 44100) == pytest.approx(1000, abs=2)


def test_id3_tagged_flac_is_flac(tmp_path, write_audio, tone):
    flac = write_audio("a.flac", tone(300, 0.5, SR), SR)
    tagged = tmp_path / "tagged.mp3"
    # ID3v2 header: "ID3", version 4.0, no flags, syncsafe size 16, then 16 bytes of padding
    tagged.write_bytes(b"ID3\x04\x00\x00\x00\x00\x00\x10" + bytes(16) + flac.read_bytes())
    assert audio.probe(tagged).container == "FLAC"
    assert decode(tagged).shape == (1, SR // 2)


def _bad_files(tmp_path, write_audio, tone):
    wav = write_audio("ok.wav", tone(440, 1.0, SR), SR).read_bytes()
    rng = np.random.default_rng(1)
    files = {
        "zero.wav": (b"", "empty file"),
        "trunc.wav": (wav[:30], "corrupt or truncated WAV"),
        "garbage.wav": (b"\x00" + rng.bytes(4096), "not a recognised audio format"),
        # MPEG frame sync followed by noise: looks like MP3 (as libsndfile also thinks), is not
        "fake_sync.wav": (b"\xff\xfb" + rng.bytes(4096), "corrupt or truncated MP3"),
        "garbage.mp3": (b"this is a text file, not audio\n" * 50, "not a recognised audio format"),
    }
    for name, (data, _) in files.items():
        (tmp_path / name).write_bytes(data)
    return {tmp_path / name: why for name, (_, why) in files.items()}


def test_bad_files_raise_audio_error(tmp_path, write_audio, tone):
    for path, why in _bad_files(tmp_path, write_audio, tone).items():
        for call in (
            audio.probe,
            decode,
            lambda p: audio.load(p, SR),
            lambda p: list(audio.iter_windows(p, SR, 1.0, 1.0)),
        ):
            with pytest.raises(AudioError, match=why) as err:
                call(path)
            assert str(path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(AudioError, match="cannot open"):
        audio.probe(tmp_path / "nope.wav")


def test_header_without_samples(write_audio):
    path = write_audio("empty.wav", np.zeros(0, np.float32), SR)
    assert audio.probe(path).frames == 0
    with pytest.raises(AudioError, match="no audio samples"):
        decode(path)


def test_nan_raises_when_reached_while_streaming(write_audio, noise):
    x = noise(10.0, SR)
    x[int(7.5 * SR)] = np.nan
    path = write_audio("nan.wav", x, SR, subtype="FLOAT")
    blocks = audio.read_blocks(path, SR, block_s=2.0)
    got = [next(blocks) for _ in range(3)]  # 0-6 s decode fine: the NaN is not read yet
    assert sum(b.shape[1] for b in got) == 6 * SR
    with pytest.raises(AudioError, match=r"NaN or inf\) at 7\.500 s"):
        list(blocks)
    inf = write_audio(
        "inf.wav", np.where(np.arange(len(x)) == 100, np.inf, 0.0), SR, subtype="FLOAT"
    )
    with pytest.raises(AudioError, match="non-finite"):
        list(audio.iter_windows(inf, 32000, 1.0, 1.0))


def test_finite_samples_far_beyond_full_scale_raise_where_they_are(write_audio, noise):
    """1e20 is finite but no audio: its squares overflow float32 and embedded as zero vectors."""
    x = noise(10.0, SR)
    x[int(7.5 * SR)] = 1e20
    path = write_audio("huge.wav", x, SR, subtype="FLOAT")
    with pytest.raises(AudioError, match=r"a sample beyond .* at 7\.500 s") as err:
        list(audio.read_blocks(path, SR, block_s=2.0))
    assert "1e+20" not in str(err.value)  # the position, never the file's values
    with pytest.raises(AudioError, match=r"at 7\.500 s"):
        audio.load(path, SR, start_s=7.0, end_s=8.0)
    assert audio.load(path, SR, start_s=1.0, end_s=2.0).shape == (1, SR)  # before it: fine
    # a float file at an integer scale (here 24-bit) is loud, not damaged: it reads
    scaled = write_audio("scaled.wav", noise(2.0, SR) * 2.0**23, SR, subtype="FLOAT")
    assert np.abs(np.concatenate(list(audio.read_blocks(scaled, SR)), axis=1)).max() > 1e5


def test_bad_arguments(write_audio, tone):
    path = write_audio("a.wav", tone(440, 1.0, SR), SR)
    with pytest.raises(ValueError, match="channels"):
        decode(path, channels="left")
    with pytest.raises(ValueError, match="sample_rate"):
        decode(path, sr=0)
    with pytest.raises(ValueError, match="span"):
        audio.load(path, SR, start_s=0.5, end_s=0.2)
    with pytest.raises(AudioError, match="after the end"):
        audio.load(path, SR, start_s=2.0)


# ----------------------------------------------------------------------------------- resampling


def test_resampled_tone_keeps_frequency_and_amplitude(write_audio, tone):
    path = write_audio("tone.wav", tone(1000, 3.0, 44100), 44100, subtype="FLOAT")
    y = decode(path, 32000)[0]
    assert len(y) == 3 * 32000
    assert peak_hz(y, 32000) == pytest.approx(1000, abs=0.5)
    mid = y[3200:-3200]  # away from the filter edges
    assert np.abs(mid).max() == pytest.approx(0.5, abs=0.005)
    assert np.sqrt(np.mean(mid**2)) == pytest.approx(0.5 / np.sqrt(2), rel=1e-3)


@pytest.mark.parametrize("sr_in,sr_out", [(44100, 32000), (48000, 16000), (22050, 32000)])
def test_streamed_resample_equals_one_shot(write_audio, noise, sr_in, sr_out):
    x = noise(5.3, sr_in, channels=2)
    path = write_audio("n.wav", x, sr_in, subtype="FLOAT")
    streamed = decode(path, sr_out, channels="all", block_s=0.37)  # many odd-sized blocks
    ref = soxr.resample(x, sr_in, sr_out, quality=audio.RESAMPLE_QUALITY).T  # (C, n)
    assert streamed.shape == ref.shape
    np.testing.assert_allclose(streamed, ref, atol=1e-6)


def test_same_rate_is_passthrough(write_audio, noise):
    x = noise(2.0, SR)
    path = write_audio("n.wav", x, SR, subtype="FLOAT")
    np.testing.assert_array_equal(decode(path, SR, block_s=0.3)[0], x)


# ------------------------------------------------------------------------------ channel policies


def test_channel_policies(write_audio, tone):
    left, right = tone(440, 1.0, SR, amp=0.4), tone(880, 1.0, SR, amp=0.2)
    path = write_audio("st.wav", np.stack([left, right], axis=1), SR, subtype="FLOAT")
    assert audio.probe(path).channels == 2
    np.testing.assert_allclose(decode(path, channels="mix")[0], (left + right) / 2, atol=1e-6)
    np.testing.assert_array_equal(decode(path, channels="first")[0], left)
    np.testing.assert_array_equal(decode(path, channels="all"), np.stack([left, right]))
    batches = list(audio.iter_windows(path, SR, 0.5, 0.5, channels="all"))
    assert [b.channel for b in batches] == [0, 1]
    np.testing.assert_array_equal(batches[1].audio[1], right[SR // 2 :])
    assert [b.channel for b in audio.iter_windows(path, SR, 0.5, 0.5, channels="mix")] == [-1]
    assert [b.channel for b in audio.iter_windows(path, SR, 0.5, 0.5, channels="first")] == [0]


# ------------------------------------------------------------------------------------ windowing


def ramp(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32)


@pytest.mark.parametrize(
    "dur,win,hop,tail,starts",
    [
        (12.0, 5.0, 5.0, 1.0, [0, 5, 10]),  # 2 s tail >= 1 s: padded
        (10.5, 5.0, 5.0, 1.0, [0, 5]),  # 0.5 s tail dropped
        (10.5, 5.0, 5.0, 0.25, [0, 5, 10]),  # ... kept with a smaller min_tail
        (10.0, 5.0, 5.0, 1.0, [0, 5]),  # exact fit, no tail
        (7.5, 5.0, 1.0, 1.0, [0, 1, 2]),  # overlap: 0.5 s uncovered after 2-7 s
        (7.5, 5.0, 1.0, 0.5, [0, 1, 2, 3]),  # ... kept with min_tail 0.5: padded window at 3
        (17.0, 5.0, 7.0, 1.0, [0, 7, 14]),  # hop > window: gaps skipped, 3 s tail at 14
        (12.5, 5.0, 7.0, 1.0, [0, 7]),  # hop > window, next start 14 past end
        (3.0, 5.0, 5.0, 1.0, [0]),  # shorter than a window: one padded window
        (0.2, 5.0, 5.0, 1.0, [0]),  # ... even below min_tail
    ],
)
def test_frame_arithmetic(dur, win, hop, tail, starts):
    sr = 100
    x = ramp(int(dur * sr)) + 1  # +1 so zero padding is distinguishable
    starts_s, windows = audio.frame(x, sr, win, hop, min_tail_s=tail)
    np.testing.assert_allclose(starts_s, starts)
    assert windows.shape == (len(starts), int(win * sr)) and windows.dtype == np.float32
    for s, w in zip(starts_s, windows, strict=True):
        i = int(round(s * sr))
        valid = min(len(x) - i, len(w))
        np.testing.assert_array_equal(w[:valid], x[i : i + valid])
        assert not w[valid:].any()  # zero padding


def test_frame_fractional_hop_does_not_drift():
    starts_s, _ = audio.frame(np.zeros(1000 * 1000, np.float32), 1000, 1.0, 1 / 3)
    np.testing.assert_allclose(starts_s, np.arange(len(starts_s)) / 3, atol=0.5e-3)
    assert len(starts_s) == 2998  # last full start 998.67 + 1 <= 1000


def test_frame_empty_and_bad_args():
    starts_s, windows = audio.frame(np.zeros(0, np.float32), 100, 1.0, 1.0)
    assert starts_s.shape == (0,) and windows.shape == (0, 100)
    with pytest.raises(ValueError):
        audio.frame(np.zeros((10, 2)), 100, 1.0, 1.0)
    with pytest.raises(ValueError):
        audio.frame(np.zeros(10), 100, 1.0, 0.0)


@pytest.mark.parametrize("hop", [0.75, 2.0, 3.0, 7.3])
def test_streaming_windows_equal_framing_whole_file(write_audio, chirp, hop):
    sr_in, sr = 22050, 16000
    x = chirp(200, 5000, 23.7, sr_in)
    path = write_audio("c.flac", x, sr_in, subtype="PCM_24")
    whole = decode(path, sr)[0]
    starts_s, windows = audio.frame(whole, sr, 3.0, hop, min_tail_s=0.5)
    # small blocks and batches so windows straddle block and batch boundaries
    batches = list(
        audio.iter_windows(path, sr, 3.0, hop, min_tail_s=0.5, max_windows=4, block_s=1.3)
    )
    assert all(1 <= len(b) <= 4 and b.channel == -1 for b in batches)
    np.testing.assert_array_equal(np.concatenate([b.start_s for b in batches]), starts_s)
    np.testing.assert_array_equal(np.concatenate([b.audio for b in batches]), windows)
    end_s = np.concatenate([b.end_s for b in batches])
    np.testing.assert_allclose(end_s, np.minimum(starts_s + 3.0, len(whole) / sr))


@pytest.mark.parametrize("block_s", [0.9, 3.0, 7.1, 60.0])
def test_adjacent_windows_equal_framing_whole_file(write_audio, noise, block_s):
    # hop == window: runs of windows inside a decoded block are handed out as views of it
    sr = 16000
    x = noise(31.3, sr, amp=0.3, channels=2, seed=3)
    path = write_audio("n.flac", x, sr, subtype="PCM_24")
    whole = decode(path, sr, channels="all")  # (2, n)
    batches = list(
        audio.iter_windows(path, sr, 2.0, 2.0, channels="all", max_windows=5, block_s=block_s)
    )
    assert all(1 <= len(b) <= 5 for b in batches)
    for c in (0, 1):
        mine = [b for b in batches if b.channel == c]
        starts_s, windows = audio.frame(whole[c], sr, 2.0, 2.0)
        np.testing.assert_array_equal(np.concatenate([b.start_s for b in mine]), starts_s)
        np.testing.assert_array_equal(np.concatenate([b.audio for b in mine]), windows)
        end_s = np.concatenate([b.end_s for b in mine])
        np.testing.assert_allclose(end_s, np.minimum(starts_s + 2.0, whole.shape[1] / sr))
    times = [b.start_s[0] for b in batches]
    assert times == sorted(times)  # time order kept across runs and copied windows


def test_short_file_gives_one_padded_window(write_audio, tone):
    x = tone(440, 0.3, SR)
    path = write_audio("short.wav", x, SR, subtype="FLOAT")
    (batch,) = audio.iter_windows(path, SR, 5.0, 5.0)
    assert batch.audio.shape == (1, 5 * SR)
    np.testing.assert_array_equal(batch.audio[0, : len(x)], x)
    assert not batch.audio[0, len(x) :].any()
    assert batch.start_s.tolist() == [0.0] and batch.end_s.tolist() == [pytest.approx(0.3)]


# ----------------------------------------------------------------------------------------- load


@pytest.mark.parametrize(
    "fmt,sr_in,sr_out",
    [("WAV", 44100, 32000), ("FLAC", 48000, 32000), ("WAV", 32000, 32000), ("MP3", 44100, 32000)],
)
def test_load_span_equals_slice_of_full_decode(write_audio, chirp, fmt, sr_in, sr_out):
    x = np.stack([chirp(300, 6000, 8.0, sr_in), chirp(6000, 300, 8.0, sr_in)], axis=1)
    path = write_audio("c.bin", x, sr_in, format=fmt)
    full = decode(path, sr_out, channels="all")  # (2, n)
    for s, e in [(0.0, 1.0), (2.37, 4.9), (6.5, None), (7.2, 99.0)]:
        span = audio.load(path, sr_out, channels="all", start_s=s, end_s=e)
        i0 = round(s * sr_out)
        i1 = full.shape[1] if e is None else min(round(e * sr_out), full.shape[1])
        assert span.shape == (2, i1 - i0)
        np.testing.assert_allclose(span, full[:, i0:i1], atol=1e-5)
    mix = audio.load(path, sr_out, start_s=1.0, end_s=2.0)
    assert mix.shape == (1, sr_out)


def test_load_reads_only_the_span(write_audio, noise, monkeypatch):
    path = write_audio("long.wav", noise(120.0, SR), SR, subtype="PCM_16")
    read = []
    orig = sf.SoundFile.read

    def counting_read(self, *args, **kwargs):
        out = orig(self, *args, **kwargs)
        read.append(len(out))
        return out

    monkeypatch.setattr(sf.SoundFile, "read", counting_read)
    span = audio.load(path, SR, start_s=100.0, end_s=105.0)
    assert span.shape == (1, 5 * SR)
    assert sum(read) == 5 * SR  # seeked, not decoded from the start


def test_streaming_memory_does_not_grow_with_the_file(write_audio, noise):
    path = write_audio("long.wav", noise(600.0, SR), SR, subtype="PCM_16")  # 38 MB as float32
    tracemalloc.start()
    try:
        n = sum(len(b) for b in audio.iter_windows(path, SR, 1.0, 1.0, max_windows=8, block_s=5.0))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert n == 600
    assert peak < 3e6  # bytes: a few blocks and one batch, not the 38 MB file


@pytest.mark.parametrize("seconds", [0.3, 4.99, 5.0, 5.5, 6.0, 12.0, 12.9, 37.25])
@pytest.mark.parametrize("hop_s", [1.0, 2.5, 5.0, 7.0])
def test_count_windows_matches_frame(seconds, hop_s):
    sr = 1000
    n = int(seconds * sr)
    starts, _ = audio.frame(np.ones(n, np.float32), sr, 5.0, hop_s)
    assert audio.count_windows(n, sr, 5.0, hop_s) == len(starts)


def test_many_channels_get_blocks_bounded_in_samples_not_seconds(tmp_path, monkeypatch):
    # a 64-channel 96 kHz hour would take 1.5 GB per 60 s block: blocks and batches are sized in
    # samples x channels instead (here a small cap stands in for the real 64 MB one)
    channels, sr, cap = 64, 8000, 64 * 1000
    x = (0.1 * np.random.default_rng(3).standard_normal((2 * sr, channels))).astype(np.float32)
    path = tmp_path / "many.wav"
    sf.write(path, x, sr, subtype="FLOAT")
    monkeypatch.setattr(audio, "MAX_BLOCK_SAMPLES", cap)
    assert audio.block_frames(60.0, sr, channels) == 1000
    assert audio.block_frames(60.0, sr, 1) == cap  # one channel: 8 s of 60
    for policy in ("mix", "all"):
        blocks = list(audio.read_blocks(path, sr, policy))  # (C', n) each
        assert max(b.shape[1] for b in blocks) * channels <= cap
        want = x.mean(axis=1, keepdims=True, dtype=np.float32) if policy == "mix" else x
        np.testing.assert_array_equal(np.concatenate(blocks, axis=1), want.T)
    batches = list(audio.iter_windows(path, sr, 0.1, 0.1, channels="all"))  # 800-sample windows
    assert max(len(b) for b in batches) * channels * 800 <= cap
    got = [b for b in batches if b.channel == 5]
    np.testing.assert_array_equal(np.concatenate([b.audio for b in got]), x[:, 5].reshape(20, 800))
