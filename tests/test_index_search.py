"""Search builder: results equal a NumPy exact search; filters, negatives, per-recording, staleness."""

from __future__ import annotations

import threading

import numpy as np
import pandas as pd
import pytest

import index
from index import search as search_mod

DIM = 32
N_REC = 6
PER_REC = 60  # windows per recording, 5 s hop with 50% overlap


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """A DB with 6 recordings at 3 sites and clustered vectors; returns (db, windows frame, unit vecs)."""
    tmp = tmp_path_factory.mktemp("search")
    db = index.connect(tmp / "s.chorus")
    rng = np.random.default_rng(1)
    centres = _unit(rng.standard_normal((8, DIM)))
    frames = []
    for r in range(N_REC):
        rid = db.upsert_recording(
            tmp,
            f"rec{r}.wav",
            site="ABC"[r % 3],
            start_time=pd.Timestamp("2024-05-01 03:00:00") + pd.Timedelta(hours=r),
            duration_s=PER_REC * 2.5 + 2.5,
        )
        starts = np.arange(PER_REC) * 2.5
        vec = centres[rng.integers(0, 8, PER_REC)] + 0.35 * rng.standard_normal((PER_REC, DIM))
        rows = pd.DataFrame(
            {"recording_id": rid, "start_s": starts, "end_s": starts + 5.0, "vector": list(vec)}
        )
        ids = db.add_embeddings("m", rows)
        frames.append(rows.assign(window_id=ids))
    win = pd.concat(frames, ignore_index=True)
    unit = _unit(np.stack(win["vector"]).astype(np.float32))
    return db, win, unit


def _numpy_top(unit, q, k, mask=None):
    s = unit @ _unit(q)
    if mask is not None:
        s = np.where(mask, s, -np.inf)
    order = np.lexsort((np.arange(len(s)), -s))[:k]
    return order, s[order]


def _check(hits, win, unit, q, k, mask=None):
    order, scores = _numpy_top(unit, q, k, mask)
    assert hits["window_id"].tolist() == win["window_id"].iloc[order].tolist()
    np.testing.assert_allclose(hits["score"], scores, rtol=1e-5, atol=1e-6)


def test_exact_vector_query_matches_numpy(archive):
    db, win, unit = archive
    q = np.random.default_rng(5).standard_normal(DIM).astype(np.float32)
    hits = db.search("m", q).exact().limit(15).to_pandas()
    _check(hits, win, unit, q, 15)
    assert list(hits.columns) == search_mod.RESULT_COLUMNS
    assert (np.diff(hits["score"]) <= 0).all()
    row = hits.iloc[0]
    rec = db.recording(row["recording_id"])
    assert row["abs_path"] == rec["abs_path"] and row["site"] == rec["site"]


def test_several_vectors_and_window_ids(archive):
    db, win, unit = archive
    pos = np.stack(win["vector"].iloc[[3, 70, 200]]).astype(np.float32)
    hits = db.search("m", pos).limit(10).to_pandas()
    _check(hits, win, unit, _unit(_unit(pos).mean(0)), 10)
    by_id = db.search("m", win["window_id"].iloc[[3, 70, 200]].to_numpy()).limit(10).to_pandas()
    pd.testing.assert_frame_equal(by_id, hits)
    one = db.search("m", int(win["window_id"].iloc[3])).limit(1).to_pandas()
    assert one["window_id"].iloc[0] == win["window_id"].iloc[3]
    assert one["score"].iloc[0] == pytest.approx(1.0, abs=1e-5)


def test_negatives_rule(archive):
    db, win, unit = archive
    q, neg = unit[10], unit[[100, 130]]
    hits = db.search("m", q).negatives(neg, weight=0.7).limit(12).to_pandas()
    _check(hits, win, unit, q - 0.7 * neg.mean(0), 12)
    by_id = db.search("m", q).negatives(win["window_id"].iloc[[100, 130]].tolist(), weight=0.7)
    assert by_id.limit(12).to_pandas()["window_id"].tolist() == hits["window_id"].tolist()
    with pytest.raises(ValueError, match="cancel out"):
        db.search("m", q).negatives(q, weight=1.0).to_pandas()


