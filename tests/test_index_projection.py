"""2-D maps: PCA basis, stratified sampling, cache hits, transform of new windows, UMAP."""

from __future__ import annotations

import numpy as np
import pytest
from agile_synth import MODEL, make_synth_db
from sklearn.metrics import adjusted_rand_score

from index.cluster import cluster_vectors, cluster_windows
from index.projection import fit_pca, fit_projection, place_knn, project, stratified_sample


def test_fit_pca_matches_svd():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(500, 20)) @ rng.normal(size=(20, 20))
    pca = fit_pca(X, 3)
    Xc = X - X.mean(0)
    _, s, vt = np.linalg.svd(Xc, full_matrices=False)
    np.testing.assert_allclose(np.abs(pca.components), np.abs(vt[:3]), atol=1e-6)
    np.testing.assert_allclose(pca.explained_variance, s[:3] ** 2 / 499, rtol=1e-6)
    np.testing.assert_allclose(
        np.abs(pca.transform(X)), np.abs(Xc @ vt[:3].T), rtol=1e-4, atol=1e-4
    )


def test_stratified_sample_is_even_across_groups():
    groups = np.repeat(np.arange(5), [10, 100, 1000, 5, 3000])
    rows = stratified_sample(groups, 400, seed=1)
    assert len(rows) == 400 and len(np.unique(rows)) == 400
    assert np.bincount(groups[rows]).tolist() == [10, 100, 142, 5, 143]
    assert stratified_sample(groups, 10_000).tolist() == list(range(len(groups)))


def test_fit_projection_rejects_bad_input():
    with pytest.raises(ValueError, match="unknown projection method"):
        fit_projection(np.zeros((10, 4)), "tsne")
    with pytest.raises(ValueError, match="at least 3 windows"):
        fit_projection(np.zeros((2, 4)), "pca")


def test_place_knn_lands_on_anchors_and_between_neighbours():
    anchors = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]], dtype=np.float32)
    anchor_xy = np.array([[1.0, 1.0], [5.0, 1.0], [1.0, 5.0]], dtype=np.float32)
    # An exact anchor lands on its own map position (inverse-distance weights).
    np.testing.assert_allclose(place_knn(anchors, anchor_xy, anchors, k=3), anchor_xy, atol=1e-4)
    # Halfway between two anchors, with k=2: halfway between their positions.
    mid = place_knn(anchors, anchor_xy, np.array([[5.0, 0.0]], np.float32), k=2)
    np.testing.assert_allclose(mid, [[3.0, 1.0]], atol=1e-5)
    assert place_knn(anchors, anchor_xy, anchors, k=10).shape == (3, 2)  # k capped at m


def knn_agreement(xy: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    d = ((xy[:, None, :] - xy[None, :, :]) ** 2).sum(-1)  # (n, n)
    np.fill_diagonal(d, np.inf)
    nn = np.argsort(d, axis=1)[:, :k]
    return float((labels[nn] == labels[:, None]).mean())


@pytest.mark.slow
def test_umap_subset_fit_keeps_clusters_as_well_as_full_fit():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(8, 128)) * 1.5
    truth = rng.integers(0, 8, 1200)
    X = (centres[truth] + rng.normal(size=(1200, 128))).astype(np.float32)
    full_proj, full = fit_projection(X, "umap", seed=0, fit_cap=1200, n_epochs=100)
    proj, fast = fit_projection(X, "umap", seed=0, fit_cap=300, n_epochs=100)
    assert proj.anchors.shape == (300, 50) and full_proj.anchors.shape == (1200, 50)
    q_full, q_fast = knn_agreement(full, truth), knn_agreement(fast, truth)
    assert q_full > 0.9 and q_fast > q_full - 0.03, (q_full, q_fast)
    # The kept transform places the map's own windows where the map has them (deterministic).
    np.testing.assert_allclose(proj.transform(X), fast, atol=1e-2)
    print(f"10-NN label agreement: full fit {q_full:.3f}, fit on 300 + placement {q_fast:.3f}")
    with pytest.raises(ValueError, match="fit_cap"):
        fit_projection(X, "umap", fit_cap=2)


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_synth_db(tmp_path_factory.mktemp("proj"), n_recordings=6, windows_per_recording=30)


