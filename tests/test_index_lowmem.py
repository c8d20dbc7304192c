"""The low-memory tier: IVF-PQ codes in RAM, the shortlist re-ranked from the LanceDB table.

Every test runs twice: with the table's vectors read in place (``index.vector_view``, the tier
auto picks from ``FLAT_MAX`` up) and through ``take`` (a table whose files cannot be mapped,
where auto picks the tier by the bytes threshold)."""

from __future__ import annotations

import faiss
import numpy as np
import pandas as pd
import pytest

import index
from index import faiss_index as fi
from index import tiers
from index.snapshot import Snapshot

DIM = 64
N = 3000


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((40, DIM))
    x = centres[rng.integers(0, 40, n)] + 0.6 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _rows(vec: np.ndarray, rid0: int = 0) -> pd.DataFrame:
    starts = (np.arange(len(vec)) % 100) * 5.0
    return pd.DataFrame(
        {
            "recording_id": rid0 + np.arange(len(vec)) // 100,
            "start_s": starts,
            "end_s": starts + 5.0,
            "vector": list(vec),
        }
    )


@pytest.fixture(params=["in_place", "take"])
def lowmem(request, tmp_path, monkeypatch):
    """A database whose auto index is the low-memory tier (thresholds scaled down)."""
    if request.param == "take":
        monkeypatch.setattr("index.snapshot.open_view", lambda *a: None)
    in_place = request.param == "in_place"
    monkeypatch.setattr(fi, "FLAT_MAX", 100)
    monkeypatch.setattr(fi, "HNSW_MAX", 200)
    monkeypatch.setattr(fi, "LOWMEM_BYTES", 2 * DIM * 1000)
    vec = _clustered(N)
    db = index.connect(tmp_path / "lm.chorus")
    db.add_embeddings("m", _rows(vec))
    s = db.build_index("m")
    assert (db.snapshot("m").vector_view() is not None) == in_place
    return db, vec, s


def _truth(vec: np.ndarray, q: np.ndarray, k: int, allowed=None) -> np.ndarray:
    s = vec @ q
    if allowed is not None:
        s = np.where(allowed, s, -np.inf)
    return np.argsort(-s, kind="stable")[:k]


def _k_factor(db) -> float:
    """The shortlist the auto choice gives: the IVF-PQ one when the re-rank reads mapped rows."""
    in_place = db.snapshot("m").vector_view() is not None
    return tiers.in_place_k_factor(N) if in_place else fi.LOWMEM_K_FACTOR


def test_auto_picks_the_low_memory_tier_by_size(lowmem):
    db, _, s = lowmem
    assert s.tier.kind == "lowmem" and s.factory == f"IVF{tiers.ivf_cells(N)},PQ8x4fs"
    assert s.params == {"nprobe": fi.IVF_NPROBE, "k_factor": _k_factor(db)}
    ann = fi.AnnIndex.load(db.faiss_dir, "m")
    assert ann.tier.rerank_from_table and not ann.exact_storage
    state = db.index_state("m")
    in_place = db.snapshot("m").vector_view() is not None
    assert state["tier"] == "lowmem" and state["in_place"] == in_place
    described = db.info()["models"]["m"]["index"]
    assert described.endswith("vectors read in place from the table") == in_place
    assert fi.choose_tier(N - 1, 100)[0].kind == "ivf"  # below the bytes threshold
    assert fi.choose_tier(10**8, 100)[0].kind == "ivf"  # d not divisible by 8: no fast-scan PQ
    assert fi.choose_tier(10**8, 1536)[0] == tiers.LowMemTier("IVF32768_HNSW32,PQ192x4fs")
    # vectors readable in place: codes only from FLAT_MAX up, with IVF-PQ's own shortlist
    tier, params = fi.choose_tier(10**5, 1536, in_place=True)
    assert tier.kind == "lowmem" and params["k_factor"] == tiers.in_place_k_factor(10**5) == 16
    assert [tiers.in_place_k_factor(n) for n in (10**6, 2 * 10**6, 4 * 10**6)] == [64, 64, 128]
    assert fi.choose_tier(fi.FLAT_MAX - 1, 1536, in_place=True)[0].kind == "flat"
    assert tiers.tier_for_factory("IVF8,PQ8x4fs").kind == "lowmem"
    # the shortlist doubles per 4x windows beyond the measured 2 M
    sized = [tiers.LowMemTier().params_for_size(n)["k_factor"] for n in (2e6, 8e6, 1e8)]
    assert sized == [fi.LOWMEM_K_FACTOR, 2 * fi.LOWMEM_K_FACTOR, 8 * fi.LOWMEM_K_FACTOR]


def test_search_reranks_the_shortlist_exactly_without_scanning_the_table(lowmem, monkeypatch):
    db, vec, _ = lowmem
    monkeypatch.setattr(Snapshot, "iter_vectors", lambda *a, **k: pytest.fail("table scan"))
    rng = np.random.default_rng(3)
    hits = 0
    for i in rng.choice(N, 10, replace=False):
        q = vec[i] + 0.2 * _clustered(1, seed=int(i))[0]
        q /= np.linalg.norm(q)
        got = db.search("m", q).limit(10).to_pandas()
        # the scores are exact cosines (read from the table), not PQ estimates
        np.testing.assert_allclose(got["score"], vec[got["window_id"]] @ q, atol=1e-5)
        hits += len(set(got["window_id"]) & set(_truth(vec, q, 10)))
    assert hits / 100 >= 0.9


