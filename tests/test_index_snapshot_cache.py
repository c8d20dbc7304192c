"""A snapshot's columns and vector layout kept beside the table: the same snapshot, no scan; and,
for a table that has not changed since, opened with neither Lance nor pandas."""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
import weakref

import numpy as np
import pandas as pd
import pytest

import index
from index import recordings_cache as rc
from index import snapshot_cache as sc
from index import vector_layout as vl
from index.schema import WINDOW_META_COLUMNS

DIM = 128  # full-zip pages, so the view opens
N_REC = 20


@pytest.fixture(autouse=True)
def small_tables_kept(monkeypatch):
    monkeypatch.setattr(sc, "MIN_ROWS", 100)


def _rows(n: int, seed: int, rid0: int = 0) -> pd.DataFrame:
    x = np.random.default_rng(seed).standard_normal((n, DIM)).astype(np.float32)
    starts = (np.arange(n) % 40) * 5.0
    return pd.DataFrame(
        {
            "recording_id": rid0 + np.arange(n) // 40,
            "start_s": starts,
            "end_s": starts + 5.0,
            "vector": list(x / np.linalg.norm(x, axis=1, keepdims=True)),
        }
    )


@pytest.fixture
def db(tmp_path):
    db = index.connect(tmp_path / "k.chorus")
    db.register_model("m", {"name": "m", "dim": DIM}, vector_dtype="float16")
    db.add_embeddings("m", _rows(400, 0))
    db.add_embeddings("m", _rows(400, 1, rid0=100))
    db.delete_windows("m", 3)
    return db


def _kept(db) -> list:
    return sorted(p.name for p in db.cache_dir.glob("snapshot_m_*.bin"))


def _no_reads(monkeypatch):
    """Fail on a scan of the table or a read of a data file's metadata."""
    vl._LAYOUTS.clear()
    monkeypatch.setattr(vl, "_file_pages", lambda *a: pytest.fail("metadata read"))
    real = index.snapshot.Snapshot.__init__

    def init(self, model, table, version, cache=None):
        table.to_table = lambda *a, **k: pytest.fail("scan of the table")
        real(self, model, table, version, cache)

    monkeypatch.setattr(index.snapshot.Snapshot, "__init__", init)


def _answers(db, q) -> list[int]:
    return db.search("m", q).exact().limit(8).to_arrow()["window_id"].to_pylist()


def test_a_second_process_reads_the_kept_file_instead_of_the_table(db, monkeypatch):
    first = db.snapshot("m")
    assert len(_kept(db)) == 1
    q = first.vectors_at([5])[0]
    want = _answers(db, q)
    _no_reads(monkeypatch)
    again = index.connect(db.path).snapshot("m")
    for name in (*WINDOW_META_COLUMNS, "_row_addr"):
        np.testing.assert_array_equal(getattr(again, name), getattr(first, name))
        assert getattr(again, name).dtype == getattr(first, name).dtype
    assert again.vector_view() is not None
    np.testing.assert_array_equal(
        again.vectors_at(np.arange(len(again))), first.vectors_at(np.arange(len(first)))
    )
    assert _answers(index.connect(db.path), q) == want


def test_a_new_version_writes_a_new_file_and_removes_the_old(db):
    db.snapshot("m")
    before = _kept(db)
    db.add_embeddings("m", _rows(300, 2, rid0=200))
    snap = db.snapshot("m")
    after = _kept(db)
    assert len(after) == 1 and after != before
    db.delete_windows("m", 201)
    assert _kept(index.connect(db.path)) == after  # nothing written until a snapshot is read
    fresh = index.connect(db.path).snapshot("m")
    assert len(fresh) == len(snap) - 40 and _kept(db) != after


def test_a_recreated_table_at_the_same_version_does_not_match(tmp_path):
    def build(seed):
        db = index.connect(tmp_path / "r.chorus")
        db.register_model("m", {"name": "m", "dim": DIM}, vector_dtype="float16")
        db.add_embeddings("m", _rows(300, seed))
        return db

    db = build(0)
    db.snapshot("m")
    kept = db.cache_dir / _kept(db)[0]
    saved = kept.read_bytes()
    import shutil

    shutil.rmtree(tmp_path / "r.chorus")
    db = build(1)  # the same version number, other vectors and files
    (db.cache_dir / kept.name).write_bytes(saved)
    snap = index.connect(db.path).snapshot("m")
    x = _rows(300, 1)["vector"].iloc[7]
    np.testing.assert_allclose(snap.vectors_at([7])[0], x, atol=2e-3)


