"""Clustering planted groups, exemplars and counts (pure functions)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import adjusted_rand_score

from index.cluster import NOISE, cluster_counts, cluster_vectors


def _planted(k=10, n=3000, d=192, spread=0.35, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    truth = rng.integers(0, k, n)
    X = centres[truth] + spread * rng.normal(size=(n, d))
    X /= np.linalg.norm(X, axis=1, keepdims=True)  # like stored embeddings
    return X.astype(np.float32), truth


def test_kmeans_recovers_planted_groups():
    X, truth = _planted()
    res = cluster_vectors(X, "kmeans", k=10)
    assert adjusted_rand_score(truth, res.labels) >= 0.9
    assert res.centers.shape == (10, 64)


def test_hdbscan_recovers_planted_groups_and_assigns_unsampled_rows(monkeypatch):
    import index.cluster as cluster

    monkeypatch.setattr(cluster, "HDBSCAN_SAMPLE", 1500)  # force the nearest-neighbour path
    X, truth = _planted(k=6)
    res = cluster_vectors(X, "hdbscan")
    keep = res.labels != NOISE
    assert keep.mean() > 0.9
    assert adjusted_rand_score(truth[keep], res.labels[keep]) >= 0.9
    assert len(res.centers) == 6


def test_exemplars_are_the_closest_members():
    X, _ = _planted(k=4, n=800)
    res = cluster_vectors(X, "kmeans", k=4, n_exemplars=3)
    for c in range(4):
        members = np.flatnonzero(res.labels == c)
        best = members[np.argsort(res.distances[members])[:3]]
        assert res.exemplars[c].tolist() == best.tolist()


def test_bad_arguments():
    X, _ = _planted(k=2, n=50)
    with pytest.raises(ValueError, match="unknown clustering method"):
        cluster_vectors(X, "dbscan")
    with pytest.raises(ValueError, match="k must be between 1"):
        cluster_vectors(X, "kmeans", k=51)


def test_kmeans_finds_every_tight_planted_group():
    # k-means++ seeding puts one seed per tight group; FAISS's random start would often merge two
    X, truth = _planted(k=5, n=1000, spread=0.05)
    for seed in range(3):
        res = cluster_vectors(X, "kmeans", k=5, seed=seed)
        assert adjusted_rand_score(truth, res.labels) == pytest.approx(1.0)


def test_cluster_counts_by_site_and_hour():
    a = pd.DataFrame(
        {
            "cluster": [0, 0, 1, 1, 1],
            "site": ["A", "B", "A", "A", None],
            "hour": [5.0, 5, 6, np.nan, 6],
        }
    )
    by_site = cluster_counts(a, "site")
    assert by_site.loc[1, "A"] == 2 and by_site.loc[1, "(none)"] == 1 and by_site.loc[0, "B"] == 1
    assert cluster_counts(a, "hour").loc[1, 6.0] == 2


def test_hdbscan_on_fewer_windows_than_a_cluster_needs_is_all_noise():
    X, _ = _planted(k=2, n=20)
    res = cluster_vectors(X[:3], "hdbscan")  # default smallest cluster: 5 windows
    assert res.labels.tolist() == [NOISE] * 3 and len(res.centers) == 0
    assert (cluster_vectors(X[:4], "hdbscan", min_cluster_size=1).labels >= NOISE).all()
