"""Labels table: add/list/remove, file resolution, Raven import, labels onto windows."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from agile_synth import MODEL, make_synth_db

from index.labels import (
    add_label,
    assign_windows,
    import_annotations,
    list_labels,
    remove_label,
    resolve_recording,
    window_labels,
)


@pytest.fixture
def synth(tmp_path):
    return make_synth_db(tmp_path, n_recordings=4, windows_per_recording=12)


def test_add_list_remove(synth):
    db = synth.db
    a = add_label(db, 0, 10.0, 12.5, "owl", low_hz=300, high_hz=900, source="user:ann")
    b = add_label(db, 1, 0.0, 5.0, "owl", kind="negative")
    c = add_label(db, 1, 5.0, 6.0, "wren", kind="unsure")
    assert (a, b, c) == (1, 2, 3)
    df = list_labels(db)
    assert df["label_id"].tolist() == [1, 2, 3]
    assert df.loc[0, ["low_hz", "high_hz", "source", "path"]].tolist() == [
        300.0,
        900.0,
        "user:ann",
        "site0/rec00.wav",
    ]
    assert df["source"].iloc[1].startswith("user:")
    assert np.isnan(df["low_hz"].iloc[1])
    assert list_labels(db, label="owl", kind="negative")["label_id"].tolist() == [2]
    remove_label(db, 2)
    assert list_labels(db)["label_id"].tolist() == [1, 3]
    with pytest.raises(KeyError, match="no label with id 2"):
        remove_label(db, 2)
    assert add_label(db, 0, 1, 2, "owl") == 4  # ids never reused while higher ones exist


@pytest.mark.parametrize(
    "start, end, kind, message",
    [
        (5, 5, "positive", "not after start"),
        (1, 2, "maybe", "kind must be one of"),
        (-1, 2, "positive", "non-negative"),
    ],
)
def test_add_rejects_bad_labels(synth, start, end, kind, message):
    with pytest.raises(ValueError, match=message):
        add_label(synth.db, 0, start, end, "owl", kind=kind)


def test_resolve_recording_by_absolute_relative_and_name(synth, monkeypatch):
    db, root = synth.db, synth.root
    assert resolve_recording(db, root / "site1" / "rec03.wav") == 3
    assert resolve_recording(db, "site1/rec03.wav") == 3
    assert resolve_recording(db, "./site0/rec02.wav") == 2
    assert resolve_recording(db, "D:\\field\\2024\\rec01.wav") == 1  # Begin Path from elsewhere
    (root / "site0").mkdir()
    (root / "site0" / "rec00.wav").touch()
    monkeypatch.chdir(root / "site0")
    assert resolve_recording(db, "rec00.wav") == 0
    with pytest.raises(KeyError, match="no recording in the database matches"):
        resolve_recording(db, "nope.wav")
    db.upsert_recording(root, "site9/rec03.wav", status="ok")
    with pytest.raises(KeyError, match="matches 2 recordings"):
        resolve_recording(db, "rec03.wav")


def test_import_raven_table(synth, tmp_path):
    table = tmp_path / "rec01.Table.1.selections.txt"
    table.write_text(
        "Selection\tView\tChannel\tBegin Time (s)\tEnd Time (s)\tLow Freq (Hz)\tHigh Freq (Hz)\tBegin File\tSound Type\n"
        "1\tSpectrogram 1\t1\t2.0\t3.0\t100\t2000\trec01.wav\towl\n"
        "1\tWaveform 1\t1\t2.0\t3.0\t0\t16000\trec01.wav\towl\n"
        "2\tSpectrogram 1\t1\t7.5\t9.0\t100\t2000\trec01.wav\twren\n"
    )
    ids = import_annotations(synth.db, table)
    assert ids.tolist() == [1, 2]
    df = list_labels(synth.db)
    assert df["recording_id"].tolist() == [1, 1]
    assert df["label"].tolist() == ["owl", "wren"]
    assert set(df["source"]) == {"import:rec01.Table.1.selections.txt"}


def test_import_names_line_of_unknown_file_and_imports_nothing(synth, tmp_path):
    table = tmp_path / "t.txt"
    table.write_text(
        "Begin Time (s)\tEnd Time (s)\tBegin File\tAnnotation\n1\t2\trec01.wav\towl\n1\t2\tghost.wav\towl\n"
    )
    with pytest.raises(ValueError, match="t.txt: line 3: no recording .* 'ghost.wav'"):
        import_annotations(synth.db, table)
    assert list_labels(synth.db).empty


def test_assign_windows_overlap_rules():
    windows = pd.DataFrame(
        {
            "window_id": [0, 1, 2, 3],
            "recording_id": 7,
            "start_s": [0.0, 5, 10, 15],
            "end_s": [5.0, 10, 15, 20],
        }
    )
    labels = pd.DataFrame(
        {
            "label_id": [1, 2, 3, 4],
            "recording_id": 7,
            "start_s": [1.0, 8.0, 11.0, 12.0],
            "end_s": [2.0, 14.0, 12.0, 13.0],
            "kind": ["positive", "negative", "unsure", "positive"],
        }
    )
    got = assign_windows(windows, labels, min_overlap=0.5)
    # w0: a 1-s call inside the window covers all of the (shorter) label -> positive.
    # w1: the negative label covers only 2 of 5 s -> unlabelled. w2: positive beats neg/unsure.
    assert got["window_id"].tolist() == [0, 2]
    assert got["kind"].tolist() == ["positive", "positive"]
    assert got["label_id"].tolist() == [1, 4]
    assert assign_windows(windows, labels, min_overlap=0.3)["window_id"].tolist() == [0, 1, 2]
    assert assign_windows(windows, labels.iloc[1:3], 0.5)["target"].isna().tolist() == [True]


def test_window_labels_on_the_database(synth):
    truth = synth.truth[synth.truth["recording_id"] == 0]
    for t in truth.itertuples():
        add_label(synth.db, 0, t.start_s, t.end_s, t.call_type)
    owl = window_labels(synth.db, MODEL, "owl")
    want = synth.windows.query("recording_id == 0 and call_type == 'owl'")["window_id"]
    assert owl["window_id"].tolist() == want.tolist()
    assert (owl["target"] == 1.0).all()


def test_a_label_on_the_same_interval_corrects_the_earlier_one(synth):
    # a mis-click in the explorer is fixed by labelling the window again; different extents keep
    # the rule that positive beats unsure beats negative
    w = synth.windows.iloc[3]
    add_label(synth.db, int(w.recording_id), w.start_s, w.end_s, "owl")
    fix = add_label(synth.db, int(w.recording_id), w.start_s, w.end_s, "owl", kind="negative")
    got = window_labels(synth.db, MODEL, "owl")
    assert got[["window_id", "kind", "label_id"]].values.tolist() == [
        [w.window_id, "negative", fix]
    ]
    assert list_labels(synth.db)["label_id"].tolist() == [fix]  # exports carry no mis-click
    add_label(synth.db, int(w.recording_id), w.start_s - 1, w.end_s, "owl")  # a wider positive
    assert window_labels(synth.db, MODEL, "owl")["kind"].tolist() == ["positive"]


def test_ties_in_kind_report_the_latest_label():
    windows = pd.DataFrame({"window_id": [0], "recording_id": 1, "start_s": [0.0], "end_s": [5.0]})
    labels = pd.DataFrame(
        {
            "label_id": [4, 2, 9],
            "recording_id": 1,
            "start_s": [0.0, 1.0, 2.0],
            "end_s": [5.0, 4.0, 3.0],
            "kind": ["positive", "positive", "negative"],
        }
    )
    assert assign_windows(windows, labels)["label_id"].tolist() == [4]


def test_label_names_are_stripped_for_queries_too(synth):
    add_label(synth.db, 0, 0.0, 5.0, "  owl ")
    assert list_labels(synth.db, label="owl ")["label"].tolist() == ["owl"]
    assert len(window_labels(synth.db, MODEL, " owl")) == 1
    with pytest.raises(ValueError, match="must not be empty"):
        add_label(synth.db, 0, 0.0, 5.0, None)


def test_labels_past_the_end_of_the_recording_are_refused(synth, tmp_path):
    # recordings of the synth archive last 60 s: a label at 99 s points at the wrong file
    with pytest.raises(ValueError, match="99-100 s starts after the end of recording 0 \\(60 s\\)"):
        add_label(synth.db, 0, 99.0, 100.0, "owl")
    add_label(synth.db, 0, 58.0, 61.0, "owl")  # overrunning the end a little is fine
    table = tmp_path / "t.txt"
    table.write_text(
        "Begin Time (s)\tEnd Time (s)\tBegin File\tAnnotation\n1\t2\trec01.wav\towl\n"
        "90\t95\trec01.wav\towl\n"
    )
    with pytest.raises(ValueError, match="t.txt: line 3: 90-95 s starts after the end of .*rec01"):
        import_annotations(synth.db, table)
    assert len(list_labels(synth.db)) == 1


@pytest.mark.parametrize(
    "low, high, message",
    [(5000.0, 100.0, "low_hz 5000 is not below high_hz 100"), (-1.0, None, "non-negative")],
)
def test_bad_frequency_bands_are_refused(synth, low, high, message):
    with pytest.raises(ValueError, match=message):
        add_label(synth.db, 0, 1.0, 2.0, "owl", low_hz=low, high_hz=high)
    assert list_labels(synth.db).empty