@pytest.mark.parametrize(
    "damage",
    ["truncated", "garbage", "short_header", "other_type", "flipped_digit", "other_values"],
)
def test_a_damaged_file_is_ignored(db, monkeypatch, damage):
    first = db.snapshot("m")
    path = db.cache_dir / _kept(db)[0]
    data = path.read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = os.urandom(len(data))
    elif damage == "short_header":
        data = data[: len(sc.MAGIC) + 3]
    elif damage == "flipped_digit":  # only the header's checksum tells
        assert b'"dim": 128' in data
        data = data.replace(b'"dim": 128', b'"dim": 129', 1)
    elif damage == "other_type":
        data = data.replace(b'"window_id": ["<i8", ', b'"window_id": ["<i4", ', 1)
    else:  # well formed, but other window ids: only the sample check against the table sees it
        columns = sc.load(db.cache_dir, "m", first.table).columns
        ids = columns["window_id"]
        offset = data.index(ids.tobytes())
        data = data[:offset] + (ids + 1).tobytes() + data[offset + ids.nbytes :]
    path.write_bytes(data)
    again = index.connect(db.path).snapshot("m")
    np.testing.assert_array_equal(again.window_id, first.window_id)
    np.testing.assert_array_equal(again.start_s, first.start_s)


@pytest.mark.parametrize("fault", ["outside", "past_end", "shifted"])
def test_a_wrong_layout_falls_back_to_the_files_metadata(db, fault):
    first = db.snapshot("m")
    every = first.vectors_at(np.arange(len(first)))
    cols, layout, _ = sc.load(db.cache_dir, "m", first.table)
    frag_pages = layout["fragments"][0][1]
    if fault == "outside":
        frag_pages[0][0] = "../../elsewhere.lance"
    elif fault == "past_end":
        frag_pages[0][1] += 10**9
    else:  # one row off, inside the file: only the sample check can tell
        frag_pages[0][1] += DIM * 2
    sc.save(db.cache_dir, "m", first.table, {k: np.array(v) for k, v in cols.items()}, layout)
    again = index.connect(db.path).snapshot("m")
    view = again.vector_view()
    assert view is not None
    np.testing.assert_array_equal(again.vectors_at(np.arange(len(again))), every)


@pytest.mark.parametrize("error", [OSError(28, "disk full"), PermissionError(13, "read-only")])
def test_a_failed_write_leaves_no_file(db, monkeypatch, error):
    monkeypatch.setattr(sc, "_write", lambda *a: (_ for _ in ()).throw(error))
    snap = db.snapshot("m")
    assert len(snap) == 760 and not list(db.cache_dir.iterdir())


def test_small_tables_write_nothing(db, monkeypatch):
    monkeypatch.setattr(sc, "MIN_ROWS", 10_000)
    assert len(db.snapshot("m")) == 760 and not _kept(db)


@pytest.fixture
def settled(tmp_path, settle):
    db = index.connect(tmp_path / "c.chorus")
    (tmp_path / "audio").mkdir()
    recs = [
        {
            "audio_root": tmp_path / "audio",
            "path": f"site {i % 3}/r{i}.wav",
            "site": None if i % 4 == 0 else f"Sé{i % 3}",
            "start_time": None if i % 5 == 0 else f"2024-05-0{1 + i % 9}T0{i % 10}:30:00",
        }
        for i in range(N_REC)
    ]
    rids = db.upsert_recordings(recs)
    db.register_model("m", {"name": "m", "dim": DIM}, vector_dtype="float16")
    rows = _rows(800, 0)
    rows["recording_id"] = rids[rows["recording_id"].to_numpy() % N_REC]
    db.add_embeddings("m", rows)
    db.build_index("m", factory="Flat")
    settle(db.path)
    return db


def _rows_found(db, q, exact: bool) -> list[dict]:
    return db.search("m", q).exact(exact).limit(12).to_arrow().to_pylist()


def _lance_free(monkeypatch) -> None:
    """Fail on any open of a Lance dataset."""
    fail = lambda *a, **k: pytest.fail("a Lance dataset was opened")  # noqa: E731
    monkeypatch.setattr(index.db.Database, "_dataset_stamped", fail)
    monkeypatch.setattr(index.db, "_dataset_at", fail)


def test_a_settled_table_is_opened_from_the_cache_with_the_same_answers(settled, monkeypatch):
    q = settled.snapshot("m").vectors_at([17])[0]
    want = {exact: _rows_found(settled, q, exact) for exact in (False, True)}
    assert (settled.cache_dir / "current_m.json").exists()
    assert (settled.cache_dir / rc.FILE).exists()
    _lance_free(monkeypatch)
    cold = index.connect(settled.path)
    for exact in (False, True):
        assert _rows_found(cold, q, exact) == want[exact]
    got = cold.search("m", [17, 40]).limit(5).to_arrow()  # window ids as the query
    assert got["score"].to_numpy()[0] > 0.5


