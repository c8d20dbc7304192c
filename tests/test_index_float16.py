"""Vectors stored as float16: same answers as float32, and every reader works on such a table."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from agile_synth import MODEL, make_synth_db

import index
from index.cluster import cluster_windows
from index.labels import add_labels
from index.probe import train_probe
from index.projection import project

DIM = 48


def _clustered(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(0).standard_normal((20, DIM))
    x = centres[rng.integers(0, 20, n)] + 0.8 * rng.standard_normal((n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _db(path, vec: np.ndarray, dtype: str) -> index.Database:
    db = index.connect(path)
    db.register_model("m", {"dim": DIM}, vector_dtype=dtype)
    starts = (np.arange(len(vec)) % 50) * 5.0
    rows = {"recording_id": np.arange(len(vec)) // 50, "start_s": starts, "end_s": starts + 5.0}
    db.add_embeddings("m", pd.DataFrame({**rows, "vector": list(vec)}))
    return db


def test_float16_table_gives_the_float32_top_k(tmp_path):
    vec = _clustered(2000)
    half = _db(tmp_path / "h.chorus", vec, "float16")
    full = _db(tmp_path / "f.chorus", vec, "float32")
    assert half.windows("m").schema.field("vector").type.value_type == pa.float16()
    half.build_index("m")
    full.build_index("m")
    for q in _clustered(10, seed=5):
        a = half.search("m", q).limit(10).to_pandas()
        b = full.search("m", q).limit(10).to_pandas()
        assert a["window_id"].tolist() == b["window_id"].tolist()
        np.testing.assert_allclose(a["score"], b["score"], atol=2e-3)
        e = half.search("m", q).exact().where("recording_id < 20").limit(10).to_pandas()
        f = full.search("m", q).exact().where("recording_id < 20").limit(10).to_pandas()
        assert e["window_id"].tolist() == f["window_id"].tolist()


def test_the_storage_type_is_fixed_by_the_first_write(tmp_path):
    db = _db(tmp_path / "h.chorus", _clustered(10), "float16")
    db.register_model("m", {"dim": DIM})  # a later embed without --store keeps float16
    db.add_embeddings("m", {"recording_id": [9], "start_s": [0.0], "end_s": [5.0],
                            "vector": _clustered(1, seed=1)})  # fmt: skip
    assert db.windows("m").schema.field("vector").type.value_type == pa.float16()
    assert db.meta["embeddings"]["m"]["vector_dtype"] == "float16"
    with pytest.raises(ValueError, match="'m' stores float16 vectors; float32 applies only"):
        db.register_model("m", {"dim": DIM}, vector_dtype="float32")
    db.register_model("m", {"dim": DIM}, vector_dtype="float16")  # the same type is fine
    # registered before the first write, then registered again without a type: kept
    db.register_model("n", {"dim": DIM}, vector_dtype="float16")
    db.register_model("n", {"dim": DIM})
    db.add_embeddings("n", {"recording_id": [1], "start_s": [0.0], "end_s": [5.0],
                            "vector": _clustered(1)})  # fmt: skip
    assert db.windows("n").schema.field("vector").type.value_type == pa.float16()


def test_probes_clusters_and_maps_work_on_float16(tmp_path):
    index.connect(tmp_path / "survey.chorus").register_model(
        MODEL, {"dim": 32}, vector_dtype="float16"
    )
    synth = make_synth_db(tmp_path, n_recordings=6, windows_per_recording=30)
    db = synth.db
    assert db.windows(MODEL).schema.field("vector").type.value_type == pa.float16()
    owl = synth.truth[synth.truth["call_type"] == "owl"]
    add_labels(db, owl.assign(label="owl")[["recording_id", "start_s", "end_s", "label"]])
    rec = train_probe(db, MODEL, "owl", n_splits=3, store=False)
    assert rec.metrics[0]["average_precision"] > 0.8
    clusters = cluster_windows(db, MODEL, k=3, use_cache=False)
    assert len(clusters.assignments) == len(synth.windows)
    coords, _ = project(db, MODEL, method="pca", use_cache=False)
    assert np.isfinite(coords[["x", "y"]].to_numpy()).all()
