"""FAISS index: size-based choice, settings files, incremental updates, rebuilds, ANN recall."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pandas as pd
import pytest

import index
from index import faiss_index as fi
from index.tiers import ivf_cells

DIM = 64


def _clustered(n: int, seed: int = 0, dim: int = DIM, clusters: int = 50) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, dim))
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _db(tmp_path, vec: np.ndarray, per_rec: int = 100) -> index.Database:
    db = index.connect(tmp_path / "f.chorus")
    n = len(vec)
    starts = (np.arange(n) % per_rec) * 5.0
    db.add_embeddings(
        "m",
        pd.DataFrame(
            {
                "recording_id": np.arange(n) // per_rec,
                "start_s": starts,
                "end_s": starts + 5.0,
                "vector": list(vec),
            }
        ),
    )
    return db


def _add(db, vec, rid=10_000):
    starts = np.arange(len(vec)) * 5.0
    rows = pd.DataFrame(
        {"recording_id": rid, "start_s": starts, "end_s": starts + 5.0, "vector": list(vec)}
    )
    return db.add_embeddings("m", rows)


def test_choose_factory_thresholds():
    # float16 storage by default; float16=False keeps float32 vectors
    assert fi.choose_factory(10, 1536) == ("SQfp16", {})
    assert fi.choose_factory(10, 1536, float16=False) == ("Flat", {})
    assert fi.choose_factory(fi.FLAT_MAX - 1, 1536, float16=False)[0] == "Flat"
    fac, params = fi.choose_factory(fi.FLAT_MAX, 1536, float16=False)
    assert fac == f"HNSW{fi.HNSW_M},Flat" and params == {"efSearch": fi.HNSW_EF_SEARCH}
    assert fi.choose_factory(fi.FLAT_MAX, 1536)[0] == f"HNSW{fi.HNSW_M},SQfp16"
    fac, params = fi.choose_factory(1_000_000, 1536, float16=False)
    assert fac == "IVF4096,PQ192x4fs,RFlat"
    assert params == {"nprobe": fi.IVF_NPROBE, "k_factor": fi.REFINE_K_FACTOR}
    assert fi.choose_factory(1_000_000, 100)[0].startswith("IVF4096,SQ8")  # d not divisible by 8
    assert fi.choose_factory(1_000_000, 1536)[0] == "IVF4096,PQ192x4fs,Refine(SQfp16)"


def test_refine_k_factor_grows_with_the_archive():
    assert fi.refine_k_factor(100_000) == fi.REFINE_K_FACTOR_MIN
    assert fi.refine_k_factor(1_000_000) == fi.REFINE_K_FACTOR
    ks = [fi.refine_k_factor(n) for n in (10**5, 3 * 10**5, 10**6, 10**7, 10**9)]
    assert ks == sorted(ks) and ks[-1] == 4 * fi.REFINE_K_FACTOR


def test_exact_search_scans_the_index_copy_not_lancedb(tmp_path, monkeypatch):
    vec = _clustered(600)
    db = _db(tmp_path, vec)
    db.build_index("m", factory="IVF8,PQ16x4fs,Refine(SQfp16)")
    new = _clustered(5, seed=4)
    _add(db, new)  # committed after the build: scored from LanceDB
    allv = np.concatenate([vec, new])
    allv /= np.linalg.norm(allv, axis=1, keepdims=True)
    q = allv[7] + 0.1 * allv[602]
    q /= np.linalg.norm(q)
    truth = np.argsort(-(allv @ q))[:10]
    monkeypatch.setattr(
        type(db.snapshot("m")), "iter_vectors", lambda *a, **k: pytest.fail("table scan")
    )
    hits = db.search("m", q).exact().limit(10).to_pandas()
    assert hits["window_id"].tolist() == truth.tolist()
    np.testing.assert_allclose(hits["score"], (allv @ q)[truth], atol=1e-3)
    sub = db.search("m", q).where("window_id >= 300").exact().limit(5).to_pandas()
    assert (sub["window_id"] >= 300).all() and len(sub) == 5


def test_settings_files_and_reload(tmp_path):
    vec = _clustered(500)
    db = _db(tmp_path, vec)
    s = db.build_index("m")
    assert (s.factory, s.n_vectors, s.dim, s.action) == ("SQfp16", 500, DIM, "built")
    saved = json.loads((db.faiss_dir / "m.json").read_text())
    assert saved["table_version"] == db.windows("m").version and saved["metric"] == "inner_product"
    files = sorted(p.name for p in db.faiss_dir.iterdir())
    generation = [f"m.{s.token}.index", f"m.{s.token}.ids.npy"]
    assert files == sorted(["m.json", "m.index", "m.ids.npy", *generation])
    # the stable names open directly: position i of faiss/m.index is window m.ids.npy[i]
    raw = faiss.read_index(str(db.faiss_dir / "m.index"))
    ids = np.load(db.faiss_dir / "m.ids.npy")
    _, pos = raw.search(vec[:1], 1)
    assert raw.ntotal == 500 and ids[pos[0, 0]] == db.windows("m").to_pandas()["window_id"][0]
    ann = fi.AnnIndex.load(db.faiss_dir, "m")
    assert len(ann) == 500 and ann.exact_storage and ann.is_exhaustive
    assert db.index_state("m")["state"] == "current"
    assert db.build_index("m").action == "unchanged"
    s2 = db.build_index("m", rebuild=True)  # a new generation replaces the old files
    assert s2.token != s.token and len(list(db.faiss_dir.iterdir())) == 5


def test_incremental_update_and_rebuild_rules(tmp_path):
    vec = _clustered(600)
    db = _db(tmp_path, vec)
    db.build_index("m", factory="HNSW16")
    new_ids = _add(db, _clustered(50, seed=1))
    state = db.index_state("m")
    assert (state["state"], state["new_windows"]) == ("stale", 50)
    s = db.build_index("m", factory="HNSW16")
    assert (s.action, s.n_vectors, s.factory) == ("updated", 650, "HNSW16")
    assert set(new_ids) <= set(fi.AnnIndex.load(db.faiss_dir, "m").ids)
    # deleting a few windows keeps the index; deleting many triggers a rebuild
    db.delete_windows("m", 0)
    assert db.build_index("m", factory="HNSW16").action == "unchanged"
    for rid in range(1, 3):
        db.delete_windows("m", rid)
    s = db.build_index("m", factory="HNSW16")
    assert (s.action, s.n_vectors) == ("built", 350)
    # another factory means a rebuild too
    assert db.build_index("m", factory="IVF8,Flat").action == "built"
    with pytest.raises(ValueError, match="bad FAISS factory"):
        db.build_index("m", factory="NoSuchIndex42")


@pytest.mark.parametrize("in_place", [True, False])
def test_auto_crosses_size_tier(tmp_path, monkeypatch, in_place):
    monkeypatch.setattr(fi, "FLAT_MAX", 400)
    if not in_place:  # a table whose vectors cannot be mapped: the index keeps its own copy
        monkeypatch.setattr("index.snapshot.open_view", lambda *a: None)
    db = _db(tmp_path, _clustered(300))
    assert db.build_index("m").factory == "SQfp16"
    _add(db, _clustered(200, seed=3))
    s = db.build_index("m")
    want = f"IVF{ivf_cells(500)},PQ{DIM // 8}x4fs" if in_place else "HNSW32,SQfp16"
    assert (s.factory, s.action, s.n_vectors) == (want, "built", 500)


@pytest.mark.parametrize(
    ("factory", "params"),
    [("HNSW32", {"efSearch": 64}), ("IVF32,PQ16x4fs,RFlat", {"nprobe": 8, "k_factor": 8})],
)
def test_ann_recall_on_clustered_data(tmp_path, factory, params):
    vec = _clustered(4000)
    db = _db(tmp_path, vec)
    db.build_index("m", factory=factory, **params)
    rng = np.random.default_rng(7)
    queries = vec[rng.choice(len(vec), 20, replace=False)] + 0.05 * rng.standard_normal((20, DIM))
    hits = 0
    for q in queries:
        truth = set(np.argsort(-(vec @ q))[:10])
        got = db.search("m", q).limit(10).to_pandas()["window_id"]
        hits += len(truth & set(got))
    assert hits / (10 * len(queries)) >= 0.9


def test_inconsistent_index_files_are_ignored(tmp_path):
    vec = _clustered(200)
    db = _db(tmp_path, vec)
    s = db.build_index("m")
    np.save(db.faiss_dir / f"m.{s.token}.ids.npy", np.arange(5))  # as after a torn write
    assert fi.AnnIndex.load(db.faiss_dir, "m") is None
    hits = db.search("m", vec[3]).limit(3).to_pandas()  # exact search still answers
    assert hits["window_id"].iloc[0] == 3
    assert db.build_index("m").action == "built"


def test_float16_index_storage(tmp_path):
    vec = _clustered(300)
    db = _db(tmp_path, vec)
    s = db.build_index("m", float16=True)
    assert s.factory == "SQfp16"
    hits = db.search("m", vec[11]).limit(5).to_pandas()
    assert hits["window_id"].iloc[0] == 11
    np.testing.assert_allclose(hits["score"].iloc[0], 1.0, atol=1e-3)


def test_search_parameters_a_user_sets_are_saved_and_kept(tmp_path):
    db = _db(tmp_path, _clustered(300))
    db.build_index("m", factory="HNSW16")
    s = db.build_index("m", factory="HNSW16", efSearch=np.int64(512))  # nothing new to index
    assert s.action == "unchanged" and s.params["efSearch"] == 512
    assert json.loads((db.faiss_dir / "m.json").read_text())["params"]["efSearch"] == 512
    _add(db, _clustered(20, seed=1))
    s = db.build_index("m", factory="HNSW16")  # what `chorus embed` runs after an ingest
    assert s.action == "updated" and s.params["efSearch"] == 512
    assert fi.AnnIndex.load(db.faiss_dir, "m").settings.params["efSearch"] == 512


@pytest.mark.parametrize(
    "factory, params, message",
    [
        ("HNSW16", {"ef_search": 16}, r"unknown index parameter\(s\) \['ef_search'\]"),
        ("HNSW16", {"efSearch": 0}, "efSearch must be a positive integer"),
        ("IVF8,Flat", {"nprobe": float("inf")}, "nprobe must be a positive integer"),
        ("IVF8,PQ4x4fs,RFlat", {"k_factor": 0.5}, "k_factor must be a number >= 1"),
        ("IVF1024,Flat", {}, "1024 IVF cells needs at least 1024 windows to train, got 300"),
    ],
)
def test_bad_build_requests_fail_clearly_and_write_nothing(tmp_path, factory, params, message):
    db = _db(tmp_path, _clustered(300))
    with pytest.raises(ValueError, match=message):
        db.build_index("m", factory=factory, **params)
    assert not list(db.faiss_dir.iterdir())
