"""Agile-loop speed: probe training, archive scoring, UMAP maps, k-means clustering.

Synthetic unit vectors with planted directions (no database I/O: these time the compute once
vectors are loaded). Targets (2 CPU cores): train 10 k x 1536 <= 1 s; score 1 M windows <= 3 s;
UMAP of 100 k <= 30 s; k-means of 1 M x 1536 into 256 clusters <= 60 s.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/agile_bench.py [--quick]

Memory: scoring reuses one block of windows (1 M windows = several passes over a 250 k block)
and k-means streams blocks through the PCA basis, so the run stays under ~3 GB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np

DIM = 1536  # Perch-2.0-sized embeddings


def unit(rng: np.random.Generator, n: int, dirs: np.ndarray | None = None, strength: float = 0.0):
    """(n, DIM) float32 unit vectors; with ``dirs`` (k, DIM) each row gets one planted direction."""
    X = rng.standard_normal((n, DIM), dtype=np.float32)
    label = None
    if dirs is not None:
        label = rng.integers(0, len(dirs), n)
        X += strength * np.sqrt(DIM) * dirs[label]
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    return X, label


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def bench_train(rng, n: int, repeats: int) -> dict:
    from index.probe import LinearProbe

    d = rng.standard_normal(DIM).astype(np.float32)
    d /= np.linalg.norm(d)
    X, _ = unit(rng, n)
    y = (rng.random(n) < 0.1).astype(int)
    X[y == 1] += 0.05 * d  # a weak planted call direction
    w = np.where(y == 1, 1.0, np.where(rng.random(n) < 0.5, 1.0, 0.05))  # half weak negatives
    sec, probe = timed(
        lambda: LinearProbe(class_weight="balanced").fit(X, y, sample_weight=w), repeats
    )
    acc = float((probe.predict(X) == y).mean())
    return {
        "task": f"train probe {n} x {DIM}",
        "seconds": sec,
        "target": 1.0,
        "note": f"{int(probe.n_iter_[0])} L-BFGS iterations, train acc {acc:.3f}",
    }


def bench_score(rng, n: int, block: int, repeats: int) -> dict:
    from index.classify import numpy_scorer

    X, _ = unit(rng, block)
    coef = rng.standard_normal((1, DIM)).astype(np.float32)
    bias = np.zeros(1)
    passes = max(1, n // block)

    def run():
        out = 0.0
        for _ in range(passes):
            z = numpy_scorer(X, coef, bias)  # (block, 1)
            out += float((1 / (1 + np.exp(-z))).sum())
        return out

    sec, _ = timed(run, repeats)
    return {
        "task": f"score {passes * block:,} windows",
        "seconds": sec,
        "target": 3.0,
        "note": f"{passes} passes over a {block:,}-window block (NumPy matmul + sigmoid)",
    }


def knn_agreement(xy: np.ndarray, labels: np.ndarray, k: int = 10) -> float:
    """Mean share of each point's k nearest 2-D neighbours that carry its cluster label."""
    import faiss

    index = faiss.IndexFlatL2(2)
    index.add(np.ascontiguousarray(xy, dtype=np.float32))
    _, nn = index.search(np.ascontiguousarray(xy, dtype=np.float32), k + 1)  # (n, k + 1)
    return float((labels[nn[:, 1:]] == labels[:, None]).mean())


def bench_umap(rng, n: int, repeats: int, quality: bool) -> list[dict]:
    from index.projection import UMAP_FIT_CAP, fit_projection

    dirs = np.linalg.qr(rng.standard_normal((DIM, 20)))[0].T.astype(np.float32)
    X, label = unit(rng, n, dirs, strength=0.3)  # 20 clusters
    t = time.perf_counter()
    fit_projection(X[:2000], "umap", seed=None)  # numba compilation (or cache load) happens here
    warm = time.perf_counter() - t
    sec, (_, xy) = timed(lambda: fit_projection(X, "umap", seed=None), repeats)
    seeded, (_, xy0) = timed(lambda: fit_projection(X, "umap", seed=0), repeats)
    fit = min(n, UMAP_FIT_CAP)
    rows = [
        {
            "task": f"UMAP {n:,} (PCA 50, fit {fit:,})",
            "seconds": sec,
            "target": 30.0,
            "note": f"seed=None (parallel); 10-NN label agreement {knn_agreement(xy, label):.3f}; "
            f"first call in the process (2 000 rows, compile or numba cache load) {warm:.1f} s",
        },
        {
            "task": f"UMAP {n:,}, seed=0",
            "seconds": seeded,
            "target": None,
            "note": f"project() default, reproducible; agreement {knn_agreement(xy0, label):.3f}",
        },
    ]
    if quality:
        full, (_, xyf) = timed(lambda: fit_projection(X, "umap", seed=None, fit_cap=n), 1)
        rows.append(
            {
                "task": f"UMAP {n:,} full fit (reference)",
                "seconds": full,
                "target": None,
                "note": f"UMAP on every row; agreement {knn_agreement(xyf, label):.3f}",
            }
        )
    return rows


def bench_kmeans(rng, n: int, k: int, block: int) -> dict:
    from index.cluster import PCA_DIM, cluster_reduced
    from index.projection import fit_pca

    dirs = np.linalg.qr(rng.standard_normal((DIM, k)))[0].T.astype(np.float32)
    Z = np.empty((n, PCA_DIM), np.float32)
    pca, spent = None, 0.0
    for i in range(0, n, block):
        X, _ = unit(rng, min(block, n - i), dirs, strength=0.5)  # generation is not timed
        t = time.perf_counter()
        pca = pca or fit_pca(X, PCA_DIM)
        Z[i : i + len(X)] = pca.transform(X)
        spent += time.perf_counter() - t
    t = time.perf_counter()
    res = cluster_reduced(Z, "kmeans", k)
    km = time.perf_counter() - t
    sizes = np.bincount(res.labels, minlength=k)
    return {
        "task": f"k-means {n:,} x {DIM} -> {k}",
        "seconds": spent + km,
        "target": 60.0,
        "note": f"PCA fit+transform {spent:.1f} s, k-means++ / FAISS k-means + assign {km:.1f} s; "
        f"cluster sizes {sizes.min()}-{sizes.max()}",
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (a smoke test)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="train,score,umap,kmeans")
    ap.add_argument("--quality", action="store_true", help="also a full UMAP fit as reference")
    args = ap.parse_args()
    q = args.quick
    rng = np.random.default_rng(0)
    rows = []
    todo = args.only.split(",")
    if "train" in todo:
        rows.append(bench_train(rng, 2000 if q else 10_000, args.repeats))
    if "score" in todo:
        rows.append(
            bench_score(rng, 20_000 if q else 1_000_000, 10_000 if q else 250_000, args.repeats)
        )
    if "umap" in todo:
        rows += bench_umap(rng, 3000 if q else 100_000, args.repeats, args.quality)
    if "kmeans" in todo:
        rows.append(bench_kmeans(rng, 20_000 if q else 1_000_000, 16 if q else 256, 100_000))
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in open("/proc/cpuinfo")
            if ln.startswith("model name")
        ),
        "?",
    )
    print(
        f"# {os.cpu_count()} cores ({cpu}), OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '-')}"
    )
    print(f"| {'task':40s} | {'seconds':>8s} | {'target':>6s} | note")
    print(f"|{'-' * 42}|{'-' * 10}|{'-' * 8}|------")
    for r in rows:
        target = "-" if r["target"] is None else f"{r['target']:g}"
        print(f"| {r['task']:40s} | {r['seconds']:8.2f} | {target:>6s} | {r['note']}")


if __name__ == "__main__":
    main()
