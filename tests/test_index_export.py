"""Exports of labels and detections: CSV, Parquet, Raven tables per recording that read back."""

from __future__ import annotations

import pandas as pd
import pytest
from agile_synth import MODEL, make_synth_db

from index.classify import classify
from index.export import export_detections, export_labels
from index.labels import add_label, import_annotations, list_labels
from index.probe import train_probe
from index.raven import read_annotations


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    s = make_synth_db(tmp_path_factory.mktemp("export"), n_recordings=4, windows_per_recording=30)
    for t in s.truth.query("call_type == 'owl'").itertuples():
        add_label(
            s.db, int(t.recording_id), t.start_s, t.end_s, "owl", low_hz=500.0, high_hz=2500.0
        )
    add_label(s.db, 1, 0.0, 5.0, "owl", kind="negative")
    return s


def test_labels_csv_and_parquet(synth, tmp_path):
    (csv,) = export_labels(synth.db, tmp_path / "labels.csv", "csv")
    (pq,) = export_labels(synth.db, tmp_path / "labels.parquet", "parquet")
    a, b = pd.read_csv(csv), pd.read_parquet(pq)
    want = list_labels(synth.db)
    assert a["label_id"].tolist() == b["label_id"].tolist() == want["label_id"].tolist()
    assert {"kind", "source", "path", "abs_path", "start_s", "end_s", "low_hz"} <= set(a.columns)
    assert a["abs_path"].iloc[0] == str(synth.root / "site0" / "rec00.wav")


def test_labels_raven_round_trip_into_a_fresh_database(synth, tmp_path):
    files = export_labels(synth.db, tmp_path / "raven", "raven")
    per_rec = list_labels(synth.db).groupby("recording_id").size()
    assert len(files) == len(per_rec)
    assert files[0].name == "site0__rec00.labels.selections.txt"
    back = read_annotations(files[0])
    assert back["path"].iloc[0] == str(synth.root / "site0" / "rec00.wav")
    assert back["low_hz"].iloc[0] == 500.0
    # The tables import into another database holding the same recordings.
    other = make_synth_db(tmp_path / "other", n_recordings=4, windows_per_recording=30)
    n = sum(len(import_annotations(other.db, f)) for f in files)
    assert n == len(list_labels(synth.db))
    cols = ["recording_id", "start_s", "end_s", "label", "kind", "low_hz"]
    got = list_labels(other.db)[cols].sort_values(cols[:3], ignore_index=True)
    want = list_labels(synth.db)[cols].sort_values(cols[:3], ignore_index=True)
    assert got["kind"].tolist() == want["kind"].tolist()  # kind travels as an extra column
    # A label without a band comes back as the full band (0 Hz .. Nyquist), as Raven needs one.
    pd.testing.assert_frame_equal(got, want.fillna({"low_hz": 0.0}), check_dtype=False)


def test_detections_raven_and_csv(synth, tmp_path):
    rec = train_probe(synth.db, MODEL, "owl")
    det = classify(synth.db, rec.probe_id, threshold=0.5)
    files = export_detections(synth.db, rec.probe_id, tmp_path / "det", "raven")
    assert len(files) == det["recording_id"].nunique()
    tables = pd.concat([read_annotations(f) for f in files])
    assert len(tables) == len(det)
    assert (tables["high_hz"] == 16000.0).all()  # unknown band: up to Nyquist
    raw = pd.read_csv(files[0], sep="\t")
    assert "score" in raw.columns and raw["score"].min() >= 0.5
    (csv,) = export_detections(synth.db, rec.probe_id, tmp_path / "det.csv", "csv")
    assert len(pd.read_csv(csv)) == len(det)


def test_export_errors(synth, tmp_path):
    with pytest.raises(ValueError, match="unknown export format"):
        export_labels(synth.db, tmp_path / "x", "xlsx")
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        export_labels(synth.db, tmp_path / "file", "raven")
    with pytest.raises(KeyError, match="no probe with id 42"):
        export_detections(synth.db, 42, tmp_path / "d.csv")


def test_raven_tables_of_same_named_files_never_overwrite_each_other(tmp_path):
    # two SD cards copied into their own audio roots hold files with the same relative path
    s = make_synth_db(tmp_path / "a", n_recordings=1, windows_per_recording=4)
    card2 = tmp_path / "card2"
    rid = s.db.upsert_recording(card2, "site0/rec00.wav", duration_s=20.0)
    other = s.db.upsert_recording(s.root, "site0/REC00.flac", duration_s=20.0)
    for r, label in [(0, "owl"), (rid, "wren"), (other, "tit")]:
        add_label(s.db, r, 1.0, 2.0, label)
    files = export_labels(s.db, tmp_path / "raven", "raven")
    assert len({f.name.lower() for f in files}) == 3
    labels = sorted(read_annotations(f)["label"].iloc[0] for f in files)
    assert labels == ["owl", "tit", "wren"]


def test_a_stopped_first_classify_exports_no_empty_file(synth, tmp_path, capsys):
    """A first ``classify`` killed after it created the detections table left it empty: the
    export says so and exits 1 instead of writing an empty file."""
    from explorer import cli
    from index.classify import DETECTIONS_SCHEMA, DETECTIONS_TABLE
    from index.export import NoDetections

    rec = train_probe(synth.db, MODEL, "owl")
    if DETECTIONS_TABLE in synth.db.table_names():  # another test classified: start afresh
        synth.db.open_table(DETECTIONS_TABLE).delete("true")
    synth.db.open_table(DETECTIONS_TABLE, DETECTIONS_SCHEMA)  # what the killed run left
    with pytest.raises(NoDetections, match=f"run `chorus classify .*--probe {rec.probe_id}`"):
        export_detections(synth.db, rec.probe_id, tmp_path / "d.csv")
    out = tmp_path / "det.csv"
    argv = ["export", "--db", str(synth.db.path), "--detections", str(rec.probe_id)]
    code = cli.main([*argv, "--format", "csv", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 1 and not out.exists()
    assert err.count("\n") == 1 and "has no detections" in err
