"""2-D maps of the windows: PCA or UMAP over a stratified sample, cached, with a kept transform.

A map of a million windows is unreadable and slow to fit, so ``project`` fits on a sample that takes
windows evenly from every recording (or site), so one long recording cannot fill the map. The
fitted ``Projection`` is kept beside the coordinates, so windows added later (or a query clip) can be
placed on the same map with ``Projection.transform``. Results are cached under ``<db>/cache/``,
keyed by the table version and the parameters: a new embedding run gives a new key.

UMAP method (target: 100 k windows in <= 30 s on 2 cores):

1. PCA to ``PCA_DIM`` (50) dimensions.
2. UMAP is fitted on a random subset of at most ``UMAP_FIT_CAP`` (10 000) of the PCA vectors. Its
   k-nearest-neighbour graph comes from an exact FAISS search (about 1 s) instead of pynndescent,
   whose numba code costs about a minute to compile in every new process.
3. Every other window is placed at the inverse-distance weighted mean of the 2-D positions of its
   ``PLACE_K`` (10) nearest fitted windows in PCA space (exact FAISS search, deterministic).
   ``Projection.transform`` places new windows the same way, so they land where the map's own
   windows would.

On 20 Gaussian clusters of 1536-d vectors this keeps the 2-D 10-NN label agreement within 1 % of
a full UMAP fit (benchmarks/agile_bench.py, benchmarks/RESULTS.md "Agile loop"). umap's numba
functions compile in each new process (numba offers no public switch to cache another package's
functions). ``seed=None`` lets UMAP's layout use every core, at the cost of maps that differ
slightly from run to run.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from . import cache
from .cache import cache_dir
from .files import atomic_write

SAMPLE_CAP = 50_000  # windows in a map by default
PCA_DIM = 50  # PCA dimensions fed to UMAP (removes noise dimensions, speeds up neighbours)
PCA_FIT_ROWS = 20_000  # rows used to estimate the PCA basis (plenty for the top 64 axes)
UMAP_NEIGHBORS = 15
UMAP_MIN_DIST = 0.1
UMAP_FIT_CAP = 10_000  # windows UMAP is fitted on; the rest are placed by nearest neighbours
UMAP_EPOCHS = 200  # layout epochs (umap's own default is 500 below 10 000 points)
PLACE_K = 10  # fitted neighbours whose 2-D positions place a window
PLACE_EPS = 1e-6  # added to neighbour distances (PCA units) so exact duplicates do not divide by 0
METHODS = ("pca", "umap")


@dataclass
class PCA:
    """A fitted PCA basis (from ``fit_pca``), kept as plain arrays so a map's cache file holds it.

    ``transform`` centres and projects in chunks, so a million windows are never copied whole.
    """

    mean: np.ndarray  # (d,)
    components: np.ndarray  # (p, d), rows sorted by explained variance
    explained_variance: np.ndarray  # (p,)

    def transform(self, X: np.ndarray, chunk: int = 131072) -> np.ndarray:
        """(n, d) -> (n, p) float32."""
        out = np.empty((len(X), len(self.components)), dtype=np.float32)
        comp = self.components.T.astype(np.float32)  # (d, p)
        shift = (self.mean @ self.components.T).astype(np.float32)  # (p,)
        for i in range(0, len(X), chunk):
            out[i : i + chunk] = X[i : i + chunk].astype(np.float32, copy=False) @ comp - shift
        return out


def fit_pca(X: np.ndarray, dim: int, max_rows: int = PCA_FIT_ROWS, seed: int = 0) -> PCA:
    """PCA basis of ``dim`` components from at most ``max_rows`` rows of X (n, d).

    scikit-learn's ``PCA`` with the covariance solver (a d x d eigendecomposition, cheap for
    d = 1536 and many rows); its sign convention (largest loading of each axis positive) keeps
    maps from flipping between runs.
    """
    from sklearn.decomposition import PCA as SklearnPCA

    n, d = X.shape
    rows = (
        np.sort(np.random.default_rng(seed).choice(n, max_rows, replace=False))
        if n > max_rows
        else slice(None)
    )
    sample = np.asarray(X[rows])  # (m, d), m <= max_rows
    fitted = SklearnPCA(n_components=min(dim, d, len(sample)), svd_solver="covariance_eigh")
    fitted.fit(sample)
    return PCA(
        fitted.mean_.astype(np.float64),
        fitted.components_.astype(np.float64),
        fitted.explained_variance_.astype(np.float64),
    )


@dataclass
class Projection:
    """A fitted 2-D map: PCA (and UMAP on top) that places any window with ``transform``."""

    method: str
    params: dict
    pca: PCA
    anchors: np.ndarray | None = field(default=None, repr=False)  # (m, p) PCA vectors UMAP saw
    anchor_xy: np.ndarray | None = field(default=None, repr=False)  # (m, 2) their map positions

    def transform(self, X: np.ndarray) -> np.ndarray:
        """(n, d) vectors -> (n, 2) float32 map coordinates."""
        Z = self.pca.transform(np.atleast_2d(X))
        if self.anchors is None:
            return Z[:, :2]
        return place_knn(self.anchors, self.anchor_xy, Z)


def place_knn(
    anchors: np.ndarray, anchor_xy: np.ndarray, Z: np.ndarray, k: int = PLACE_K
) -> np.ndarray:
    """Place Z (n, p) on a map at the weighted mean of its k nearest anchors (m, p) -> (n, 2).

    Weights are inverse distances, so a window equal to an anchor lands on it. Exact FAISS search:
    the same input always gives the same map.
    """
    import faiss

    k = min(k, len(anchors))
    index = faiss.IndexFlatL2(anchors.shape[1])
    index.add(np.ascontiguousarray(anchors, dtype=np.float32))
    d2, nn = index.search(np.ascontiguousarray(Z, dtype=np.float32), k)  # (n, k) each
    w = 1.0 / (np.sqrt(np.maximum(d2, 0.0)) + PLACE_EPS)  # (n, k)
    w /= w.sum(1, keepdims=True)
    return np.einsum("nk,nkc->nc", w, anchor_xy[nn]).astype(np.float32)  # (n, 2)


def fit_projection(
    X: np.ndarray,
    method: str = "umap",
    pca_dim: int = PCA_DIM,
    n_neighbors: int = UMAP_NEIGHBORS,
    min_dist: float = UMAP_MIN_DIST,
    seed: int | None = 0,
    fit_cap: int = UMAP_FIT_CAP,
    n_epochs: int = UMAP_EPOCHS,
) -> tuple[Projection, np.ndarray]:
    """Fit a projection on X (n, d); returns it and the (n, 2) coordinates of X.

    UMAP is fitted on at most ``fit_cap`` rows; the others are placed with ``place_knn`` (see the
    module docstring). ``seed=None`` lets UMAP use all cores (its seeded mode is single-threaded)
    at the cost of maps that differ slightly from run to run.
    """
    if method not in METHODS:
        raise ValueError(f"unknown projection method {method!r}; choose one of {METHODS}")
    if len(X) < 3:
        raise ValueError(f"need at least 3 windows for a map, got {len(X)}")
    if fit_cap < 3:
        raise ValueError(f"fit_cap must be at least 3, got {fit_cap}")
    params = {"method": method, "pca_dim": pca_dim, "seed": seed}
    if method == "pca":
        pca = fit_pca(X, 2, seed=seed or 0)
        return Projection("pca", params, pca), pca.transform(X)
    pca = fit_pca(X, min(pca_dim, X.shape[1]), seed=seed or 0)
    Z = pca.transform(X)  # (n, p)
    params.update(n_neighbors=n_neighbors, min_dist=min_dist, fit_cap=fit_cap, n_epochs=n_epochs)
    if len(Z) > fit_cap:
        fit_rows = np.sort(np.random.default_rng(seed or 0).choice(len(Z), fit_cap, replace=False))
    else:
        fit_rows = np.arange(len(Z))
    anchors = Z[fit_rows]  # (m, p)
    anchor_xy = _umap_layout(anchors, n_neighbors, min_dist, n_epochs, seed)  # (m, 2)
    coords = np.empty((len(Z), 2), dtype=np.float32)
    coords[fit_rows] = anchor_xy
    rest = np.setdiff1d(np.arange(len(Z)), fit_rows)
    if len(rest):
        coords[rest] = place_knn(anchors, anchor_xy, Z[rest])
    return Projection("umap", params, pca, anchors, anchor_xy), coords


def _umap_layout(
    Z: np.ndarray, n_neighbors: int, min_dist: float, n_epochs: int, seed: int | None
) -> np.ndarray:
    """UMAP of Z (m, p) -> (m, 2) float32 over an exact FAISS k-NN graph."""
    import faiss
    import umap

    k = min(n_neighbors, len(Z) - 1)
    index = faiss.IndexFlatL2(Z.shape[1])
    index.add(np.ascontiguousarray(Z, dtype=np.float32))
    d2, nn = index.search(np.ascontiguousarray(Z, dtype=np.float32), k)  # (m, k); self first
    reducer = umap.UMAP(
        n_components=2,
        n_neighbors=k,
        min_dist=min_dist,
        n_epochs=n_epochs,
        random_state=seed,
        n_jobs=1 if seed is not None else -1,
        # spectral init needs more points than eigenvectors (n_components + 1)
        init="spectral" if len(Z) > 4 else "random",
        # No search index: placement of further windows is ours (place_knn), not umap.transform.
        precomputed_knn=(nn.astype(np.int32), np.sqrt(np.maximum(d2, 0.0)).astype(np.float32)),
    )
    with warnings.catch_warnings():
        # umap warns that its own transform needs a search index; ours does not use it.
        warnings.filterwarnings("ignore", message=r"precomputed_knn\[2\]")
        return reducer.fit_transform(Z).astype(np.float32)


def stratified_sample(groups: np.ndarray, cap: int, seed: int = 0) -> np.ndarray:
    """Indices of at most ``cap`` rows taking rows as evenly as possible from every group.

    Water-filling: each group gets the same quota; groups smaller than it give their spare
    share to the others. Returns sorted indices.
    """
    groups = np.asarray(groups)
    if len(groups) <= cap:
        return np.arange(len(groups))
    rng = np.random.default_rng(seed)
    uniq, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    quota = _water_fill(counts, cap)
    order = np.argsort(inverse, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    picks = [
        rng.choice(order[s : s + c], q, replace=False)
        for s, c, q in zip(starts, counts, quota, strict=True)
        if q > 0
    ]
    return np.sort(np.concatenate(picks))


def _water_fill(counts: np.ndarray, cap: int) -> np.ndarray:
    quota = np.zeros(len(counts), dtype=np.int64)
    left, remaining = cap, np.argsort(counts)
    for pos, g in enumerate(remaining):
        share = left // (len(remaining) - pos)
        quota[g] = min(counts[g], share)
        left -= quota[g]
    # Integer division leaves a few rows; give them to groups that still have some.
    for g in remaining[::-1]:
        if left == 0:
            break
        extra = min(left, counts[g] - quota[g])
        quota[g] += extra
        left -= extra
    return quota


# -- database layer ---------------------------------------------------------------------------
def save_projection(proj: Projection, path: Path) -> None:
    """Arrays and parameters of a fitted map in one ``.npz`` (no pickle: see index.cache)."""
    arrays = {
        "mean": proj.pca.mean,
        "components": proj.pca.components,
        "explained_variance": proj.pca.explained_variance,
    }
    if proj.anchors is not None:
        arrays.update(anchors=proj.anchors, anchor_xy=proj.anchor_xy)
    header = json.dumps({"method": proj.method, "params": proj.params})
    with open(path, "wb") as fh:
        np.savez(fh, header=np.array(header), **arrays)


def load_projection(path: Path) -> Projection:
    with np.load(path, allow_pickle=False) as z:
        header = json.loads(str(z["header"]))
        pca = PCA(z["mean"], z["components"], z["explained_variance"])
        anchors = (z["anchors"], z["anchor_xy"]) if "anchors" in z.files else (None, None)
    return Projection(header["method"], header["params"], pca, *anchors)


def project(
    db,
    model: str,
    method: str = "umap",
    sample: int = SAMPLE_CAP,
    by: str = "recording",
    pca_dim: int = PCA_DIM,
    seed: int = 0,
    use_cache: bool = True,
) -> tuple[pd.DataFrame, Projection]:
    """Map a stratified sample of a model's windows to 2-D (cached).

    Parameters
    ----------
    db : index database (``index.connect``)
    model : embedding table to map
    method : "pca" or "umap"
    sample : at most this many windows (stratified by ``by``: "recording" or "site")

    Returns
    -------
    coords : pandas.DataFrame
        window_id, recording_id, start_s, end_s, site, x, y for the sampled windows.
    projection : Projection
        Fitted transform; ``projection.transform(vectors)`` places further windows.
    """
    if by not in ("recording", "site"):
        raise ValueError(f"by must be 'recording' or 'site', got {by!r}")
    params = {
        "method": method,
        "sample": sample,
        "by": by,
        "pca_dim": pca_dim,
        "seed": seed,
        "fit_cap": UMAP_FIT_CAP,
        "n_epochs": UMAP_EPOCHS,
        "placement": "knn",  # maps made before the fit-on-a-subset method get a new key
    }
    folder = cache_dir(db)
    stem = cache.key(db, "projection", model, params)
    coords_path, model_path = folder / f"{stem}.parquet", folder / f"{stem}.npz"
    if use_cache and coords_path.exists() and model_path.exists():
        try:
            return pd.read_parquet(coords_path), load_projection(model_path)
        except (OSError, ValueError, KeyError):  # pruned meanwhile, or damaged: compute again
            pass
    meta = window_meta(db, model)
    groups = meta["recording_id"] if by == "recording" else meta["site"].fillna("").astype(str)
    rows = stratified_sample(groups.to_numpy(), sample, seed)
    meta = meta.iloc[rows].reset_index(drop=True)
    _, X = db.vectors(model, meta["window_id"].to_numpy())
    proj, xy = fit_projection(X, method, pca_dim=pca_dim, seed=seed)
    coords = meta.assign(x=xy[:, 0], y=xy[:, 1])
    atomic_write(model_path, lambda p: save_projection(proj, p))
    atomic_write(coords_path, lambda p: coords.to_parquet(p, index=False))
    cache.prune(folder, stem)
    return coords, proj


def window_meta(db, model: str) -> pd.DataFrame:
    """window_id, recording_id, start_s, end_s of every window, joined with recording site."""
    cols = ["window_id", "recording_id", "start_s", "end_s"]
    win = db.windows(model).search().select(cols).to_arrow().to_pandas()
    recs = db.recordings()[["recording_id", "site"]]
    return win.merge(recs, on="recording_id", how="left").sort_values(
        "window_id", ignore_index=True
    )
