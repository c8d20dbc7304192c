"""Index tiers: what each tier knows, how it is saved with the index, and old settings files."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pandas as pd
import pytest

import index
from index import faiss_index as fi
from index import tiers

DIM = 32


def _db(tmp_path, n: int = 300) -> tuple[index.Database, np.ndarray]:
    rng = np.random.default_rng(0)
    vec = rng.standard_normal((n, DIM)).astype(np.float32)
    vec /= np.linalg.norm(vec, axis=1, keepdims=True)
    db = index.connect(tmp_path / "t.chorus")
    starts = (np.arange(n) % 50) * 5.0
    rows = {"recording_id": np.arange(n) // 50, "start_s": starts, "end_s": starts + 5.0}
    db.add_embeddings("m", pd.DataFrame({**rows, "vector": list(vec)}))
    return db, vec


@pytest.mark.parametrize(
    ("factory", "kind", "exact", "params"),
    [
        ("SQfp16", "flat", True, {}),
        ("Flat", "flat", True, {}),
        ("SQ8", "flat", False, {}),
        ("HNSW16", "hnsw", True, {"efSearch": fi.HNSW_EF_SEARCH}),
        ("HNSW32,SQfp16", "hnsw", True, {"efSearch": fi.HNSW_EF_SEARCH}),
        ("HNSW32,SQ8", "hnsw", False, {"efSearch": fi.HNSW_EF_SEARCH}),
        ("IVF8,Flat", "ivf", False, {"nprobe": fi.IVF_NPROBE}),
        (
            "IVF8,PQ4x4fs,RFlat",
            "ivf",
            True,
            {"nprobe": fi.IVF_NPROBE, "k_factor": fi.REFINE_K_FACTOR},
        ),
        (
            "IVF8,PQ4x4fs,Refine(SQfp16)",
            "ivf",
            True,
            {"nprobe": fi.IVF_NPROBE, "k_factor": fi.REFINE_K_FACTOR},
        ),
        ("IVF8,SQ8,Refine(SQ8)", "ivf", False, {"nprobe": fi.IVF_NPROBE, "k_factor": 128}),
    ],
)
def test_tier_of_a_factory_string(factory, kind, exact, params):
    tier = tiers.tier_for_factory(factory)
    assert (tier.kind, tier.factory, tier.exact_vectors) == (kind, factory, exact)
    assert tier.default_params() == params
    made = faiss.index_factory(DIM, factory, faiss.METRIC_INNER_PRODUCT)
    kernel = tier.exact_kernel(made)
    assert (kernel is not None) == exact
    assert tier.exhaustive == (kind == "flat")


def test_tiers_chosen_by_size_and_their_search_parameters():
    assert fi.choose_tier(10, 1536)[0] == tiers.FlatTier("SQfp16")
    tier, params = fi.choose_tier(fi.FLAT_MAX, 1536)
    assert tier == tiers.HnswTier("HNSW32,SQfp16") and params == {"efSearch": fi.HNSW_EF_SEARCH}
    tier, params = fi.choose_tier(1_000_000, 1536)
    assert tier.kind == "ivf" and params["k_factor"] == tiers.refine_k_factor(1_000_000)
    # filtered searches widen the beam / visit more cells
    hnsw = faiss.index_factory(DIM, "HNSW16", faiss.METRIC_INNER_PRODUCT)
    p = tiers.HnswTier("HNSW16").search_params(hnsw, {"efSearch": 64}, None, 10, 0.25)
    assert p.efSearch == 256
    ivf = faiss.index_factory(DIM, "IVF64,PQ4x4fs,RFlat", faiss.METRIC_INNER_PRODUCT)
    p = tiers.IvfTier("IVF64,PQ4x4fs,RFlat").search_params(
        ivf, {"nprobe": 8, "k_factor": 4}, None, 10, 0.5
    )
    assert p.k_factor == 4


def test_tier_is_saved_with_the_index_and_reloaded(tmp_path):
    db, _ = _db(tmp_path)
    s = db.build_index("m", factory="HNSW16", efSearch=40)
    saved = json.loads((db.faiss_dir / "m.json").read_text())
    assert saved["tier"] == {"kind": "hnsw", "factory": "HNSW16"}
    ann = fi.AnnIndex.load(db.faiss_dir, "m")
    assert ann.tier == tiers.HnswTier("HNSW16") == s.tier
    assert ann.settings.params["efSearch"] == 40


def test_settings_saved_before_tiers_still_load(tmp_path):
    db, vec = _db(tmp_path)
    db.build_index("m", factory="IVF4,PQ8x4fs,RFlat")
    path = db.faiss_dir / "m.json"
    old = json.loads(path.read_text())
    del old["tier"]  # as written by an older Chorus
    path.write_text(json.dumps(old))
    ann = fi.AnnIndex.load(db.faiss_dir, "m")
    assert ann is not None and ann.tier == tiers.IvfTier("IVF4,PQ8x4fs,RFlat")
    assert ann.exact_storage
    db.search_state.forget("m")
    assert db.search("m", vec[5]).limit(1).to_pandas()["window_id"].iloc[0] == 5


def test_unknown_tier_kind_is_a_damaged_index(tmp_path):
    db, vec = _db(tmp_path)
    db.build_index("m")
    path = db.faiss_dir / "m.json"
    data = json.loads(path.read_text())
    data["tier"] = {"kind": "nonsense", "factory": "SQfp16"}
    path.write_text(json.dumps(data))
    assert fi.AnnIndex.load(db.faiss_dir, "m") is None
    with pytest.raises(ValueError, match="unknown index tier 'nonsense'"):
        tiers.tier_from_dict(data["tier"])


@pytest.mark.parametrize(
    "factory, mapped", [("SQfp16", True), ("HNSW16", True), ("IVF4,PQ8x4fs", False)]
)
def test_a_search_maps_the_index_unless_fast_scan_codes_are_copied_anyway(
    tmp_path, monkeypatch, factory, mapped
):
    db, vec = _db(tmp_path)
    db.build_index("m", factory=factory)
    assert tiers.tier_for_factory(factory).mappable == mapped
    flags = []
    real = faiss.read_index
    monkeypatch.setattr(fi.faiss, "read_index", lambda p, f=0: flags.append(f) or real(p, f))
    ann = fi.AnnIndex.load_checked(db.faiss_dir, "m", mmap=True)
    assert bool(flags[0] & faiss.IO_FLAG_MMAP_IFC) == mapped
    assert ann.index.ntotal == len(vec)
