"""Formats FFmpeg decodes (MP3, M4A/AAC, Opus in WebM, WMA, video files' audio), made here with PyAV:
decoded whole, counted exactly, cut into spans exactly, and ingested with their decoded durations."""

from __future__ import annotations

import struct

import av
import numpy as np
import pytest
import soundfile as sf

import index
from embedder import audio
from explorer.ingest import embed_archive
from index.labels import add_label

SR = 48000  # Hz; every codec here takes it (WMA too)


def encode(
    path,
    x: np.ndarray,
    sr: int,
    codec: str,
    fmt: str | None = None,
    muxer_options: dict | None = None,
    codec_options: dict | None = None,
    bit_rate: int | None = None,
    video: bool = False,
):
    """Write ``x`` (``(n,)`` or ``(n, C)`` float32) with FFmpeg's ``codec`` into ``path``; with
    ``video``, a small MPEG-4 video stream goes first, as in a camera's file."""
    x = np.asarray(x, np.float32).reshape(len(x), -1)  # (n, C)
    layout = "mono" if x.shape[1] == 1 else "stereo"
    with av.open(str(path), "w", format=fmt, options=muxer_options or {}) as out:
        if video:
            vs = out.add_stream("mpeg4", rate=10)
            vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        st = out.add_stream(codec, rate=sr, layout=layout, options=codec_options or {})
        if bit_rate:
            st.codec_context.bit_rate = bit_rate
        st.codec_context.open()
        step = st.codec_context.frame_size or 1024
        if not st.codec_context.codec.capabilities & av.codec.Capabilities.small_last_frame:
            x = np.concatenate([x, np.zeros((-len(x) % step, x.shape[1]), np.float32)])  # as ffmpeg
        pictures = 0
        for i in range(0, len(x), step):
            planar = np.ascontiguousarray(x[i : i + step].T)  # (C, m)
            frame = av.AudioFrame.from_ndarray(planar, format="fltp", layout=layout)
            frame.sample_rate = sr
            for packet in st.encode(frame):
                out.mux(packet)
            while video and pictures < (i + step) / sr * 10:
                picture = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), "rgb24")
                picture.pts, pictures = pictures, pictures + 1
                for packet in vs.encode(picture):
                    out.mux(packet)
        for packet in st.encode(None):
            out.mux(packet)
        if video:
            for packet in vs.encode(None):
                out.mux(packet)
    return path


