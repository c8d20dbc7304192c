"""Index benchmark: LanceDB insert rate, exact search latency, and each FAISS choice's
recall@10 / latency / build time / bytes per vector on synthetic clustered vectors.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/index_bench.py --n 100000 --dim 1536

Vectors: ``--clusters`` Gaussian clusters (random centres, per-cluster spread drawn from
[0.6, 1.2] x the centre norm / sqrt(dim)), like calls of many species in one embedding
space. Queries are fresh draws from the same mixture (not in the database). Recall@10 is
measured against exact inner-product search on the same unit vectors. Results are printed
as a Markdown table (paste into benchmarks/RESULTS.md, "## Index").
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np
import pandas as pd
from lancedb.index import IvfPq

import index
from index import faiss_index as fi

CHUNK = 5_000  # windows per add_embeddings call (one LanceDB commit each)
WINDOWS_PER_RECORDING = 720  # 1 h at 5 s hop
K = 10


def clustered(n: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors (n, dim) float32 from a Gaussian mixture with fixed centres (seed 0)."""
    centres = np.random.default_rng(0).standard_normal((clusters, dim)).astype(np.float32)
    spread = np.random.default_rng(1).uniform(0.6, 1.2, clusters).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for i in range(0, n, 50_000):
        m = min(50_000, n - i)
        c = rng.integers(0, clusters, m)
        x = centres[c] + spread[c, None] * rng.standard_normal((m, dim), dtype=np.float32)
        out[i : i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def fill(db, vec: np.ndarray) -> float:
    """Insert all vectors in CHUNK commits; return vectors/s."""
    n = len(vec)
    rid = np.arange(n) // WINDOWS_PER_RECORDING
    start = (np.arange(n) % WINDOWS_PER_RECORDING) * 5.0
    for r in range(int(rid[-1]) + 1):
        db.upsert_recordings(
            [{"audio_root": db.path.parent, "path": f"r{r}.wav", "site": "ABCD"[r % 4]}]
        )
    t0 = time.perf_counter()
    for i in range(0, n, CHUNK):
        s = slice(i, i + CHUNK)
        db.add_embeddings(
            "bench",
            {
                "recording_id": rid[s],
                "start_s": start[s],
                "end_s": start[s] + 5.0,
                "vector": vec[s],
            },
        )
    return n / (time.perf_counter() - t0)


def timed(fn, repeats: int) -> np.ndarray:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return np.asarray(out) * 1e3  # ms


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f) & set(t)) / K for f, t in zip(found, truth, strict=True)]))


def bench_faiss(db, queries, truth, factory: str, params: dict, sweeps: list[dict]) -> list[dict]:
    """Build one factory through db.build_index; measure each search-parameter sweep point."""
    t0 = time.perf_counter()
    s = db.build_index("bench", factory=factory, rebuild=True, **params)
    build_s = time.perf_counter() - t0
    ann = db.search_state.load_ann("bench")
    size = sum(p.stat().st_size for p in db.faiss_dir.glob(f"bench.{s.token}.*"))
    rows = []
    for sweep in sweeps or [{}]:
        ann.settings.params = {**s.params, **sweep}
        found = np.stack([ann.ids[ann.search(q[None], K)[1][0]] for q in queries])
        lat = timed(lambda q=queries[0]: ann.search(q[None], K), 1)  # warm-up
        lat = np.concatenate([timed(lambda q=q: ann.search(q[None], K), 1) for q in queries])
        e2e = np.concatenate(
            [timed(lambda q=q: db.search("bench", q).limit(K).to_pandas(), 1) for q in queries[:50]]
        )
        rows.append(
            {
                "index": factory,
                "params": ", ".join(f"{k}={v}" for k, v in ann.settings.params.items()) or "-",
                "recall@10": recall(found, truth),
                "p50 ms": np.median(lat),
                "p99 ms": np.percentile(lat, 99),
                "db.search p50 ms": np.median(e2e),
                "build s": build_s,
                "bytes/vector": size / len(ann),
            }
        )
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1), flush=True)
    return rows


