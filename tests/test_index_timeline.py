from __future__ import annotations

import numpy as np
import pandas as pd

import index
from explorer.app import backend
from index import cluster
from index.timeline import window_times


def test_window_times_whole_hours_midnight_and_undated():
    start = pd.Series([pd.Timestamp("2024-06-10 23:59:00"), pd.NaT, "2024-06-10T05:00:00", "junk"])
    out = window_times(start, pd.Series([90.0, 5.0, 3599.0, 1.0]))
    assert out["hour"].tolist()[0] == 0.0 and str(out["date"][0]) == "2024-06-11"
    assert out["hour"][2] == 5.0  # 05:59:59 is still hour 5
    assert np.isnan(out["hour"][1]) and np.isnan(out["hour"][3])
    assert out["time"].isna().tolist() == [False, True, False, True]


def test_filter_map_and_clusters_agree_on_hours(tmp_path):
    """'hour = h' in a search filter, the app's hour column and the clusters' hour are one meaning."""
    db = index.connect(tmp_path / "t.chorus")
    rng = np.random.default_rng(0)
    starts = np.arange(40) * 200.0  # windows cross several hours, and midnight for the first
    for r, t0 in enumerate(["2024-05-01 23:30:00", None]):
        rid = db.upsert_recording(
            tmp_path, f"r{r}.wav", site="A", start_time=pd.Timestamp(t0) if t0 else None
        )
        vec = rng.standard_normal((len(starts), 8)).astype(np.float32)
        rows = pd.DataFrame({"recording_id": rid, "start_s": starts, "end_s": starts + 5.0})
        db.add_embeddings("m", rows.assign(vector=list(vec)))
    meta = cluster._with_hour(db, index.projection.window_meta(db, "m"))
    app = backend.with_recordings(meta.drop(columns="hour"), db.recordings())
    assert np.array_equal(meta["hour"].to_numpy(), app["hour"].to_numpy(), equal_nan=True)
    q = np.ones(8, np.float32)
    for h in (23, 0, 1):
        hits = db.search("m", q).where(f"hour = {h}").limit(1000).to_pandas()
        expected = set(meta.loc[meta["hour"] == h, "window_id"])
        assert expected and set(hits["window_id"]) == expected
    assert meta["hour"].isna().sum() == len(starts)  # the undated recording has no hour