def test_a_database_with_a_recorded_snapshot_is_freed_without_the_garbage_collector(settled):
    # a cycle would be collected in whichever thread the collector runs, LanceDB's event-loop
    # thread included, where the filter views' finalizer deadlocks
    settled.snapshot("m")  # through Lance: records the version
    cold = index.connect(settled.path)
    snap = cold.snapshot("m")
    assert snap._table is None and snap.table.version == snap.version  # opens, by its folder
    freed = weakref.ref(cold)
    gc.disable()
    try:
        del cold, snap
        assert freed() is None
    finally:
        gc.enable()


def test_a_cold_process_imports_neither_lance_nor_pandas(settled):
    q = settled.snapshot("m").vectors_at([3])[0]
    want = _rows_found(settled, q, False)
    np.save(settled.path.parent / "q.npy", q)
    code = (
        "import json, sys; import numpy as np; import index\n"
        f"settled = index.connect({str(settled.path)!r}, create=False)\n"
        f"q = np.load({str(settled.path.parent / 'q.npy')!r})\n"
        "rows = settled.search('m', q).limit(12).to_arrow().to_pylist()\n"
        "print(json.dumps([[r['window_id'], r['path'], r['site'], str(r['start_time'])] "
        "for r in rows]))\n"
        "print(json.dumps(sorted(m for m in ('lance', 'lancedb', 'pandas') if m in sys.modules)))"
    )
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert got.returncode == 0, got.stderr
    rows, loaded = (json.loads(line) for line in got.stdout.strip().splitlines()[-2:])
    assert rows == [[r["window_id"], r["path"], r["site"], str(r["start_time"])] for r in want]
    assert loaded == []


def test_a_commit_after_the_record_is_seen(settled, monkeypatch, settle):
    assert len(settled.snapshot("m")) == 800
    settled.add_embeddings("m", _rows(80, 1, rid0=0).assign(recording_id=1))
    assert len(index.connect(settled.path).snapshot("m")) == 880  # a recent folder: through Lance
    settle(settled.path)
    assert len(index.connect(settled.path).snapshot("m")) == 880  # records the new version
    _lance_free(monkeypatch)
    assert len(index.connect(settled.path).snapshot("m")) == 880


def test_a_recent_commit_is_not_recorded(tmp_path):
    db = index.connect(tmp_path / "r.chorus")
    db.register_model("m", {"name": "m", "dim": DIM}, vector_dtype="float16")
    db.add_embeddings("m", _rows(300, 0))
    db.snapshot("m")
    assert list(db.cache_dir.glob("snapshot_m_*.bin")) and not list(db.cache_dir.glob("current_*"))


def test_a_recorded_snapshot_opens_its_table_when_needed(settled):
    first = settled.snapshot("m")
    every = first.vectors_at(np.arange(len(first)))
    cold = index.connect(settled.path).snapshot("m")
    assert cold.table is not None and cold.table.version == first.version
    ids, vec = zip(*cold.iter_vectors(batch_rows=300), strict=True)
    np.testing.assert_array_equal(np.concatenate(vec), every)


@pytest.mark.parametrize("damage", ["garbage", "other_file", "outside", "missing"])
def test_a_damaged_record_falls_back_to_lance(settled, damage, caplog):
    first = settled.snapshot("m")
    path = settled.cache_dir / "current_m.json"
    note = json.loads(path.read_text())
    if damage == "garbage":
        path.write_text("{not json")
    elif damage == "other_file":
        note["file"] = rc.FILE
        path.write_text(json.dumps(note))
    elif damage == "outside":
        note["file"] = "../../elsewhere/snapshot_m_" + "0" * 40 + ".bin"
        path.write_text(json.dumps(note))
    else:
        (settled.cache_dir / note["file"]).unlink()
    again = index.connect(settled.path).snapshot("m")
    np.testing.assert_array_equal(again.window_id, first.window_id)
    assert again._table is not None  # opened through Lance


def test_a_moved_database_is_opened_from_its_new_folder(settled, tmp_path, monkeypatch):
    q = settled.snapshot("m").vectors_at([9])[0]
    want = _rows_found(settled, q, True)
    moved = tmp_path / "elsewhere" / "c.chorus"
    moved.parent.mkdir()
    os.rename(settled.path, moved)  # a rename keeps the folders' inodes and times: the stamps hold
    _lance_free(monkeypatch)
    cold = index.connect(moved)
    got = _rows_found(cold, q, True)
    assert [r["window_id"] for r in got] == [r["window_id"] for r in want]
    assert cold.snapshot("m").vector_view().root == str(moved / "lance" / "embeddings_m.lance")


def test_filters_and_per_recording_searches_work_on_a_recorded_snapshot(settled):
    q = settled.snapshot("m").vectors_at([33])[0]

    def ask(d):
        found = d.search("m", q).where("site = 'Sé1'").per_recording(2).limit(6).to_arrow()
        return found.to_pylist()

    want = ask(settled)
    cold = index.connect(settled.path)
    assert cold.snapshot("m")._table is None  # from the cache file
    got = ask(cold)
    assert got == want and len(got) == 6 and {r["site"] for r in got} == {"Sé1"}