def bench_lance_ivfpq(db, queries, truth, dim: int, n: int) -> list[dict]:
    """LanceDB's own IVF_PQ index with exact refine, on the same table."""
    tbl = db.windows("bench")
    parts = int(2 ** round(np.log2(np.sqrt(n))))
    t0 = time.perf_counter()
    config = IvfPq(distance_type="dot", num_partitions=parts, num_sub_vectors=dim // 16)
    tbl.create_index("vector", config=config)
    build_s = time.perf_counter() - t0
    tbl = db.windows("bench")
    size = sum(p.stat().st_size for p in (Path(tbl.uri) / "_indices").rglob("*") if p.is_file())
    rows = []
    for nprobes, refine in [(20, 10), (40, 20)]:

        def query(q, nprobes=nprobes, refine=refine):
            return (
                tbl.search(q)
                .distance_type("dot")
                .nprobes(nprobes)
                .refine_factor(refine)
                .select(["window_id"])
                .limit(K)
                .to_arrow()["window_id"]
                .to_numpy()
            )

        found = np.stack([query(q) for q in queries])
        lat = np.concatenate([timed(lambda q=q: query(q), 1) for q in queries])
        rows.append(
            {
                "index": f"LanceDB IVF_PQ (partitions={parts}, sub_vectors={dim // 16})",
                "params": f"nprobes={nprobes}, refine_factor={refine}",
                "recall@10": recall(found, truth),
                "p50 ms": np.median(lat),
                "p99 ms": np.percentile(lat, 99),
                "db.search p50 ms": np.nan,
                "build s": build_s,
                "bytes/vector": size / n,
            }
        )
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=False), flush=True)
    return rows


def markdown(df: pd.DataFrame) -> str:
    """A Markdown table (no tabulate dependency); floats with 3 significant digits."""
    cells = [[f"{v:.3g}" if isinstance(v, float) else str(v) for v in row] for row in df.values]
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in cells])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1536)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--skip", default="", help="comma list of: hnsw,ivf,sq8,lance")
    ap.add_argument("--dir", default=None, help="work folder (default: a temp dir, removed)")
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    work = Path(args.dir or tempfile.mkdtemp(prefix="chorus_bench_"))
    print(
        f"faiss {faiss.__version__}, threads {faiss.omp_get_max_threads()}, n={args.n}, d={args.dim}"
    )
    try:
        vec = clustered(args.n, args.dim, args.clusters, seed=2)
        queries = clustered(args.queries, args.dim, args.clusters, seed=3)
        truth = np.argsort(-(queries @ vec.T), axis=1)[:, :K]  # window ids == row numbers

        db = index.connect(work / "bench.chorus")
        rate = fill(db, vec)
        del vec
        print(f"LanceDB insert: {rate:,.0f} vectors/s ({CHUNK} per commit)")
        exact = timed(lambda: db.search("bench", queries[0]).exact().limit(K).to_pandas(), 3)
        print(f"exact search (stream from LanceDB, no index): median {np.median(exact):.0f} ms")

        rows = bench_faiss(db, queries, truth, "Flat", {}, [])
        if "hnsw" not in skip:
            sweeps = [{"efSearch": e} for e in (32, 64, 128, 256)]
            rows += bench_faiss(db, queries, truth, "HNSW32,Flat", {"efConstruction": 64}, sweeps)
        if "ivf" not in skip:
            fac, _ = fi.choose_factory(1_000_000, args.dim)  # the large-archive tier
            nlist = 2 ** round(np.log2(fi.IVF_CELLS_PER_SQRT_N * np.sqrt(args.n)))
            fac = f"IVF{nlist}," + fac.split(",", 1)[1]
            sweeps = [
                {"nprobe": p, "k_factor": kf} for p, kf in ((16, 8), (16, 16), (32, 32), (64, 32))
            ]
            rows += bench_faiss(db, queries, truth, fac, {}, sweeps)
        if "sq8" not in skip:
            nlist = 2 ** round(np.log2(fi.IVF_CELLS_PER_SQRT_N * np.sqrt(args.n)))
            rows += bench_faiss(db, queries, truth, f"IVF{nlist},SQ8", {}, [{"nprobe": 32}])
        if "lance" not in skip:
            rows += bench_lance_ivfpq(db, queries, truth, args.dim, args.n)
        print()
        print(markdown(pd.DataFrame(rows)))
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
