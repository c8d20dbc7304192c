"""A damaged FAISS index is noticed on load: exact search with one warning, rebuilt by the next
build; ``check_database`` finds damaged tables and vectors."""

from __future__ import annotations

import logging
import shutil

import numpy as np
import pandas as pd
import pytest

import index

DIM = 32


def _db(path, n=600, seed=0) -> index.Database:
    rng = np.random.default_rng(seed)
    vec = rng.standard_normal((n, DIM)).astype(np.float32)
    db = index.connect(path)
    starts = (np.arange(n) % 100) * 5.0
    rows = pd.DataFrame(
        {
            "recording_id": np.arange(n) // 100,
            "start_s": starts,
            "end_s": starts + 5.0,
            "vector": list(vec),
        }  # fmt: skip
    )
    db.add_embeddings("m", rows)
    db.build_index("m", factory="HNSW16,Flat")
    return db


def _exact(db, q):
    return db.search("m", q).exact().limit(10).to_pandas()


def _damage_index(db):
    path = db.faiss_dir / "m.index"  # a hard link to the current generation
    data = bytearray(path.read_bytes())
    rng = np.random.default_rng(1)
    for at in rng.integers(len(data) // 2, len(data), 50):
        data[at] ^= 0xFF
    path.write_bytes(bytes(data))  # rewrites the shared inode: the generation file too


def _shuffle_ids(db):
    path = db.faiss_dir / "m.ids.npy"
    ids = np.load(path)
    np.random.default_rng(2).shuffle(ids)
    with open(path, "r+b") as f:  # in place: the hard-linked generation file changes too
        np.save(f, ids)


def _foreign_index(db, tmp_path):
    other = _db(tmp_path / "other.chorus", seed=5)
    shutil.rmtree(db.faiss_dir)
    shutil.copytree(other.faiss_dir, db.faiss_dir)


@pytest.mark.parametrize("damage", ["bytes", "ids", "foreign"])
def test_a_damaged_index_falls_back_to_exact_search_and_is_rebuilt(tmp_path, caplog, damage):
    db = _db(tmp_path / "db.chorus")
    q = db.vectors("m", [7])[1][0]
    want = _exact(index.connect(db.path), q)
    {"bytes": _damage_index, "ids": _shuffle_ids}.get(damage, lambda d: None)(db)
    if damage == "foreign":
        _foreign_index(db, tmp_path)
    fresh = index.connect(db.path)
    with caplog.at_level(logging.WARNING, logger="chorus"):
        got = fresh.search("m", q).limit(10).to_pandas()
        fresh.search("m", q).limit(10).to_pandas()
    warnings = [r for r in caplog.records if "not usable" in r.getMessage()]
    assert len(warnings) == 1 and "\n" not in warnings[0].getMessage()
    assert got.window_id.tolist() == want.window_id.tolist()
    assert got.score.max() <= 1.0 + 1e-5
    assert fresh.index_state("m")["state"] == "damaged"
    assert "damaged" in fresh.info()["models"]["m"]["index"]
    settings = fresh.build_index("m", factory="HNSW16,Flat")
    assert settings.action == "built"
    assert fresh.index_state("m")["state"] == "current"


def test_the_index_records_checksums_version_and_rows_covered(tmp_path):
    db = _db(tmp_path / "db.chorus")
    import json

    s = json.loads((db.faiss_dir / "m.json").read_text())
    assert set(s["checksums"]) == {"index", "ids"} and len(s["checksums"]["index"]) == 64
    assert s["table_version"] == db.windows("m").version and s["n_vectors"] == 600
    assert s["database_id"] == db.meta["database_id"]


def _flip_vector_bytes(db, n_flips=50):
    """Flip bytes of stored vectors in the table's data files (bit-rot)."""
    files = sorted((db.path / "lance" / "embeddings_m.lance" / "data").glob("*.lance"))
    data = bytearray(files[0].read_bytes())
    # vectors are the bulk of the file: float32 of 32 dims, 600 rows, after the id/time columns
    rng = np.random.default_rng(3)
    span = 600 * DIM * 4
    start = len(data) // 2 - span // 4
    for at in rng.choice(np.arange(start, start + span // 2), n_flips, replace=False):
        data[at] ^= 0x40  # an exponent bit of some float: the vector is no longer unit length
    files[0].write_bytes(bytes(data))


def test_check_finds_flipped_vectors_and_repair_makes_the_rerun_redo_them(tmp_path):
    from index.check import check_database

    db = _db(tmp_path / "db.chorus")
    for rid in range(6):
        db.finish_recording("m", rid, 100)
    ok, found = check_database(db.path)
    assert found == [] and any("embeddings_m" in line for line in ok)
    _flip_vector_bytes(db)
    _, found = check_database(db.path)
    assert len(found) >= 1 and "damaged vectors" in found[0].problem
    assert "--repair" in found[0].repair
    _, found = check_database(db.path, repair=True)
    assert all(f.repaired for f in found if "vectors" in f.problem)
    assert len(index.connect(db.path).done_recordings("m")) < 6


def test_check_reports_an_unreadable_table_and_a_bad_chorus_json(tmp_path):
    from index.check import check_database

    db = _db(tmp_path / "db.chorus")
    data = sorted((db.path / "lance" / "embeddings_m.lance" / "data").glob("*.lance"))
    data[0].unlink()
    _, found = check_database(db.path)
    assert [f.part for f in found] == ["table embeddings_m"] and "cannot be read" in found[
        0
    ].problem
    _, found = check_database(db.path, repair=True)
    assert found[0].repaired and "embeddings_m" not in index.connect(db.path).table_names()
    for text in ("", "garbage{", "[1, 2]"):
        (db.path / "chorus.json").write_text(text)
        _, found = check_database(db.path)
        assert found[0].part == "chorus.json" and "backup" in found[0].repair


def test_check_finds_a_damaged_index_and_repair_rebuilds_it(tmp_path):
    from index.check import check_database

    db = _db(tmp_path / "db.chorus")
    ok, found = check_database(db.path)
    assert found == [] and any("embeddings_m" in line and "index current" in line for line in ok)
    _damage_index(db)
    _, found = check_database(db.path)
    assert [f.part for f in found] == ["index m"] and "checksum" in found[0].problem
    _, found = check_database(db.path, repair=True)
    assert [f.repaired for f in found] == [True]
    ok, found = check_database(db.path)
    assert found == [] and any("index current" in line for line in ok)