def material(seconds: float, sr: int, channels: int = 1) -> np.ndarray:
    """A loud noise burst (large first frames in VBR codecs), a quiet 1 kHz tone, and a 3 kHz tone
    in the last second, so that a decode cut short shows."""
    n = int(seconds * sr)
    t = np.arange(n) / sr
    x = 0.05 * np.sin(2 * np.pi * 1000 * t)
    x[: sr // 2] += 0.8 * np.random.default_rng(1).standard_normal(sr // 2)
    x[-sr:] = 0.5 * np.sin(2 * np.pi * 3000 * t[-sr:])
    x = np.clip(x, -1, 1).astype(np.float32)
    return np.stack([x, 0.5 * x], axis=1) if channels == 2 else x


def peak_hz(x: np.ndarray, sr: int) -> float:
    spec = np.abs(np.fft.rfft(x * np.hanning(len(x))))
    return float(np.fft.rfftfreq(len(x), 1 / sr)[np.argmax(spec)])


def decode(path, sr: int, channels: str = "all", block_s: float = audio.BLOCK_S) -> np.ndarray:
    return np.concatenate(list(audio.read_blocks(path, sr, channels, block_s)), axis=1)  # (C, n)


VBR_MP3 = {"global_quality": "590", "flags": "+qscale"}  # LAME -q 5: frames vary in size
NO_XING = {"write_xing": "0"}  # no Xing/LAME header: no length, no gapless trimming
# name, codec, muxer, muxer options, codec options, bit rate, video: container, subtype
CASES = {
    "aac.m4a": ("aac", "mp4", None, None, None, False, "MP4", "AAC"),
    "adts.aac": ("aac", "adts", None, None, None, False, "AAC", "AAC"),
    "opus.webm": ("libopus", "webm", None, None, None, False, "MATROSKA", "OPUS"),
    "opus.ogg": ("libopus", "ogg", None, None, None, False, "OGG", "OPUS"),
    "wma.wma": ("wmav2", "asf", None, None, 128000, False, "ASF", "WMAV2"),
    "cbr.mp3": ("libmp3lame", "mp3", None, None, 128000, False, "MP3", "MP3"),
    "vbr_no_xing.mp3": ("libmp3lame", "mp3", NO_XING, VBR_MP3, None, False, "MP3", "MP3"),
    "mp3_in.wav": ("libmp3lame", "wav", None, None, 64000, False, "WAV", "MP3"),
    "video.mp4": ("aac", "mp4", None, None, None, True, "MP4", "AAC"),
    "video.mkv": ("libopus", "matroska", None, None, None, True, "MATROSKA", "OPUS"),
}


def make(tmp_path, name: str, seconds: float = 3.3, channels: int = 1):
    codec, fmt, mux, opts, rate, video, *_ = CASES[name]
    x = material(seconds, SR, channels)
    path = encode(tmp_path / name, x, SR, codec, fmt, mux, opts, rate, video)
    return path, x


@pytest.mark.parametrize("name", list(CASES))
def test_every_format_decodes_whole_and_counts_exactly(tmp_path, name):
    path, x = make(tmp_path, name, channels=2)
    container, subtype = CASES[name][-2:]
    info = audio.probe(path)
    assert (info.container, info.subtype, info.sample_rate, info.channels) == (
        container,
        subtype,
        SR,
        2,
    )
    y = decode(path, SR, block_s=0.37)  # (2, n), many odd-sized blocks
    assert info.frames == y.shape[1]  # the count is what decodes ...
    assert info.duration_s == y.shape[1] / SR
    # ... all of it: codecs add a delay and pad the last frame (WMA's first packet only primes its
    # decoder, and FFmpeg's encoder does not make up for it: one 2048-sample frame less)
    least = len(x) - (2048 if name == "wma.wma" else 0)
    assert least <= info.frames <= len(x) + 4 * 1152
    assert peak_hz(y[0, -SR // 2 :], SR) == pytest.approx(3000, abs=5)
    rms = np.sqrt(np.mean(y[0, -SR // 2 :] ** 2))
    assert rms == pytest.approx(0.5 / np.sqrt(2), rel=0.1)
    np.testing.assert_array_equal(decode(path, SR, block_s=60), y)  # blocks leave no trace
    mix = decode(path, 32000, "mix")  # (1, m)
    assert abs(mix.shape[1] - round(info.frames * 32000 / SR)) <= 1


@pytest.mark.parametrize(
    "name", ["aac.m4a", "vbr_no_xing.mp3", "opus.webm", "opus.ogg", "wma.wma", "video.mp4"]
)
def test_spans_of_compressed_files_equal_the_whole_decode_cut(tmp_path, name):
    path, _ = make(tmp_path, name, seconds=6.2, channels=2)
    for sr in (SR, 32000):
        whole = decode(path, sr)  # (2, n)
        for s, e in [(0.0, 0.5), (1.013, 2.4), (4.0, None), (5.9, 99.0)]:
            span = audio.load(path, sr, "all", s, e)
            i0 = round(s * sr)
            i1 = whole.shape[1] if e is None else min(round(e * sr), whole.shape[1])
            assert span.shape == (2, i1 - i0)
            if sr == SR:  # native rate: the very same samples
                np.testing.assert_array_equal(span, whole[:, i0:i1])
            else:  # a resampler started elsewhere: float rounding apart
                np.testing.assert_allclose(span, whole[:, i0:i1], atol=1e-5)
    with pytest.raises(audio.AudioError, match="after the end"):
        audio.load(path, SR, start_s=whole.shape[1] / 32000 + 0.01)


def test_vbr_mp3_without_xing_header_is_the_tagged_decode_shifted(tmp_path):
    # without a Xing header the decoder keeps the encoder delay (576 + 529 samples) and the padding,
    # and nothing else differs: the same frames decoded
    sr = 22050
    x = material(8.0, sr)
    tagged = encode(tmp_path / "tagged.mp3", x, sr, "libmp3lame", "mp3", None, VBR_MP3)
    bare = encode(tmp_path / "bare.mp3", x, sr, "libmp3lame", "mp3", NO_XING, VBR_MP3)
    assert b"Xing" in tagged.read_bytes()[:2000] and b"Xing" not in bare.read_bytes()
    ref, y = decode(tagged, sr)[0], decode(bare, sr)[0]
    assert len(ref) == len(x) and audio.probe(bare).frames == len(y) >= len(x) + 1105
    np.testing.assert_array_equal(y[1105 : 1105 + len(ref)], ref)


def test_headers_that_lie_about_the_length(tmp_path):
    # an MP3 whose Xing header claims twice its frames, a WAV whose data chunk claims twice its
    # bytes (a recorder that lost power): what decodes counts
    mp3 = encode(tmp_path / "a.mp3", material(3.0, SR), SR, "libmp3lame", "mp3", None, VBR_MP3)
    raw = bytearray(mp3.read_bytes())
    at = raw.index(b"Xing") + 8
    raw[at : at + 4] = struct.pack(">I", 2 * struct.unpack(">I", raw[at : at + 4])[0])
    mp3.write_bytes(bytes(raw))
    with av.open(str(mp3)) as c:
        assert c.duration / av.time_base > 5.5  # what the header says
    wav = tmp_path / "a.wav"
    sf.write(wav, material(3.0, SR), SR, subtype="PCM_16")
    raw = bytearray(wav.read_bytes())
    at = raw.index(b"data") + 4
    raw[at : at + 4] = struct.pack("<I", 2 * struct.unpack("<I", raw[at : at + 4])[0])
    wav.write_bytes(bytes(raw))
    for path in (mp3, wav):
        info = audio.probe(path)
        blocks = []
        try:  # the MP3's exact header length (Xing) says the stream ended early: partial
            blocks.extend(audio.read_blocks(path, SR, "all"))
        except audio.PartialAudio as err:
            assert path == mp3 and err.damage.at_s == err.duration_s == info.duration_s
            assert "the stream ends early: its header says 6.02 s" in str(err)
        y = np.concatenate(blocks, axis=1)
        assert info.frames == y.shape[1] and 3.0 <= info.duration_s < 3.1


def test_ingest_stores_decoded_durations_and_windows(tmp_path):
    archive = tmp_path / "archive"
    archive.mkdir()
    paths = [make(archive, name, seconds=11.3)[0] for name in CASES]
    summary = embed_archive(archive, tmp_path / "db.chorus", model="spectral", progress=False)
    assert (summary.n_failed, summary.n_embedded) == (0, len(CASES))
    db = index.connect(tmp_path / "db.chorus")
    recs = db.recordings().set_index("path")
    windows = db.windows("spectral").to_pandas()
    for path in paths:
        rec = recs.loc[path.name]
        n_native = decode(path, SR).shape[1]
        assert rec.duration_s == n_native / SR, path.name  # counted, not the header's word
        n = decode(path, 32000, "mix").shape[1]
        mine = windows[windows.recording_id == rec.recording_id]
        assert len(mine) == audio.count_windows(n, 32000, 5.0, 5.0), path.name
        assert mine.end_s.max() == pytest.approx(rec.duration_s, abs=1 / 32000)
        last = mine.sort_values("start_s").iloc[-1]
        add_label(db, rec.recording_id, last.start_s, last.end_s, "owl")  # within the duration


def test_files_without_audio_are_refused_clearly(tmp_path):
    video_only = tmp_path / "silent.mp4"
    with av.open(str(video_only), "w") as out:
        vs = out.add_stream("mpeg4", rate=10)
        vs.width, vs.height, vs.pix_fmt = 64, 48, "yuv420p"
        for i in range(5):
            picture = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), "rgb24")
            picture.pts = i
            for packet in vs.encode(picture):
                out.mux(packet)
        for packet in vs.encode(None):
            out.mux(packet)
    with pytest.raises(audio.AudioError, match="no audio stream in this MP4 file"):
        audio.probe(video_only)
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(make(tmp_path, "aac.m4a")[0].read_bytes()[:200])
    with pytest.raises(audio.AudioError, match="corrupt or truncated MP4"):
        audio.probe(cut)


def test_an_unrecognised_file_is_named_without_echoing_its_bytes(tmp_path):
    # a link to /etc/passwd named .wav once showed its first 8 bytes as hex in a warning
    path = tmp_path / "secret.wav"
    path.write_bytes(b"root:x:0:0:root:/root:/bin/bash\n" * 4)
    with pytest.raises(audio.AudioError) as caught:
        audio.probe(path)
    message = str(caught.value)
    assert "not a recognised audio format" in message
    assert "72 6f 6f 74" not in message and "root:x" not in message


def test_a_cut_mp3_leaves_no_library_notes_on_stderr(tmp_path, capfd):
    """libsndfile's mpg123 prints "Warning: Xing stream size off ..." straight to descriptor 2 on
    opening a cut MP3: our one damage line is all a user should see."""
    mp3 = encode(tmp_path / "a.mp3", material(3.0, SR), SR, "libmp3lame", "mp3", None, VBR_MP3)
    mp3.write_bytes(mp3.read_bytes()[: mp3.stat().st_size // 2])
    capfd.readouterr()
    with pytest.raises(audio.PartialAudio):
        list(audio.read_blocks(mp3, SR, "all"))
    assert "Xing" not in capfd.readouterr().err
