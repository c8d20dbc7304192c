"""Ingest of damaged recordings: what decodes is embedded, the file is marked partial with the
position of its damage, shown by ``chorus info``, and a rerun leaves it as it is."""

import re

import av
import numpy as np
import pytest
import soundfile as sf

import index
from embedder import audio
from explorer import cli
from explorer.ingest import embed_archive

SR = 16000
SECONDS = 12.0


def _signal(seconds: float, seed: int = 0) -> np.ndarray:
    t = np.arange(int(seconds * SR)) / SR
    rng = np.random.default_rng(seed)
    return (0.2 * np.sin(2 * np.pi * 700 * t) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32
    )


def _mp3(path, x: np.ndarray) -> None:
    """A VBR MP3 with a Xing header (it counts the frames: the exact length)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libmp3lame", rate=SR, layout="mono")
        stream.codec_context.options = {"global_quality": "590", "flags": "+qscale"}
        frame = av.AudioFrame.from_ndarray(x[None, :], format="flt", layout="mono")
        frame.sample_rate = SR
        for packet in [*stream.encode(frame), *stream.encode(None)]:
            out.mux(packet)


def _archive(root):
    """good.flac and its damaged copies (cut at 3, 50 and 95 %, a flipped byte mid-file), and a
    cut MP3 (the whole one beside the archive)."""
    root.mkdir()
    x = _signal(SECONDS)
    sf.write(root / "good.flac", x, SR, subtype="PCM_16")
    data = (root / "good.flac").read_bytes()
    for pct in (3, 50, 95):
        (root / f"cut{pct}.flac").write_bytes(data[: len(data) * pct // 100])
    flipped = bytearray(data)
    flipped[len(data) // 2] ^= 0x40
    (root / "flip.flac").write_bytes(bytes(flipped))
    _mp3(root.parent / "whole.mp3", x)
    mp3 = (root.parent / "whole.mp3").read_bytes()
    (root / "cut.mp3").write_bytes(mp3[: len(mp3) // 2])


def _damage_at(error: str) -> float:
    return float(re.search(r"damaged at (\d+\.\d\d) s", error)[1])


def _good_prefix_s(path, want: np.ndarray) -> float:
    """Seconds at the start of ``path`` that decode to the good file's samples."""
    blocks = []
    with pytest.raises(audio.PartialAudio):
        blocks.extend(audio.read_blocks(path, SR))
    got = np.concatenate(blocks, axis=1)[0]
    differ = np.flatnonzero(got[: len(want)] != want[: len(got)])
    return (differ[0] if len(differ) else min(len(got), len(want))) / SR


def test_damaged_files_are_embedded_as_far_as_they_decode_and_marked_partial(tmp_path, capsys):
    archive = tmp_path / "archive"
    _archive(archive)
    db_path = tmp_path / "db.chorus"
    s = embed_archive(archive, db_path, progress=False)
    whole = {  # what the undamaged files decode to
        "flac": sf.read(archive / "good.flac", dtype="float32")[0],
        "mp3": np.concatenate(list(audio.read_blocks(tmp_path / "whole.mp3", SR)), axis=1)[0],
    }
    assert (s.n_embedded, s.n_partial, s.n_failed) == (6, 5, 0)
    db = index.connect(db_path)
    recs = db.recordings().set_index("path")
    assert recs.loc["good.flac", "status"] == "ok"
    windows = db.windows("spectral").to_pandas()
    for name in ("cut3.flac", "cut50.flac", "cut95.flac", "flip.flac", "cut.mp3"):
        rec = recs.loc[name]
        assert rec.status == "partial", name
        at = _damage_at(rec.error)
        # the position is where the good samples end (never "near 0.00 s"), the decoded length
        # is what the file gives, and its windows end there
        good_s = _good_prefix_s(archive / name, whole[name.rsplit(".", 1)[1]])
        assert at > 0 and abs(at - good_s) < 0.05, (name, at, good_s)
        mine = windows[windows.recording_id == rec.recording_id]
        assert len(mine) and mine.end_s.max() <= rec.duration_s + 1e-6
        if name.startswith("cut") and name.endswith(".flac"):
            pct = int(name[3:-5])
            assert at <= SECONDS * pct / 100 and rec.duration_s == pytest.approx(at, abs=0.006)
    assert recs.loc["cut.mp3", "duration_s"] < 0.6 * SECONDS
    assert "the stream ends early" in recs.loc["cut.mp3", "error"]

    # a rerun: partial files are done, nothing embedded again, no window duplicated
    again = embed_archive(archive, db_path, progress=False)
    assert (again.n_embedded, again.n_skipped, again.n_windows) == (0, 6, 0)
    after = index.connect(db_path)
    assert after.windows("spectral").count_rows() == len(windows)
    assert (after.recordings().status == "partial").sum() == 5

    assert cli.main(["info", "--db", str(db_path)]) == 0
    out = capsys.readouterr().out
    assert "5 damaged (embedded as far as they decode)" in out
    assert re.search(r"partial: \S+cut50\.flac: damaged at \d+\.\d\d s \(", out)


def test_chorus_embed_lists_damaged_files_with_their_damage(tmp_path, capsys):
    root = tmp_path / "archive"
    root.mkdir()
    sf.write(root / "good.flac", _signal(SECONDS), SR, subtype="PCM_16")
    data = (root / "good.flac").read_bytes()
    (root / "cut50.flac").write_bytes(data[: len(data) // 2])
    argv = ["embed", str(root), "--db", str(tmp_path / "db.chorus"), "--no-progress"]
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if "damaged:" in line]
    assert len(lines) == 1, err
    assert re.fullmatch(r"  damaged: cut50\.flac: damaged at \d+\.\d\d s \(.+\).*", lines[0])