def test_k_factor_of_one_search_sets_its_shortlist(lowmem, monkeypatch):
    db, vec, s = lowmem
    asked = []
    real = Snapshot.scores_at
    monkeypatch.setattr(
        Snapshot, "scores_at", lambda snap, offs, q: asked.append(len(offs)) or real(snap, offs, q)
    )
    q = vec[11]
    kf = s.params["k_factor"]
    default = db.search("m", q).limit(5).to_arrow()
    same = db.search("m", q).index_params(k_factor=kf).limit(5).to_arrow()
    half = db.search("m", q).index_params(k_factor=kf / 2).limit(5).to_arrow()
    narrow = db.search("m", q).index_params(k_factor=2).limit(5).to_arrow()
    assert asked == [5 * kf, 5 * kf, 5 * kf / 2, 10]
    assert same.equals(default) and default["window_id"].to_pylist()[0] == 11
    assert len(half) == len(narrow) == 5


def test_new_windows_are_found_and_deleted_ones_hidden(lowmem):
    db, vec, _ = lowmem
    new = _clustered(5, seed=9)
    new_ids = db.add_embeddings("m", _rows(new, rid0=1000))  # after the index was built
    got = db.search("m", new[2]).limit(3).to_pandas()
    assert got["window_id"].iloc[0] == new_ids[2]
    db.delete_windows("m", 0)  # windows 0..99
    got = db.search("m", vec[7]).limit(20).to_pandas()
    assert not (got["window_id"] < 100).any()


def test_filtered_searches_on_the_low_memory_tier(lowmem, monkeypatch):
    db, vec, _ = lowmem
    q = vec[2500]
    # a large allowed set goes through the index with a selector
    monkeypatch.setattr("index.search.EXACT_SUBSET_MAX", 10)
    got = db.search("m", q).where("recording_id >= 10").limit(10).to_pandas()
    allowed = np.arange(N) >= 1000
    assert (got["window_id"] >= 1000).all() and len(got) == 10
    assert len(set(got["window_id"]) & set(_truth(vec, q, 10, allowed))) >= 8
    # a small one is scored exactly
    monkeypatch.setattr("index.search.EXACT_SUBSET_MAX", 20_000)
    got = db.search("m", q).where("recording_id = 3").limit(5).to_pandas()
    allowed = (np.arange(N) // 100) == 3
    assert got["window_id"].tolist() == _truth(vec, q, 5, allowed).tolist()


def test_exact_search_streams_the_table(lowmem):
    db, vec, _ = lowmem
    q = _clustered(1, seed=42)[0]
    got = db.search("m", q).exact().limit(10).to_pandas()
    assert got["window_id"].tolist() == _truth(vec, q, 10).tolist()
    np.testing.assert_allclose(got["score"], np.sort(vec @ q)[::-1][:10], atol=1e-5)


def test_grown_archive_keeps_the_tier_and_its_shortlist(lowmem):
    db, _, s = lowmem
    db.add_embeddings("m", _rows(_clustered(50, seed=5), rid0=2000))
    s2 = db.build_index("m")
    assert (s2.action, s2.tier, s2.n_vectors) == ("updated", s.tier, N + 50)
    assert s2.params["k_factor"] == _k_factor(db)


def test_an_hnsw_quantizer_searches_its_cells_with_enough_candidates(tmp_path, monkeypatch):
    """From HNSW_QUANTIZER_MIN_CELLS cells the centroids sit in an HNSW graph; its efSearch is
    raised to at least nprobe (and QUANTIZER_EF_SEARCH), filtered searches included."""
    monkeypatch.setattr(tiers, "HNSW_QUANTIZER_MIN_CELLS", 16)
    assert tiers.LowMemTier.for_size(N, DIM).factory == f"IVF{tiers.ivf_cells(N)}_HNSW32,PQ8x4fs"
    vec = _clustered(N)
    db = index.connect(tmp_path / "h.chorus")
    db.add_embeddings("m", _rows(vec))
    s = db.build_index("m", factory="IVF16_HNSW32,PQ8x4fs", nprobe=16, k_factor=64)
    ann = fi.AnnIndex.load(db.faiss_dir, "m")
    ivf = tiers.base_index(ann.index)
    assert s.tier.kind == "lowmem"
    quantizer = faiss.downcast_index(ivf.quantizer)
    assert isinstance(quantizer, faiss.IndexHNSW)
    assert quantizer.hnsw.efSearch == tiers.QUANTIZER_EF_SEARCH  # what later add()s use
    # the full build assigned every vector to its nearest centroid, not through the graph
    centroids = quantizer.storage.reconstruct_n(0, quantizer.ntotal)  # (nlist, d)
    nearest = np.bincount(np.argmax(vec @ centroids.T, axis=1), minlength=ivf.nlist)
    assert nearest.tolist() == [ivf.get_list_size(c) for c in range(ivf.nlist)]
    monkeypatch.setattr(tiers, "QUANTIZER_EF_SEARCH", 8)
    tiers._HNSW_PARAMS.clear()
    ann.tier.search_params(ann.index, {"nprobe": 4}, None, 10, 1.0)  # efSearch 8
    ann.tier.search_params(ann.index, {"nprobe": 4}, None, 10, 1 / 3)  # 12 cells filtered
    assert sorted(tiers._HNSW_PARAMS) == [8, 12]
    monkeypatch.undo()
    allowed = np.arange(N) // 100 % 3 == 0
    for j in range(5):
        q = vec[j * 97]
        got = db.search("m", q).limit(10).to_pandas()["window_id"].to_numpy()
        assert len(set(got) & set(_truth(vec, q, 10))) >= 9
        sub = db.search("m", q).where("recording_id % 3 = 0").limit(10).to_pandas()
        assert allowed[sub["window_id"].to_numpy()].all() and len(sub) == 10
