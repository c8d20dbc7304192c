"""Exports to Audacity label tracks and Kaleidoscope CSV, from labels and from detections."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest
from agile_synth import MODEL, make_synth_db

from explorer.cli import main
from index.classify import classify
from index.export import KALEIDOSCOPE_COLUMNS, export_detections, export_labels
from index.labels import add_label
from index.probe import train_probe


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    s = make_synth_db(tmp_path_factory.mktemp("formats"), n_recordings=4, windows_per_recording=30)
    for t in s.truth.query("call_type == 'owl'").itertuples():
        add_label(s.db, int(t.recording_id), t.start_s, t.end_s, "owl")
    rid = s.db.recording_id(s.root, "site0/rec00.wav")
    add_label(s.db, rid, 0.0, 5.0, "owl", kind="negative", low_hz=300.0, high_hz=2000.0)
    return s


def _audacity(path):
    """Parse an Audacity label track: (start, end, label) rows and the band lines."""
    rows, bands = [], []
    for line in path.read_text().splitlines():
        cells = line.split("\t")
        if cells[0] == "\\":
            bands.append((float(cells[1]), float(cells[2])))
        else:
            rows.append((float(cells[0]), float(cells[1]), cells[2]))
    return rows, bands


def test_labels_as_audacity_label_tracks_one_per_recording(synth, tmp_path):
    files = export_labels(synth.db, tmp_path / "aud", "audacity")
    assert files[0].name == "site0__rec00.labels.audacity.txt"
    rows, bands = _audacity(files[0])
    rid = synth.db.recording_id(synth.root, "site0/rec00.wav")
    want = synth.truth.query("call_type == 'owl'")
    want = want[want["recording_id"] == rid]
    assert rows[0] == (0.0, 5.0, "owl (negative)") and bands == [(300.0, 2000.0)]
    assert [r[:2] for r in rows[1:]] == list(zip(want["start_s"], want["end_s"], strict=True))
    assert {r[2] for r in rows[1:]} == {"owl"}
    assert (
        sum(len(_audacity(f)[0]) for f in files) == len(synth.truth.query("call_type == 'owl'")) + 1
    )


def test_labels_and_detections_as_kaleidoscope_csv(synth, tmp_path):
    synth.db.upsert_recording(
        synth.root, "site0/rec00.wav", start_time=dt.datetime(2024, 5, 1, 4, 30)
    )
    (out,) = export_labels(synth.db, tmp_path / "id.csv", "kaleidoscope")
    k = pd.read_csv(out, keep_default_na=False)
    assert list(k.columns) == KALEIDOSCOPE_COLUMNS
    first = k.iloc[0]
    assert (first["FOLDER"], first["IN FILE"], first["OFFSET"], first["DURATION"]) == (
        "site0", "rec00.wav", 0.0, 5.0
    )  # fmt: skip
    assert first["INDIR"] == str(synth.root)
    assert (first["DATE"], first["TIME"], first["HOUR"]) == ("2024-05-01", "04:30:00", 4)
    assert first["MANUAL ID"] == "owl (negative)" and first["AUTO ID*"] == ""
    rec = train_probe(synth.db, MODEL, "owl")
    det = classify(synth.db, rec.probe_id, threshold=0.5)
    (out,) = export_detections(synth.db, rec.probe_id, tmp_path / "det.csv", "kaleidoscope")
    k = pd.read_csv(out, keep_default_na=False)
    assert len(k) == len(det) and set(k["AUTO ID*"]) == {"owl"} and set(k["MANUAL ID"]) == {""}


def test_cli_export_formats(synth, tmp_path, capsys):
    db = str(synth.db.path)
    assert (
        main(
            ["export", "--db", db, "--labels", "--format", "audacity", "--out", str(tmp_path / "a")]
        )
        == 0
    )
    assert "label tracks" in capsys.readouterr().out
    assert (
        main(
            [
                "export",
                "--db",
                db,
                "--labels",
                "--format",
                "kaleidoscope",
                "--out",
                str(tmp_path / "k.csv"),
            ]
        )
        == 0
    )
    assert (tmp_path / "k.csv").exists()