def test_where_filters_on_recording_and_derived_columns(archive):
    db, win, unit = archive
    q = unit[42]
    site = win["recording_id"].map(lambda r: "ABC"[r % 3])
    hits = db.search("m", q).where("site = 'B'").limit(10).to_pandas()
    _check(hits, win, unit, q, 10, (site == "B").to_numpy())
    assert set(hits["site"]) == {"B"}
    # hour of day of the window start: recording r starts at 03:00 + r hours
    hour = 3 + win["recording_id"]
    hits = db.search("m", q).where("hour >= 5 AND start_s < 60").limit(10).to_pandas()
    _check(hits, win, unit, q, 10, ((hour >= 5) & (win["start_s"] < 60)).to_numpy())
    hits = db.search("m", q).where("time >= TIMESTAMP '2024-05-01 05:00:00'").limit(10).to_pandas()
    _check(hits, win, unit, q, 10, (hour >= 5).to_numpy())
    hits = db.search("m", q).where("date = DATE '2024-05-01'").limit(500).to_pandas()
    assert len(hits) == len(win)
    few = db.search("m", q).where("recording_id = 2 AND start_s < 5").limit(10).to_pandas()
    assert len(few) == 2  # fewer matches than k: all of them
    # every recording column of the data model filters, also ones that are all null so far
    for sql in (
        "error IS NULL",
        "size IS NULL AND mtime IS NULL",
        "status IS NULL OR status = 'ok'",
    ):
        assert len(db.search("m", q).where(sql).limit(500).to_pandas()) == len(win), sql
    with pytest.raises(ValueError, match="bad search filter.*Columns: window_id"):
        db.search("m", q).where("no_such_column = 1").to_pandas()


def test_per_recording_and_exclude_query(archive):
    db, win, unit = archive
    q = unit[7]
    hits = db.search("m", q).per_recording(2).limit(8).to_pandas()
    assert hits.groupby("recording_id").size().max() <= 2
    for _, g in hits.groupby("recording_id"):
        if len(g) == 2:  # the two kept windows of a recording do not overlap
            a, b = g.iloc[0], g.iloc[1]
            assert a["end_s"] <= b["start_s"] or b["end_s"] <= a["start_s"]
    # the best hit of every recording comes first in its group
    full = db.search("m", q).exact().limit(len(win)).to_pandas()
    best = full.groupby("recording_id")["score"].max()
    for rid, g in hits.groupby("recording_id"):
        assert g["score"].iloc[0] == pytest.approx(best[rid])
    wid = int(win["window_id"].iloc[7])
    ex = db.search("m", wid).exclude_query().limit(5).to_pandas()
    assert wid not in ex["window_id"].tolist()
    same = ex[ex["recording_id"] == win["recording_id"].iloc[7]]
    q_start, q_end = win["start_s"].iloc[7], win["end_s"].iloc[7]
    assert ((same["end_s"] <= q_start) | (same["start_s"] >= q_end)).all()


@pytest.mark.parametrize("factory", ["Flat", "HNSW32", "IVF16,Flat"])
def test_indexed_search_matches_numpy(tmp_path, archive, factory):
    _, win, unit = archive
    db = _copy(tmp_path, win)
    settings = db.build_index("m", factory=factory, nprobe=16)
    assert settings.factory == factory and settings.n_vectors == len(win)
    q = unit[99] + 0.1
    hits = db.search("m", q).limit(10).to_pandas()
    _check(hits, win, unit, q, 10)


