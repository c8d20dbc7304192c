"""A snapshot's columns and vector layout kept beside the table: the same snapshot, no scan."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest

import index
from index import snapshot_cache as sc
from index import vector_layout as vl
from index.schema import WINDOW_META_COLUMNS

DIM = 128  # full-zip pages, so the view opens


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
