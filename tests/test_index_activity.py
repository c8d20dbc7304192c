"""Activity tables (index.activity): group keys, undated bucket, counts from scores or detections."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from agile_synth import MODEL, make_synth_db

import index
from index.activity import UNDATED, activity, group_keys, parse_by, summarize, write_table
from index.classify import classify, score_windows
from index.labels import add_label
from index.probe import train_probe


def _recordings():
    return pd.DataFrame(
        {
            "recording_id": [1, 2, 3],
            "site": ["north", "", "south"],
            "start_time": pd.to_datetime(["2025-02-22 23:59:00", "2025-03-03 06:00:00", None]),
        }
    )


def test_group_keys_bins_by_window_time_and_keeps_undated_windows():
    keys = group_keys(
        np.array([1, 1, 2, 3]),
        np.array([0.0, 120.0, 30.0, 0.0]),
        _recordings(),
        ("site", "date", "week", "month", "hour"),
    )
    assert keys.to_dict("list") == {
        "site": ["north", "north", "(no site)", "south"],
        "date": ["2025-02-22", "2025-02-23", "2025-03-03", UNDATED],  # past midnight: next day
        "week": ["2025-W08", "2025-W08", "2025-W10", UNDATED],
        "month": ["2025-02", "2025-02", "2025-03", UNDATED],
        "hour": ["23", "00", "06", UNDATED],
    }
    with pytest.raises(KeyError, match="no recording with id 9"):
        group_keys(np.array([9]), np.array([0.0]), _recordings(), ("site",))


def test_parse_by_refuses_unknown_and_repeated_keys():
    assert parse_by("site, hour") == ("site", "hour")
    for bad in ("site,fortnight", "", "site,site"):
        with pytest.raises(ValueError):
            parse_by(bad)


def test_summarize_counts_detections_beside_the_effort_of_every_group():
    windows = pd.DataFrame({"site": ["A", "A", "A", "B"], "hour": ["05", "05", UNDATED, "05"]})
    hits = pd.DataFrame({"site": ["A", "A"], "hour": ["05", UNDATED]})
    t = summarize(windows, hits, ["site", "hour"])
    assert t.to_dict("list") == {
        "site": ["A", "A", "B"],
        "hour": ["05", UNDATED, "05"],
        "windows": [2, 1, 1],
        "detections": [1, 1, 0],
        "rate": [0.5, 1.0, 0.0],
    }


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    synth = make_synth_db(tmp_path_factory.mktemp("activity"), n_recordings=6, seed=5)
    for t in synth.truth.query("call_type == 'owl' and recording_id <= 3").itertuples():
        add_label(synth.db, int(t.recording_id), t.start_s, t.end_s, "owl")
    rec = train_probe(synth.db, MODEL, "owl")
    # one recording without a start time: its windows are the undated bucket
    undated = synth.db.recordings()["path"].iloc[-1]
    synth.db.upsert_recording(synth.root, undated, start_time=None)
    return synth, rec


def test_activity_from_scores_matches_the_windows_above_threshold(trained):
    synth, rec = trained
    t = activity(synth.db, rec.probe_id, "site,hour", threshold=0.5)
    assert t["windows"].sum() == len(synth.windows)
    meta, scores = score_windows(synth.db, MODEL, rec.probe.coef_, rec.probe.intercept_)
    assert t["detections"].sum() == int((scores[:, 0] >= 0.5).sum())
    assert UNDATED in set(t["hour"]) and t["hour"].iloc[-1] == UNDATED
    assert set(t["threshold"]) == {0.5} and set(t["label"]) == {"owl"}


def test_activity_from_stored_detections_counts_events(trained, tmp_path):
    synth, rec = trained
    with pytest.raises(KeyError):
        activity(synth.db, rec.probe_id, stored=True)  # never classified yet
    det = classify(synth.db, rec.probe_id, threshold=0.5)
    t = activity(synth.db, rec.probe_id, ("site", "date"), stored=True)
    assert t["detections"].sum() == len(det)
    assert write_table(t, tmp_path / "a.parquet").exists()
    assert pd.read_parquet(tmp_path / "a.parquet").equals(t)
    with pytest.raises(ValueError, match=".csv or .parquet"):
        write_table(t, tmp_path / "a.xlsx")


def test_undated_database_still_has_one_row_per_site(tmp_path):
    db = index.connect(tmp_path / "u.chorus")
    rid = db.upsert_recording(tmp_path, "a.wav", site="A", start_time=None, status="ok")
    keys = group_keys(np.array([rid]), np.array([0.0]), db.recordings(), ("site", "date"))
    assert keys.iloc[0].tolist() == ["A", UNDATED]
