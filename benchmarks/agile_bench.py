"""Agile-loop speed: probe training, archive scoring, UMAP maps, k-means clustering.

Synthetic unit vectors with planted directions (no database I/O: these time the compute once
vectors are loaded). Targets (2 CPU cores): train 10 k x 1536 <= 1 s; score 1 M windows <= 3 s;
UMAP of 100 k <= 30 s; k-means of 1 M x 1536 into 256 clusters <= 60 s.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/agile_bench.py [--quick] [--before REV]

``--before REV`` also times the probe, PCA and k-means code of git revision REV (read with
``git show`` into throwaway modules) in the same run, so before/after figures share the machine's
load; the UMAP row then also gives the first call in a fresh process for both.

Memory: scoring reuses one block of windows (1 M windows = several passes over a 250 k block)
and k-means streams blocks through the PCA basis, so the run stays under ~3 GB.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np

DIM = 1536  # Perch-2.0-sized embeddings
ROOT = Path(__file__).resolve().parent.parent


def current_impl() -> types.SimpleNamespace:
    """This tree's probe, PCA and clustering code."""
    import index.cluster
    import index.probe
    import index.projection

    return types.SimpleNamespace(
        name="after", probe=index.probe, projection=index.projection, cluster=index.cluster
    )


def impl_at(rev: str) -> types.SimpleNamespace:
    """index/probe.py, projection.py and cluster.py as they were at git revision ``rev``."""
    mods = {}
    for name in ("probe", "projection", "cluster"):
        src = subprocess.run(
            ["git", "show", f"{rev}:index/{name}.py"],
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        mod = types.ModuleType(f"before_{name}")
        mod.__package__ = "index"  # relative imports (cache, db) resolve to this tree's package
        sys.modules[mod.__name__] = mod  # dataclasses look their module up here
        exec(compile(src, f"{rev}:index/{name}.py", "exec"), mod.__dict__)
        mods[name] = mod
    mods["cluster"].fit_pca = mods["projection"].fit_pca  # its PCA, not this tree's
    return types.SimpleNamespace(name=f"before ({rev})", **mods)


def first_umap_call(rev: str | None) -> float:
    """Seconds for the first UMAP map (2 000 rows) in a fresh process: numba compile or cache."""
    load = (
        f"import sys; sys.path.insert(0, {str(ROOT / 'benchmarks')!r}); "
        f"from agile_bench import impl_at; fit_projection = impl_at({rev!r}).projection"
        ".fit_projection"
        if rev
        else "from index.projection import fit_projection"
    )
    code = (
        "import time, numpy as np\n"
        f"{load}\n"
        "X = np.random.default_rng(0).standard_normal((2000, 1536), dtype=np.float32)\n"
        "t = time.perf_counter(); fit_projection(X, 'umap', seed=None)\n"
        "print(time.perf_counter() - t)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, check=True, capture_output=True, text=True
    )
    return float(out.stdout.split()[-1])


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


def bench_train(rng, n: int, repeats: int, impls: list) -> list[dict]:
    """Fit a balanced probe on n x DIM (half the negatives weak), each version in turn per round,
    so a change of the machine's load hits every version alike."""
    d = rng.standard_normal(DIM).astype(np.float32)
    d /= np.linalg.norm(d)
    X, _ = unit(rng, n)
    y = (rng.random(n) < 0.1).astype(int)
    X[y == 1] += 0.05 * d  # a weak planted call direction
    w = np.where(y == 1, 1.0, np.where(rng.random(n) < 0.5, 1.0, 0.05))  # half weak negatives
    times = {impl.name: [] for impl in impls}
    probes = {}
    for _ in range(repeats):
        for impl in impls:
            t = time.perf_counter()
            probe = impl.probe.LinearProbe(class_weight="balanced").fit(X, y, sample_weight=w)
            times[impl.name].append(time.perf_counter() - t)
            probes[impl.name] = probe
    rows = []
    for impl in impls:
        probe = probes[impl.name]
        acc = float((probe.predict(X) == y).mean())
        rows.append(
            {
                "task": f"train probe {n} x {DIM}",
                "version": impl.name,
                "seconds": statistics.median(times[impl.name]),
                "target": 1.0,
                "note": f"{int(probe.n_iter_[0])} L-BFGS iterations, train acc {acc:.3f}; "
                f"min of {repeats} {min(times[impl.name]):.2f} s",
                "probe": probe,
            }
        )
    return rows


def bench_score(rng, n: int, block: int, repeats: int, probe, version: str) -> dict:
    from index.classify import numpy_scorer

    X, _ = unit(rng, block)
    coef = np.asarray(probe.coef_, dtype=np.float32)  # (1, DIM) of the trained probe
    bias = np.asarray(probe.intercept_)
    passes = max(1, n // block)

    def run():
        out = 0.0
        for _ in range(passes):
            z = numpy_scorer(X, coef, bias)  # (block, 1)
            with np.errstate(over="ignore"):  # exp of a large logit is inf: its sigmoid is 0
                out += float((1 / (1 + np.exp(-z))).sum())
        return out

    sec, _ = timed(run, repeats)
    return {
        "task": f"score {passes * block:,} windows",
        "version": version,
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
            "version": "after",
            "seconds": sec,
            "target": 30.0,
            "note": f"seed=None (parallel); 10-NN label agreement {knn_agreement(xy, label):.3f}; "
            f"first call in the process (2 000 rows, compile or numba cache load) {warm:.1f} s",
        },
        {
            "task": f"UMAP {n:,}, seed=0",
            "version": "after",
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
                "version": "after",
                "seconds": full,
                "target": None,
                "note": f"UMAP on every row; agreement {knn_agreement(xyf, label):.3f}",
            }
        )
    return rows


def bench_kmeans(rng, n: int, k: int, block: int, impl) -> dict:
    PCA_DIM, cluster_reduced = impl.cluster.PCA_DIM, impl.cluster.cluster_reduced
    fit_pca = impl.projection.fit_pca

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
        "version": impl.name,
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
    ap.add_argument("--before", default=None, metavar="REV", help="also time git revision REV")
    args = ap.parse_args()
    q = args.quick
    impls = [current_impl()] + ([impl_at(args.before)] if args.before else [])
    rows = []
    todo = args.only.split(",")
    if "train" in todo or "score" in todo:
        trained = bench_train(np.random.default_rng(0), 2000 if q else 10_000, args.repeats, impls)
        rows += trained
    if "score" in todo:
        n, block = (20_000, 10_000) if q else (1_000_000, 250_000)
        for r in trained:
            rng = np.random.default_rng(1)  # the same windows for every version
            rows.append(bench_score(rng, n, block, args.repeats, r["probe"], r["version"]))
    if "kmeans" in todo:
        size = (20_000, 16) if q else (1_000_000, 256)
        for impl in impls:
            rows.append(bench_kmeans(np.random.default_rng(0), *size, 100_000, impl))
    if "umap" in todo:
        rows += bench_umap(
            np.random.default_rng(0), 3000 if q else 100_000, args.repeats, args.quality
        )
        for rev in [None] + ([args.before] if args.before else []):
            rows.append(
                {
                    "task": "first UMAP map in a new process (2 000)",
                    "version": f"before ({rev})" if rev else "after",
                    "seconds": first_umap_call(rev),
                    "target": None,
                    "note": "import + numba compilation (or numba cache load)",
                }
            )
    print_rows(rows)


def print_rows(rows: list[dict]) -> None:
    """A Markdown table of the results, headed by the machine."""
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
    print(f"| {'task':40s} | {'version':18s} | {'seconds':>8s} | {'target':>6s} | note")
    print(f"|{'-' * 42}|{'-' * 20}|{'-' * 10}|{'-' * 8}|------")
    for r in sorted(rows, key=lambda r: r["task"]):
        target = "-" if r["target"] is None else f"{r['target']:g}"
        print(
            f"| {r['task']:40s} | {r['version']:18s} | {r['seconds']:8.2f} | {target:>6s} "
            f"| {r['note']}"
        )


if __name__ == "__main__":
    main()