def test_stale_index_sees_new_and_hides_deleted(tmp_path, archive):
    _, win, unit = archive
    db = _copy(tmp_path, win)
    db.build_index("m", factory="HNSW32")
    new_vec = -unit[0]  # far from everything indexed, equal to the query below
    new_id = db.add_embeddings(
        "m",
        pd.DataFrame({"recording_id": [0], "start_s": [0.0], "end_s": [5.0], "vector": [new_vec]}),
    )[0]
    db.delete_windows("m", 1)
    assert db.index_state("m")["state"] == "stale"
    hits = db.search("m", new_vec).limit(5).to_pandas()
    assert hits["window_id"].iloc[0] == new_id
    assert hits["score"].iloc[0] == pytest.approx(1.0, abs=1e-5)
    hits = db.search("m", unit[win.index[win["recording_id"] == 1][0]]).limit(50).to_pandas()
    assert 1 not in hits["recording_id"].tolist()
    keep = (win["recording_id"] != 1).to_numpy()
    all_unit = np.vstack([unit[keep], new_vec])
    all_ids = np.r_[win["window_id"].to_numpy()[keep], new_id]
    order, _ = _numpy_top(all_unit, unit[5], 10)
    got = db.search("m", unit[5]).limit(10).to_pandas()["window_id"].tolist()
    assert got == all_ids[order].tolist()


def test_filtered_ann_returns_k_hits(tmp_path, archive, monkeypatch):
    _, win, unit = archive
    db = _copy(tmp_path, win)
    db.build_index("m", factory="HNSW32", efSearch=8)
    monkeypatch.setattr(search_mod, "EXACT_SUBSET_MAX", 0)  # force the ANN path under a filter
    monkeypatch.setattr(search_mod, "ANN_MIN_FRACTION", 0.0)
    mask = (win["recording_id"] == 4).to_numpy() & (win["start_s"] < 40)
    hits = db.search("m", unit[3]).where("recording_id = 4 AND start_s < 40").limit(10).to_pandas()
    _check(hits, win, unit, unit[3], 10, mask)


@pytest.mark.parametrize(
    ("factory", "saved", "wider"),
    [("IVF16,Flat", {"nprobe": 1}, {"nprobe": 16}), ("HNSW32", {"efSearch": 1}, {"efSearch": 400})],
)
def test_index_params_override_the_saved_ones_for_one_search(
    tmp_path, archive, factory, saved, wider
):
    _, win, unit = archive
    db = _copy(tmp_path, win)
    db.build_index("m", factory=factory, **saved)
    queries = [unit[i] + 0.5 * unit[i + 7] for i in range(0, 200, 20)]  # between windows
    narrow = [db.search("m", q).limit(10).to_pandas() for q in queries]
    for q in queries:
        _check(db.search("m", q).index_params(**wider).limit(10).to_pandas(), win, unit, q, 10)
    order = [_numpy_top(unit, q, 10)[0] for q in queries]
    missed = [
        h["window_id"].tolist() != win["window_id"].iloc[o].tolist()
        for h, o in zip(narrow, order, strict=True)
    ]
    assert any(missed)  # the saved settings alone miss some: the override did the work
    assert db.index_state("m")["params"] == {**db.index_state("m")["params"], **saved}


@pytest.mark.parametrize(
    ("params", "error"),
    [({"nprobes": 4}, "unknown index parameter 'nprobes'"), ({"k_factor": 0}, ">= 1"),
     ({"efSearch": "64"}, ">= 1"), ({"nprobe": True}, ">= 1")],
)  # fmt: skip
def test_bad_index_params(archive, params, error):
    db, _, unit = archive
    with pytest.raises(ValueError, match=error):
        db.search("m", unit[0]).index_params(**params)


def test_bad_queries(archive):
    db, _, _ = archive
    with pytest.raises(ValueError, match="dims"):
        db.search("m", np.ones(DIM + 1)).to_pandas()
    with pytest.raises(KeyError, match="window id"):
        db.search("m", [10_000]).to_pandas()
    with pytest.raises(ValueError, match="limit"):
        db.search("m", np.ones(DIM)).limit(0)
    with pytest.raises(KeyError, match="no embeddings"):
        db.search("other", np.ones(DIM)).to_pandas()


def _copy(tmp_path, win) -> index.Database:
    """A fresh DB with the same recordings and windows (ids identical, in the same order)."""
    db = index.connect(tmp_path / "copy.chorus")
    for r in range(N_REC):
        db.upsert_recording(tmp_path, f"rec{r}.wav", site="ABC"[r % 3])
    ids = db.add_embeddings("m", win[["recording_id", "start_s", "end_s", "vector"]])
    assert ids.tolist() == win["window_id"].tolist()
    return db


