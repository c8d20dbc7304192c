"""A settled table is searched from the cache folder: no Lance, no pandas, the same answers."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import index
from index import recordings_cache as rc
from index import snapshot_cache as sc

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


def _settle(db) -> None:
    """Age every table's ``_versions`` folder past the settle time, as time passing would."""
    old = time.time_ns() - 60 * 10**9
    for folder in (db.path / "lance").glob("*.lance/_versions"):
        os.utime(folder, ns=(old, old))


@pytest.fixture
def db(tmp_path):
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
    _settle(db)
    return db


def _answers(db, q, exact: bool) -> list[dict]:
    return db.search("m", q).exact(exact).limit(12).to_arrow().to_pylist()


def _lance_free(monkeypatch) -> None:
    """Fail on any open of a Lance dataset."""
    fail = lambda *a, **k: pytest.fail("a Lance dataset was opened")  # noqa: E731
    monkeypatch.setattr(index.db.Database, "_dataset_stamped", fail)
    monkeypatch.setattr(index.db.Database, "_dataset_at", fail)


def test_a_settled_table_is_opened_from_the_cache_with_the_same_answers(db, monkeypatch):
    q = db.snapshot("m").vectors_at([17])[0]
    want = {exact: _answers(db, q, exact) for exact in (False, True)}
    assert (db.cache_dir / "current_m.json").exists() and (db.cache_dir / rc.FILE).exists()
    _lance_free(monkeypatch)
    cold = index.connect(db.path)
    for exact in (False, True):
        assert _answers(cold, q, exact) == want[exact]
    got = cold.search("m", [17, 40]).limit(5).to_arrow()  # window ids as the query
    assert got["score"].to_numpy()[0] > 0.5
    assert any(r["site"] is None for r in want[True]) or any(r["start_time"] for r in want[True])


def test_a_cold_process_imports_neither_lance_nor_pandas(db):
    q = db.snapshot("m").vectors_at([3])[0]
    want = _answers(db, q, False)
    np.save(db.path.parent / "q.npy", q)
    code = (
        "import json, sys; import numpy as np; import index\n"
        f"db = index.connect({str(db.path)!r}, create=False)\n"
        f"q = np.load({str(db.path.parent / 'q.npy')!r})\n"
        "rows = db.search('m', q).limit(12).to_arrow().to_pylist()\n"
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


def test_a_commit_after_the_record_is_seen(db, monkeypatch):
    assert len(db.snapshot("m")) == 800
    db.add_embeddings("m", _rows(80, 1, rid0=0).assign(recording_id=1))
    assert len(index.connect(db.path).snapshot("m")) == 880  # a recent folder: through Lance
    _settle(db)
    assert len(index.connect(db.path).snapshot("m")) == 880  # records the new version
    _lance_free(monkeypatch)
    assert len(index.connect(db.path).snapshot("m")) == 880


def test_a_recent_commit_is_not_recorded(tmp_path):
    db = index.connect(tmp_path / "r.chorus")
    db.register_model("m", {"name": "m", "dim": DIM}, vector_dtype="float16")
    db.add_embeddings("m", _rows(300, 0))
    db.snapshot("m")
    assert list(db.cache_dir.glob("snapshot_m_*.bin")) and not list(db.cache_dir.glob("current_*"))


def test_a_recorded_snapshot_opens_its_table_when_needed(db):
    first = db.snapshot("m")
    every = first.vectors_at(np.arange(len(first)))
    cold = index.connect(db.path).snapshot("m")
    assert cold.table is not None and cold.table.version == first.version
    ids, vec = zip(*cold.iter_vectors(batch_rows=300), strict=True)
    np.testing.assert_array_equal(np.concatenate(vec), every)


@pytest.mark.parametrize("damage", ["garbage", "other_file", "outside", "missing"])
def test_a_damaged_record_falls_back_to_lance(db, damage, caplog):
    first = db.snapshot("m")
    path = db.cache_dir / "current_m.json"
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
        (db.cache_dir / note["file"]).unlink()
    again = index.connect(db.path).snapshot("m")
    np.testing.assert_array_equal(again.window_id, first.window_id)
    assert again._table is not None  # opened through Lance


def test_a_moved_database_is_opened_from_its_new_folder(db, tmp_path, monkeypatch):
    q = db.snapshot("m").vectors_at([9])[0]
    want = _answers(db, q, True)
    moved = tmp_path / "elsewhere" / "c.chorus"
    moved.parent.mkdir()
    os.rename(db.path, moved)  # a rename keeps the folders' inodes and times: the stamps hold
    _lance_free(monkeypatch)
    cold = index.connect(moved)
    got = _answers(cold, q, True)
    assert [r["window_id"] for r in got] == [r["window_id"] for r in want]
    assert cold.snapshot("m").vector_view().root == str(moved / "lance" / "embeddings_m.lance")


def test_filters_and_per_recording_searches_work_on_a_recorded_snapshot(db):
    q = db.snapshot("m").vectors_at([33])[0]

    def ask(d):
        found = d.search("m", q).where("site = 'Sé1'").per_recording(2).limit(6).to_arrow()
        return found.to_pylist()

    want = ask(db)
    cold = index.connect(db.path)
    assert cold.snapshot("m")._table is None  # from the cache file
    got = ask(cold)
    assert got == want and len(got) == 6 and {r["site"] for r in got} == {"Sé1"}