def test_project_pca_cache_hit_and_transform(synth):
    db = synth.db
    coords, proj = project(db, MODEL, "pca", sample=120, by="recording")
    assert len(coords) == 120
    assert coords.groupby("recording_id").size().tolist() == [20] * 6
    files = sorted(p.name for p in (db.path / "cache").glob("projection_*"))
    assert len(files) == 2 and files[0].startswith(f"projection_{MODEL}_v")
    again, proj2 = project(db, MODEL, "pca", sample=120, by="recording")
    assert again.equals(coords)  # read back from the cache
    assert len(list((db.path / "cache").glob("projection_*"))) == 2
    _, X = db.vectors(MODEL, coords["window_id"].to_numpy())
    np.testing.assert_allclose(proj2.transform(X), coords[["x", "y"]].to_numpy(), atol=1e-5)
    # New windows invalidate the cache key (table version).
    db.add_embeddings(
        MODEL, {"recording_id": [0], "start_s": [500.0], "end_s": [505.0], "vector": X[:1]}
    )
    fresh, _ = project(db, MODEL, "pca", sample=120, by="recording")
    now = sorted(p.name for p in (db.path / "cache").glob("projection_*"))
    assert len(now) == 2 and now != files  # the older version's files are gone
    assert {p.rsplit(".", 1)[-1] for p in now} == {"parquet", "npz"}  # nothing to unpickle
    by_site, _ = project(db, MODEL, "pca", sample=60, by="site")
    assert by_site.groupby("site").size().tolist() == [30, 30]


def test_cluster_windows_cache_and_counts(synth):
    db = synth.db
    res = cluster_windows(db, MODEL, k=3)
    assert len(res.assignments) == db.windows(MODEL).count_rows()
    assert res.exemplars.groupby("cluster").size().tolist() == [5, 5, 5]
    assert set(res.counts("site").columns) == {"S0", "S1"}
    assert set(res.counts("hour").columns) <= {4.0, 5.0, 6.0}
    # Streaming PCA over the table gives the same clusters as clustering the vectors in memory.
    _, X = db.vectors(MODEL, res.assignments["window_id"].to_numpy())
    assert (
        adjusted_rand_score(cluster_vectors(X, "kmeans", k=3).labels, res.assignments["cluster"])
        == 1.0
    )
    n_files = len(list((db.path / "cache").glob("clusters_*")))
    again = cluster_windows(db, MODEL, k=3)
    assert again.assignments.equals(res.assignments)
    assert len(list((db.path / "cache").glob("clusters_*"))) == n_files


@pytest.mark.slow
def test_umap_projection_separates_planted_calls_and_places_new_windows():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 64)) * 3
    truth = rng.integers(0, 3, 600)
    X = (centres[truth] + rng.normal(size=(600, 64))).astype(np.float32)
    proj, xy = fit_projection(X, "umap", seed=0)
    assert xy.shape == (600, 2)
    centre_xy = np.stack([xy[truth == k].mean(0) for k in range(3)])
    new = proj.transform(centres[:1].astype(np.float32) + 0.1)
    assert np.linalg.norm(centre_xy - new, axis=1).argmin() == 0


def test_umap_map_of_the_smallest_archive(tmp_path):
    synth = make_synth_db(tmp_path, n_recordings=1, windows_per_recording=3)
    points, _ = project(synth.db, MODEL, method="umap")
    assert len(points) == 3 and np.isfinite(points[["x", "y"]].to_numpy()).all()


def test_maps_and_clusters_show_a_renamed_site(tmp_path):
    # their cached rows carry recording columns: the recordings' version is part of the key too
    db = make_synth_db(tmp_path, n_recordings=2, windows_per_recording=12).db
    project(db, MODEL, "pca")
    cluster_windows(db, MODEL, k=2)
    rec0 = db.recording(0)
    db.upsert_recording(rec0["audio_root"], rec0["path"], site="RENAMED")
    coords, _ = project(db, MODEL, "pca")
    res = cluster_windows(db, MODEL, k=2)
    for rows in (coords, res.assignments):
        assert set(rows.loc[rows["recording_id"] == 0, "site"]) == {"RENAMED"}
    kept = [p for p in (db.path / "cache").iterdir() if not p.name.startswith("snapshot_")]
    assert len(kept) == 5  # a projection, a clustering + params
