"""Streamlit-free parts of the explorer: audio access under the registered roots, search filters,
window tables and the explore command line."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

from explorer.app import audio_access, backend, label_ops
from explorer.commands.explore import streamlit_command

SR = 16000  # Hz


@pytest.fixture
def archive(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    t = np.arange(3 * SR) / SR
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), 0.5 * np.sin(2 * np.pi * 880 * t)], axis=1)
    sf.write(root / "rec.wav", stereo.astype(np.float32), SR)
    outside = tmp_path / "secret.wav"
    sf.write(outside, stereo.astype(np.float32), SR)
    return root, outside


def test_safe_path_accepts_files_under_a_root(archive):
    root, _ = archive
    roots = audio_access.audio_roots({"audio_roots": [str(root)]})
    assert audio_access.safe_path(root / "rec.wav", roots) == (root / "rec.wav").resolve()


def test_safe_path_refuses_outside_dotdot_and_symlinks(archive):
    root, outside = archive
    roots = audio_access.audio_roots({"audio_roots": [str(root)]})
    with pytest.raises(audio_access.AudioAccessError, match="not under the database's audio roots"):
        audio_access.safe_path(outside, roots)
    with pytest.raises(audio_access.AudioAccessError, match="not under"):
        audio_access.safe_path(root / ".." / "secret.wav", roots)
    # a link leading out of the roots opens nothing, unless an embed with --follow-links read
    # it and chorus.json declares its target
    (root / "link.wav").symlink_to(outside)
    with pytest.raises(audio_access.AudioAccessError, match="a link leading out"):
        audio_access.safe_path(root / "link.wav", roots)
    followed = audio_access.audio_roots(
        {"audio_roots": [str(root)], "link_targets": [str(outside)]}
    )
    assert audio_access.safe_path(root / "link.wav", followed) == root / "link.wav"
    # a link to / in a root and a planted row through it: refused, nothing read or shown
    (root / "slash").symlink_to("/", target_is_directory=True)
    with pytest.raises(audio_access.AudioAccessError, match="a link leading out") as err:
        audio_access.read_span(root / "slash" / "etc" / "passwd", followed, 0.0, 1.0, 8000)
    assert "root:" not in str(err.value)
    with pytest.raises(audio_access.AudioAccessError, match="not under"):
        audio_access.safe_path(root / ".." / ".." / "etc" / "passwd", followed)
    with pytest.raises(audio_access.AudioAccessError, match="missing"):
        audio_access.safe_path(root / "gone.wav", roots)
    with pytest.raises(audio_access.AudioAccessError, match="not under"):
        audio_access.safe_path(root / "rec.wav", [])


def test_read_span_channels_rate_and_limits(archive):
    root, outside = archive
    roots = [root.resolve()]
    mix = audio_access.read_span(root / "rec.wav", roots, 1.0, 2.0, 8000)
    assert mix.shape == (8000,) and mix.dtype == np.float32
    right = audio_access.read_span(root / "rec.wav", roots, 1.0, 2.0, 8000, channel=1)
    spectrum = np.abs(np.fft.rfft(right))
    assert abs(spectrum.argmax() * 8000 / len(right) - 880) < 5  # channel 1 holds the 880 Hz tone
    with pytest.raises(audio_access.AudioAccessError, match="longer than"):
        audio_access.read_span(root / "rec.wav", roots, 0.0, audio_access.MAX_CLIP_S + 1, 8000)
    with pytest.raises(audio_access.AudioAccessError, match="bad span"):
        audio_access.read_span(root / "rec.wav", roots, 2.0, 1.0, 8000)
    with pytest.raises(audio_access.AudioAccessError, match="not under"):
        audio_access.read_span(outside, roots, 0.0, 1.0, 8000)


def test_time_filter_sql():
    assert backend.time_filter() is None
    assert backend.time_filter([], (), (0, 24)) is None
    where = backend.time_filter(["A", "O'Hare"], (pd.Timestamp("2024-06-10"), "2024-06-11"), (4, 9))
    assert where == (
        "site IN ('A', 'O''Hare') AND date >= date '2024-06-10' AND date <= date '2024-06-11'"
        " AND hour >= 4 AND hour < 9"
    )


def test_with_recordings_adds_hour_and_date():
    windows = pd.DataFrame({"window_id": [1, 2], "recording_id": [7, 8], "start_s": [90.0, 5.0]})
    recs = pd.DataFrame(
        {
            "recording_id": [7, 8],
            "path": ["a.wav", "b.wav"],
            "abs_path": ["/x/a.wav", "/x/b.wav"],
            "site": ["A", None],
            "start_time": [pd.Timestamp("2024-06-10 23:59:00"), pd.NaT],
        }
    )
    out = backend.with_recordings(windows, recs)
    assert out.loc[0, "hour"] == 0  # 23:59 + 90 s = 00:00:30 next day: hour 0
    assert str(out.loc[0, "date"]) == "2024-06-11"
    assert np.isnan(out.loc[1, "hour"]) and out.loc[1, "path"] == "b.wav"


def test_run_search_needs_a_positive():
    q = backend.Query("negative", "x", np.ones(4, np.float32))
    with pytest.raises(ValueError, match="at least one positive"):
        backend.run_search(None, "m", [q])


def test_streamlit_command_binds_localhost_and_sets_limits(tmp_path):
    cmd = streamlit_command(tmp_path / "s.chorus", port=9000, max_upload_mb=7)
    opts = dict(zip(cmd[5:-3:2], cmd[6:-3:2], strict=True))
    assert cmd[1:4] == ["-m", "streamlit", "run"] and cmd[4].endswith("explorer/app/main.py")
    assert opts["--server.address"] == "127.0.0.1" and opts["--server.port"] == "9000"
    assert opts["--server.headless"] == "true" and opts["--server.maxUploadSize"] == "7"
    assert opts["--browser.gatherUsageStats"] == "false"
    assert cmd[-3:] == ["--", "--db", str((tmp_path / "s.chorus").resolve())]
    assert streamlit_command("x", host="0.0.0.0")[6] == "0.0.0.0"


def test_explore_without_a_database_is_a_usage_error(tmp_path, capsys):
    from explorer.cli import main

    assert main(["explore", "--db", str(tmp_path / "none.chorus")]) == 2
    assert "no Chorus database" in capsys.readouterr().err


def test_a_probe_is_only_applied_to_its_own_models_windows(tmp_path):
    from agile_synth import MODEL, make_synth_db

    from index.labels import add_label

    synth = make_synth_db(tmp_path, n_recordings=4, windows_per_recording=20)
    for t in synth.truth.query("call_type == 'owl'").itertuples():
        add_label(synth.db, int(t.recording_id), t.start_s, t.end_s, "owl")
    probe_id = backend.train_probe(synth.db, MODEL, "owl", weak_weight=0.05, precision=0.9)
    ids, vecs = synth.db.vectors(MODEL, synth.windows["window_id"].to_numpy())
    assert (ids == synth.windows["window_id"].to_numpy()).all()
    other = synth.windows[["recording_id", "start_s", "end_s"]].assign(vector=list(vecs))
    synth.db.add_embeddings("other", other)

    scores = backend.archive_scores(synth.db, MODEL, probe_id)
    assert len(scores) == len(synth.windows) and scores["score"].between(0, 1).all()
    with pytest.raises(
        ValueError, match=f"probe {probe_id} was trained on 'synth', not on 'other'"
    ):
        backend.archive_scores(synth.db, "other", probe_id)
    with pytest.raises(ValueError, match="trained on 'synth'"):
        backend.review_queue(synth.db, "other", probe_id, "top", 5)
    with pytest.raises(ValueError, match="trained on 'synth'"):
        backend.probe_scores(synth.db, "other", probe_id, vecs)


def test_map_labels_show_the_most_recent_name(tmp_path):
    from agile_synth import MODEL, make_synth_db

    synth = make_synth_db(tmp_path, n_recordings=1, windows_per_recording=4)
    rows = backend.windows_by_id(synth.db, MODEL, synth.windows["window_id"].tolist())
    label_ops.write_labels(synth.db, rows.iloc[[0]], "owl", "positive", "user:me")
    label_ops.write_labels(synth.db, rows.iloc[[1]], "wren", "positive", "user:me")
    label_ops.write_labels(synth.db, rows.iloc[[1]], "owl", "positive", "user:me")  # later: shown
    got = backend.window_labels(synth.db, MODEL, rows)
    assert got["label"].tolist() == ["owl", "owl", None, None]


def test_the_default_date_range_filters_nothing():
    # undated recordings and windows after midnight of the last day are not lost by a search
    # whose date box was left as the page fills it
    days = (pd.Timestamp("2024-06-10").date(), pd.Timestamp("2024-06-11").date())
    assert backend.time_filter(None, days, (0, 24), all_dates=days) is None
    narrowed = (days[0], days[0])
    assert "date <= date '2024-06-10'" in backend.time_filter(None, narrowed, (0, 24), days)


def test_damaged_audio_is_an_access_error_not_a_crash(archive):
    root, _ = archive
    (root / "bad.wav").write_bytes(b"this is not audio" * 100)
    roots = audio_access.audio_roots({"audio_roots": [str(root)]})
    with pytest.raises(audio_access.AudioAccessError, match="not a recognised audio format"):
        audio_access.read_span(root / "bad.wav", roots, 0.0, 1.0, SR)
    with pytest.raises(audio_access.AudioAccessError, match="after the end"):
        audio_access.read_span(root / "rec.wav", roots, 25.0, 26.0, SR)


def test_cached_clips_follow_a_replaced_file(archive, monkeypatch):
    import logging
    import os

    import streamlit as st

    from explorer.app import state

    logging.getLogger("streamlit").setLevel(logging.ERROR)  # bare mode: no script context
    root, _ = archive
    wav = root / "replaced.wav"
    sf.write(wav, np.full(SR * 6, 0.5, np.float32), SR)
    monkeypatch.setattr(state, "roots", lambda: [root.resolve()])
    span = ("db", str(wav), 0.0, 5.0, -1, SR)
    first = state.clip(*span, audio_access.file_stamp(wav))
    sf.write(wav, np.zeros(SR * 6, np.float32), SR)  # re-exported by the user
    os.utime(wav, ns=(0, os.stat(wav).st_mtime_ns + 10**9))
    again = state.clip(*span, audio_access.file_stamp(wav))
    assert np.abs(first).max() == pytest.approx(0.5) and np.abs(again).max() == 0.0
    st.cache_data.clear()


def test_a_card_band_above_the_recordings_nyquist_draws_its_whole_range(archive, monkeypatch):
    import logging

    import streamlit as st
    from PIL import Image

    from explorer.app import state

    logging.getLogger("streamlit").setLevel(logging.ERROR)  # bare mode: no script context
    root, _ = archive
    wav = root / "low_rate.wav"
    sf.write(wav, np.full(SR * 6, 0.5, np.float32), SR)
    monkeypatch.setattr(state, "roots", lambda: [root.resolve()])
    span = ("db", str(wav), 0.0, 5.0, -1, SR, audio_access.file_stamp(wav))
    above = (SR / 1000.0, SR / 500.0)  # kHz: from Nyquist up (a higher-rate file's band)
    png = state.card_png(*span, above)
    assert png == state.card_png(*span, None)
    assert Image.open(io.BytesIO(png)).size[0] > 0
    st.cache_data.clear()


def test_the_cache_version_follows_recordings_too(tmp_path):
    from agile_synth import MODEL, make_synth_db

    synth = make_synth_db(tmp_path, n_recordings=1, windows_per_recording=3)
    before = backend.table_version(synth.db, MODEL)
    rec = synth.db.recording(0)
    synth.db.upsert_recording(rec["audio_root"], rec["path"], site="RENAMED")
    assert backend.table_version(synth.db, MODEL) != before  # maps and cards show the new site


def test_classify_page_notes_say_when_the_target_is_unreachable_or_too_uncertain():
    m = {"threshold": 0.2, "precision": 0.667, "recall": 0.5, "target_precision": 0.9}
    notes = backend.metric_notes(
        "owl",
        {
            **m,
            "target_reached": False,
            "uncertain": True,
            "why_uncertain": "positives in only 2 recording(s)",
        },
    )
    assert notes[0].startswith("owl: target precision 0.9 is unreachable; the best")
    assert "0.667" in notes[0] and "threshold 0.200" in notes[0]
    assert "too uncertain to trust (positives in only 2 recording(s))" in notes[1]
    assert backend.metric_notes("owl", {**m, "target_reached": True, "uncertain": False}) == []
    assert backend.metric_notes("owl", {}) == []  # probes stored before these fields


def test_search_leaves_out_the_query_spans_own_windows_unless_asked(tmp_path):
    from agile_synth import MODEL, make_synth_db

    synth = make_synth_db(tmp_path, n_recordings=3, windows_per_recording=10)
    w = synth.windows.iloc[4]
    _, vec = synth.db.vectors(MODEL, np.array([w.window_id]))
    q = backend.Query("positive", "x", vec[0], (int(w.recording_id), w.start_s + 1, w.end_s - 1))
    hits = backend.run_search(synth.db, MODEL, [q], k=5)
    assert w.window_id not in hits["window_id"].tolist()
    kept = backend.run_search(synth.db, MODEL, [q], k=5, include_query=True)
    assert kept["window_id"].iloc[0] == w.window_id
    site = backend.run_search(synth.db, MODEL, [q], k=5, where="site = 'S0'")
    assert w.window_id not in site["window_id"].tolist() and (site["site"] == "S0").all()


def test_the_archive_page_reads_its_counts_without_lancedb(tmp_path):
    """A cold explorer's first page: its counts come from Lance datasets, not LanceDB (whose
    import alone costs a second or more)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    import index

    db = index.connect(tmp_path / "a.chorus")
    rid = db.upsert_recording(tmp_path, "r.wav", site="A")
    rows = pd.DataFrame({"recording_id": rid, "start_s": [0.0, 5.0], "end_s": [5.0, 10.0]})
    db.add_embeddings("m", rows.assign(vector=list(np.eye(2, 4, dtype=np.float32))))
    code = (
        "import json, sys, index\nfrom explorer.app import backend\n"
        f"s = backend.archive_summary(index.connect({str(db.path)!r}, create=False))\n"
        "print(json.dumps([s.windows, 'lancedb' in sys.modules]))\n"
    )
    root = str(Path(index.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=root, OMP_WAIT_POLICY="PASSIVE")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [{"m": 2}, False]
