"""Clustering of unlabelled windows: PCA, then k-means (FAISS) or HDBSCAN; exemplars and counts.

Clustering an unlabelled soundscape is how a user finds what is in it: each cluster is shown by its
exemplars (the members closest to the centre) and by how its windows spread over sites and hours
of the day. PCA first (to ``PCA_DIM``) because k-means and density estimates behave badly in 1536
dimensions and the distance computations dominate the cost. HDBSCAN is fitted on a sample (it is
quadratic-ish) and the remaining windows join the cluster of their nearest sampled neighbour.
Results are cached under ``<db>/cache/`` keyed by the table version and the parameters, with
the parameters beside them in a small JSON, so finished clusterings can be listed and reopened
(``finished_clusterings``) by the explorer whoever computed them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import faiss
import numpy as np
import pandas as pd

from index import cache
from index.cache import cache_dir
from index.files import atomic_write, atomic_write_json
from index.projection import PCA_FIT_ROWS, fit_pca, window_meta
from index.timeline import window_times

PCA_DIM = 64  # dimensions kept before k-means
HDBSCAN_PCA_DIM = 16  # density estimates need fewer dimensions still
HDBSCAN_SAMPLE = 20_000  # windows HDBSCAN is fitted on; the rest join their nearest neighbour
KMEANS_ITER = 20
KMEANS_POINTS_PER_CENTROID = 256  # training sample per centre (FAISS default)
N_EXEMPLARS = 5  # exemplars kept per cluster
METHODS = ("kmeans", "hdbscan")
NOISE = -1  # HDBSCAN's label for windows in no cluster
PARAM_NAMES = ("method", "k", "pca_dim", "min_cluster_size", "seed")  # a clustering's cache key
PARAMS_SUFFIX = ".params.json"  # beside a cached clustering: its parameters, for listing


@dataclass
class Clustering:
    """Cluster labels of n vectors, cluster centres in PCA space, and exemplar rows."""

    labels: np.ndarray  # (n,) int64, NOISE for HDBSCAN outliers
    distances: np.ndarray  # (n,) float32 distance of each vector to its cluster centre
    centers: np.ndarray  # (k, p) float32 in PCA space
    exemplars: np.ndarray  # (k, N_EXEMPLARS) row indices, -1 padding for small clusters


def cluster_vectors(
    X: np.ndarray,
    method: str = "kmeans",
    k: int = 50,
    pca_dim: int | None = None,
    min_cluster_size: int | None = None,
    n_exemplars: int = N_EXEMPLARS,
    seed: int = 0,
) -> Clustering:
    """Cluster X (n, d): PCA, then ``cluster_reduced``.

    Parameters
    ----------
    method : "kmeans" (needs ``k``) or "hdbscan" (finds the number of clusters itself)
    pca_dim : dimensions after PCA (default PCA_DIM for k-means, HDBSCAN_PCA_DIM for HDBSCAN)
    min_cluster_size : HDBSCAN's smallest cluster (default: max(5, n_fit // 200))
    """
    _check(method, k, len(X))
    Z = fit_pca(X, reduced_dim(method, pca_dim, X.shape[1]), seed=seed).transform(X)  # (n, p)
    return cluster_reduced(Z, method, k, min_cluster_size, n_exemplars, seed)


def _check(method: str, k: int, n: int) -> None:
    if method not in METHODS:
        raise ValueError(f"unknown clustering method {method!r}; choose one of {METHODS}")
    if method == "kmeans" and not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of windows ({n}), got {k}")


def reduced_dim(method: str, pca_dim: int | None, d: int) -> int:
    """PCA dimensions used for ``method`` (``pca_dim`` or the method's default, at most d)."""
    return min(pca_dim or (PCA_DIM if method == "kmeans" else HDBSCAN_PCA_DIM), d)


def cluster_reduced(
    Z: np.ndarray,
    method: str = "kmeans",
    k: int = 50,
    min_cluster_size: int | None = None,
    n_exemplars: int = N_EXEMPLARS,
    seed: int = 0,
) -> Clustering:
    """Cluster already-reduced vectors Z (n, p) (e.g. PCA coordinates)."""
    _check(method, k, len(Z))
    if method == "kmeans":
        labels, centers = _kmeans(Z, k, seed)
    else:
        labels, centers = _hdbscan(Z, min_cluster_size, seed)
    valid = labels >= 0
    dist = np.full(len(Z), np.nan, dtype=np.float32)
    dist[valid] = np.linalg.norm(Z[valid] - centers[labels[valid]], axis=1)
    return Clustering(labels, dist, centers, _exemplars(labels, dist, len(centers), n_exemplars))


def reduce_windows(db, model: str, window_ids: np.ndarray, dim: int, seed: int = 0) -> np.ndarray:
    """PCA coordinates (n, dim) float32 of ``window_ids``, streaming the vectors.

    The basis is fitted on a sample; the full (n, d) matrix is never held in memory (a million
    1536-d windows would take 6 GB), only the (n, dim) result.
    """
    snap = db.snapshot(model)
    rng = np.random.default_rng(seed)
    sample = (
        window_ids
        if len(window_ids) <= PCA_FIT_ROWS
        else rng.choice(window_ids, PCA_FIT_ROWS, replace=False)
    )
    pca = fit_pca(db.vectors(model, np.sort(sample))[1], min(dim, snap.dim), seed=seed)
    row = {int(w): i for i, w in enumerate(window_ids)} if len(window_ids) < len(snap) else None
    Z = np.zeros((len(window_ids), pca.components.shape[0]), dtype=np.float32)
    order = np.argsort(window_ids)
    for ids, X in snap.iter_vectors():
        if row is None:  # all windows: positions by sorted id
            Z[order[np.searchsorted(window_ids[order], ids)]] = pca.transform(X)
        else:
            keep = np.array([i in row for i in ids.tolist()], dtype=bool)
            Z[[row[i] for i in ids[keep].tolist()]] = pca.transform(X[keep])
    return Z


def _kmeans(Z: np.ndarray, k: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    # FAISS trains on at most KMEANS_POINTS_PER_CENTROID * k rows; seed it with scikit-learn's
    # greedy k-means++ picks from that sample, because FAISS's random initialisation often merges
    # planted groups and Lloyd iterations cannot split them again.
    from sklearn.cluster import kmeans_plusplus

    rng = np.random.default_rng(seed)
    n_fit = min(len(Z), KMEANS_POINTS_PER_CENTROID * k)
    fit = Z[np.sort(rng.choice(len(Z), n_fit, replace=False))] if n_fit < len(Z) else Z
    fit = np.ascontiguousarray(fit, dtype=np.float32)
    km = faiss.Kmeans(
        Z.shape[1],
        k,
        niter=KMEANS_ITER,
        seed=seed + 1,
        verbose=False,
        max_points_per_centroid=KMEANS_POINTS_PER_CENTROID,
        # FAISS prints "please provide at least 39 k training points" to stderr on small
        # archives (e.g. the README's --k 50 on the demo); k-means runs all the same.
        min_points_per_centroid=1,
    )
    seeds, _ = kmeans_plusplus(fit, k, random_state=seed)
    km.train(fit, init_centroids=np.ascontiguousarray(seeds, dtype=np.float32))
    _, assign = km.index.search(np.ascontiguousarray(Z, dtype=np.float32), 1)  # (n, 1)
    return assign[:, 0].astype(np.int64), km.centroids.astype(np.float32)


def _hdbscan(
    Z: np.ndarray, min_cluster_size: int | None, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.cluster import HDBSCAN

    n = len(Z)
    fit_rows = (
        np.sort(np.random.default_rng(seed).choice(n, HDBSCAN_SAMPLE, replace=False))
        if n > HDBSCAN_SAMPLE
        else np.arange(n)
    )
    mcs = min_cluster_size or max(5, len(fit_rows) // 200)
    if mcs > len(fit_rows):  # no cluster can be that large: every window is noise
        fit_labels = np.full(len(fit_rows), NOISE, dtype=np.int64)
    else:
        fit = HDBSCAN(min_cluster_size=max(mcs, 2), copy=True).fit_predict(Z[fit_rows])
        fit_labels = fit.astype(np.int64)
    labels = np.full(n, NOISE, dtype=np.int64)
    labels[fit_rows] = fit_labels
    rest = np.setdiff1d(np.arange(n), fit_rows)
    if len(rest):  # the rest take the label (or noise) of their nearest fitted neighbour
        nn = faiss.IndexFlatL2(Z.shape[1])
        nn.add(np.ascontiguousarray(Z[fit_rows]))
        _, idx = nn.search(np.ascontiguousarray(Z[rest]), 1)
        labels[rest] = fit_labels[idx[:, 0]]
    k = int(labels.max()) + 1
    centers = (
        np.stack([Z[labels == c].mean(0) for c in range(k)]) if k else np.zeros((0, Z.shape[1]))
    )
    return labels, centers.astype(np.float32)


def _exemplars(labels: np.ndarray, dist: np.ndarray, k: int, n_ex: int) -> np.ndarray:
    out = np.full((k, n_ex), -1, dtype=np.int64)
    valid = np.flatnonzero(labels >= 0)
    order = valid[np.lexsort((dist[valid], labels[valid]))]  # by cluster, then distance
    starts = np.searchsorted(labels[order], np.arange(k))
    ends = np.searchsorted(labels[order], np.arange(k), side="right")
    for c in range(k):
        members = order[starts[c] : min(ends[c], starts[c] + n_ex)]
        out[c, : len(members)] = members
    return out


def cluster_counts(assignments: pd.DataFrame, by: str) -> pd.DataFrame:
    """Windows per cluster (rows) and ``by`` value (columns), e.g. by="site" or by="hour"."""
    col = assignments[by].astype("object").where(assignments[by].notna(), "(none)")
    return pd.crosstab(assignments["cluster"], col)


# -- database layer ---------------------------------------------------------------------------
@dataclass
class ClusterResult:
    """Clusters of a model's windows.

    assignments: window_id, recording_id, start_s, end_s, site, hour (0-23 or NaN), cluster, distance.
    exemplars: cluster, rank, window_id, recording_id, start_s, end_s (closest members first).
    """

    assignments: pd.DataFrame
    exemplars: pd.DataFrame
    params: dict

    def counts(self, by: str = "site") -> pd.DataFrame:
        """Windows per cluster and site ("site") or hour of day ("hour")."""
        return cluster_counts(self.assignments, by)


def cluster_windows(
    db,
    model: str,
    method: str = "kmeans",
    k: int = 50,
    pca_dim: int | None = None,
    min_cluster_size: int | None = None,
    seed: int = 0,
    use_cache: bool = True,
) -> ClusterResult:
    """Cluster every window of ``model`` (cached by table version and parameters)."""
    params = {
        "method": method,
        "k": k if method == "kmeans" else None,
        "pca_dim": pca_dim,
        "min_cluster_size": min_cluster_size,
        "seed": seed,
    }
    folder = cache_dir(db)
    stem = cache.key(db, "clusters", model, params)
    a_path, e_path = folder / f"{stem}.parquet", folder / f"{stem}.exemplars.parquet"
    if use_cache and a_path.exists() and e_path.exists():
        try:
            res = ClusterResult(pd.read_parquet(a_path), pd.read_parquet(e_path), params)
        except (OSError, ValueError):  # pruned meanwhile, or damaged: compute again
            pass
        else:
            if not (folder / f"{stem}{PARAMS_SUFFIX}").exists():  # cached before the listing
                _write_params(folder / f"{stem}{PARAMS_SUFFIX}", res)
            return res
    meta = _with_hour(db, window_meta(db, model))
    if meta.empty:
        raise ValueError(f"model {model!r} has no windows to cluster")
    _check(method, k, len(meta))
    dim = reduced_dim(method, pca_dim, db.snapshot(model).dim)
    Z = reduce_windows(db, model, meta["window_id"].to_numpy(), dim, seed)  # (n, dim)
    res = cluster_reduced(Z, method, k, min_cluster_size, seed=seed)
    assignments = meta.assign(cluster=res.labels, distance=res.distances)
    ex = [
        (c, r, int(i))
        for c in range(len(res.exemplars))
        for r, i in enumerate(res.exemplars[c])
        if i >= 0
    ]
    ex_df = pd.DataFrame(ex, columns=["cluster", "rank", "row"])
    exemplars = ex_df.join(meta[["window_id", "recording_id", "start_s", "end_s"]], on="row").drop(
        columns="row"
    )
    atomic_write(e_path, lambda p: exemplars.to_parquet(p, index=False))
    atomic_write(a_path, lambda p: assignments.to_parquet(p, index=False))
    result = ClusterResult(assignments, exemplars, params)
    _write_params(folder / f"{stem}{PARAMS_SUFFIX}", result)  # last: it marks the result finished
    cache.prune(folder, stem)
    return result


def _write_params(path, res: ClusterResult) -> None:
    labels = res.assignments["cluster"]
    summary = {
        "params": res.params,
        "n_windows": int(len(labels)),
        "n_clusters": int(labels[labels >= 0].nunique()),
        "created_at": pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
    }
    atomic_write_json(path, summary)


def finished_clusterings(db, model: str) -> list[dict]:
    """Clusterings of ``model`` cached for its current windows and recordings, newest first.

    What ``chorus cluster`` or the explorer computed and ``cluster_windows`` with the same
    parameters reads back without computing. Each entry: ``params`` (the keyword arguments of
    ``cluster_windows``: method, k, pca_dim, min_cluster_size, seed), n_windows, n_clusters,
    created_at (ISO time, UTC).
    """
    folder = cache_dir(db)
    prefix = cache.current_prefix(db, "clusters", model)
    found = []
    for path in folder.glob(f"{prefix}_*{PARAMS_SUFFIX}"):
        stem = path.name[: -len(PARAMS_SUFFIX)]
        if not all((folder / f"{stem}{s}").exists() for s in (".parquet", ".exemplars.parquet")):
            continue
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            params = {k: entry["params"][k] for k in PARAM_NAMES}
            if cache.key(db, "clusters", model, params) != stem:  # not what it says it is
                continue
            found.append({**entry, "params": params})
        except (OSError, ValueError, KeyError, TypeError):  # pruned meanwhile, or not ours
            continue
    return sorted(found, key=lambda e: str(e.get("created_at", "")), reverse=True)


def _with_hour(db, meta: pd.DataFrame) -> pd.DataFrame:
    """Add the hour of day of each window from its recording's start_time (NaN when unknown)."""
    recs = db.recordings()
    if "start_time" not in recs.columns:
        return meta.assign(hour=np.nan)
    start = meta["recording_id"].map(recs.set_index("recording_id")["start_time"])
    return meta.assign(hour=window_times(start, meta["start_s"])["hour"])