def test_filtered_searches_from_threads_while_windows_are_added(tmp_path):
    # the explorer shares one Database between sessions: filter views rebuilt under a query
    import threading

    rng = np.random.default_rng(0)
    db = index.connect(tmp_path / "t.chorus")
    (tmp_path / "a").mkdir()
    for r in range(4):
        db.upsert_recording(tmp_path / "a", f"r{r}.wav", site="AB"[r % 2])

    def add():
        vec = rng.normal(size=(50, 8)).astype(np.float32)
        db.add_embeddings(
            "m",
            {
                "recording_id": rng.integers(0, 4, 50),
                "start_s": np.zeros(50),
                "end_s": np.ones(50),
                "vector": vec,
            },
        )

    add()
    errors, stop = [], threading.Event()

    def reader():
        while not stop.is_set():
            try:
                hits = db.search("m", np.ones(8)).where("site = 'A'").limit(5).to_pandas()
                assert (hits["site"] == "A").all()
            except Exception as err:  # noqa: BLE001 - every failure is the finding
                errors.append(f"{type(err).__name__}: {err}")

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for _ in range(15):
        add()
    stop.set()
    for t in threads:
        t.join()
    assert not errors, errors[:3]


def test_vectors_of_a_snapshot_stay_its_own_when_another_thread_maps_a_newer_one(tmp_path):
    # the explorer's sessions share one Database: a search on a newer snapshot may refresh the
    # index-position map between another search's mapping and its use
    rng = np.random.default_rng(7)
    db = index.connect(tmp_path / "r.chorus")
    (tmp_path / "a").mkdir()
    rids = [db.upsert_recording(tmp_path / "a", f"r{i}.wav") for i in range(3)]

    def rows(rid):
        start = np.arange(40) * 5.0
        return {
            "recording_id": np.full(40, rid),
            "start_s": start,
            "end_s": start + 5,
            "vector": rng.normal(size=(40, 16)),
        }

    for rid in rids:
        db.add_embeddings("m", rows(rid))
    db.build_index("m", factory="Flat")
    old = db.snapshot("m")
    db.delete_windows("m", rids[0])  # recording 0 re-embedded meanwhile
    db.add_embeddings("m", rows(rids[0]))
    new = db.snapshot("m")
    ann = db.search_state.load_ann("m")
    real = db.search_state.ann_entry

    def interleaved(snap, a):
        entry = real(snap, a)
        if snap is old:
            real(new, a)  # the other thread's search runs here
        return entry

    db.search_state.ann_entry = interleaved
    offsets = np.arange(len(old))
    assert ann.exact_storage
    np.testing.assert_allclose(
        db.search_state.vectors_for(old, offsets), old.vectors_at(offsets), atol=1e-5
    )


def test_to_arrow_holds_what_to_pandas_holds(archive):
    db, win, unit = archive
    frame = db.search("m", unit[11]).limit(7).to_pandas()
    table = db.search("m", unit[11]).limit(7).to_arrow()
    assert table.column_names == search_mod.RESULT_COLUMNS
    back = table.to_pandas()
    for col in search_mod.RESULT_COLUMNS:
        assert back[col].tolist() == frame[col].tolist(), col


def test_exclude_spans_keeps_what_the_outside_spans_filter_keeps(archive):
    db, win, unit = archive
    rid0, rid1 = (int(r) for r in win["recording_id"].unique()[:2])
    spans = [(rid0, 10.0, 20.0), (rid1, None, None)]
    want = db.search("m", unit[3]).where(search_mod.outside_spans(spans)).limit(40).to_pandas()
    got = db.search("m", unit[3]).exclude_spans(spans).limit(40).to_pandas()
    assert got["window_id"].tolist() == want["window_id"].tolist()
    assert rid1 not in got["recording_id"].tolist()
    mine = got[got["recording_id"] == rid0]
    assert ((mine["end_s"] <= 10.0) | (mine["start_s"] >= 20.0)).all()


def test_search_sees_a_commit_made_through_another_handle(tmp_path, archive, monkeypatch):
    """The version check trusts an unchanged, settled version folder; a commit through another
    handle (another process, e.g. the ingest writer) changes the folder and is always seen."""
    from index import db as db_mod

    _, win, unit = archive
    db = _copy(tmp_path, win)
    db.build_index("m", factory="Flat")
    db.search("m", unit[0]).limit(3).to_pandas()
    monkeypatch.setattr(db_mod, "VERSIONS_SETTLE_S", 0.0)  # every stamp counts as settled
    db.search("m", unit[0]).limit(3).to_pandas()  # cached with a settled stamp
    other = index.connect(db.path, create=False)
    new_vec = -unit[0]
    new_id = other.add_embeddings(
        "m",
        pd.DataFrame({"recording_id": [0], "start_s": [0.0], "end_s": [5.0], "vector": [new_vec]}),
    )[0]
    hits = db.search("m", new_vec).limit(1).to_pandas()
    assert hits["window_id"].tolist() == [new_id]
    other.delete_windows("m", int(win["recording_id"].iloc[0]))
    hits = db.search("m", unit[0]).limit(20).to_pandas()
    assert int(win["recording_id"].iloc[0]) not in hits["recording_id"].tolist()


def test_a_search_process_imports_no_heavy_modules(tmp_path, archive):
    """Searching with a stored window id or a vector needs neither torch, scikit-learn, UMAP,
    Streamlit, plotly, the embedder, nor lancedb (whose import alone costs seconds)."""
    import json
    import os
    import subprocess
    import sys
    from pathlib import Path

    _, win, unit = archive
    db = _copy(tmp_path, win)
    db.build_index("m", factory="Flat")
    code = (
        "import json, sys, numpy as np, index\n"
        f"db = index.connect({str(db.path)!r}, create=False)\n"
        "db.search('m', [0]).limit(3).to_pandas()\n"
        f"db.search('m', np.ones({DIM}, np.float32)).exclude_spans([(0, 0.0, 5.0)]).to_arrow()\n"
        "heavy = ('torch', 'sklearn', 'umap', 'streamlit', 'plotly', 'embedder', 'lancedb')\n"
        "print(json.dumps(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    root = str(Path(index.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=root, OMP_WAIT_POLICY="PASSIVE")
    got = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    assert json.loads(got.stdout.strip().splitlines()[-1]) == []


def test_a_cold_search_reads_its_index_once_in_a_thread_started_before_the_table_opens(
    tmp_path, archive, monkeypatch
):
    _, win, unit = archive
    db = _copy(tmp_path, win)
    db.build_index("m", factory="IVF16,Flat", nprobe=16)
    want = db.search("m", unit[3]).limit(5).to_pandas()
    cold = index.connect(db.path)
    reads, events = [], []
    real_load = cold.search_state._load
    real_snapshot = cold.snapshot

    def load(model):
        reads.append(threading.current_thread() is not threading.main_thread())
        return real_load(model)

    def snapshot(model):
        events.append("snapshot")
        return real_snapshot(model)

    monkeypatch.setattr(cold.search_state, "_load", load)
    monkeypatch.setattr(cold, "snapshot", snapshot)
    got = cold.search("m", unit[3]).limit(5).to_pandas()
    assert got["window_id"].tolist() == want["window_id"].tolist()
    assert reads[0] is True  # the first read ran in the prefetch thread
    assert cold.search_state.indexes["m"][1] is not None and not cold.search_state._loading
    again = cold.search("m", unit[4]).limit(5).to_pandas()  # no second prefetch: it is loaded
    assert len(again) == 5 and reads.count(True) == 1


def test_a_damaged_index_found_by_the_prefetch_still_warns_and_searches_exactly(
    tmp_path, archive, caplog
):
    _, win, unit = archive
    db = _copy(tmp_path, win)
    db.build_index("m", factory="IVF16,Flat", nprobe=16)
    index_file = next(p for p in db.faiss_dir.iterdir() if p.suffix == ".index")
    index_file.write_bytes(b"damaged")
    cold = index.connect(db.path)
    hits = cold.search("m", unit[5]).limit(5).to_pandas()
    _check(hits, win, unit, unit[5], 5)
    said = [r.getMessage() for r in caplog.records if "not usable" in r.getMessage()]
    assert len(said) == 1 and "does not match its checksum" in said[0]
