"""Search latency at equal recall: what ``factory="auto"`` picks, ANN p50 through ``db.search``,
exact and filtered exact p50, and a cold process's first answer, on synthetic clustered vectors.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/search_bench.py --n 100000 --db /tmp/sb100k.chorus

Data: ``--n`` unit 1536-d vectors from a ``--clusters`` Gaussian mixture (``index_bench.clustered``),
720 windows per recording, recordings spread over ``--sites`` sites (the filtered searches keep one).
Queries are fresh draws from the mixture. Recall@10 is against exact float32 inner-product search
over the generated vectors. Every latency is a median over ``--queries`` queries of the whole
``db.search(model, q).limit(10).to_pandas()`` path; the variants are interleaved query by query
(the machine is shared), and each setting is applied with ``db.build_index(..., nprobe=, k_factor=)``
which only rewrites the index settings. The database is kept at ``--db`` and reused by a rerun.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import index

sys.path.insert(0, str(Path(__file__).parent))
from index_bench import clustered  # noqa: E402

K = 10
MODEL = "bench"
WINDOWS_PER_RECORDING = 720
CHUNK = 10_000


def fill(db, vec: np.ndarray, sites: int) -> float:
    """Insert ``vec`` in CHUNK commits; return windows/s (insert only)."""
    n = len(vec)
    rid_local = np.arange(n) // WINDOWS_PER_RECORDING
    n_rec = int(rid_local[-1]) + 1
    rec_ids = db.upsert_recordings(
        [
            {"audio_root": str(db.path.parent), "path": f"r{r}.wav", "site": f"S{r % sites:02d}"}
            for r in range(n_rec)
        ]
    )
    rid = np.asarray(rec_ids)[rid_local]
    start = (np.arange(n) % WINDOWS_PER_RECORDING) * 5.0
    t0 = time.perf_counter()
    for i in range(0, n, CHUNK):
        s = slice(i, i + CHUNK)
        db.add_embeddings(
            MODEL,
            {
                "recording_id": rid[s],
                "start_s": start[s],
                "end_s": start[s] + 5.0,
                "vector": vec[s],
            },
        )
    return n / (time.perf_counter() - t0)


def truth(vec: np.ndarray, ids: np.ndarray, q: np.ndarray, allowed=None) -> list[set]:
    out = []
    for row in q:
        s = vec @ row
        if allowed is not None:
            s = np.where(allowed, s, -np.inf)
        out.append(set(ids[np.argpartition(-s, K)[:K]].tolist()))
    return out


def cold_first_answer(db_path: Path, runs: int) -> list[tuple[float, float]]:
    """(wall s, CPU s) from a fresh interpreter's first import to its first search answer
    (interpreter start-up excluded). CPU time is what a loaded machine inflates least."""
    code = (
        "import time; t=time.perf_counter(); c=time.process_time(); import index; "
        f"db=index.connect({str(db_path)!r}, create=False); "
        f"db.search({MODEL!r}, [0]).limit(10).to_pandas(); "
        "print(time.perf_counter()-t, time.process_time()-c)"
    )
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    out = []
    for _ in range(runs):
        got = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        wall, cpu = got.stdout.strip().splitlines()[-1].split()
        out.append((float(wall), float(cpu)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--dim", type=int, default=1536)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--sites", type=int, default=20)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--db", type=Path, required=True)
    ap.add_argument("--grid", nargs="*", default=[], help="PARAM=V[,PARAM=V] settings to compare")
    ap.add_argument("--cold-runs", type=int, default=5)
    ap.add_argument("--store", choices=["float16", "float32"], default="float16")
    args = ap.parse_args()

    vec = clustered(args.n, args.dim, args.clusters, seed=3)
    db = index.connect(args.db)
    if MODEL not in db.models() or db.windows(MODEL).count_rows() != args.n:
        # the vector type `chorus embed` gives a new model (``--store``)
        db.register_model(MODEL, {"name": MODEL, "dim": args.dim}, vector_dtype=args.store)
        rate = fill(db, vec, args.sites)
        print(f"insert: {rate:,.0f} windows/s")
        t0 = time.perf_counter()
        s = db.build_index(MODEL)
        print(f"build_index auto: {s.factory} {s.params} in {time.perf_counter() - t0:.1f} s")
    s = db.build_index(MODEL)
    print(f"auto choice at n={args.n}: {s.factory} {s.params} (action {s.action})")
    files = sorted((args.db / "faiss").glob(f"{MODEL}.*.index"))
    size = sum(f.stat().st_size for f in files if f.name.count(".") == 2)
    lance = sum(f.stat().st_size for f in (args.db / "lance").rglob("*") if f.is_file())
    print(f"disk: index {size / 1e9:.3f} GB, lance {lance / 1e9:.3f} GB")

    ids = np.sort(db.snapshot(MODEL).window_id)  # fill order == window_id order
    q = clustered(args.queries, args.dim, args.clusters, seed=11)
    site_ok = np.asarray([(i // WINDOWS_PER_RECORDING) % args.sites == 3 for i in range(args.n)])
    gt = truth(vec, ids, q)
    gt_site = truth(vec, ids, q, site_ok)
    where = "site = 'S03'"

    variants: list[tuple[str, dict]] = [("auto default", {})]
    for g in args.grid:
        variants.append((g, {k: float(v) for k, v in (kv.split("=") for kv in g.split(","))}))
    defaults = dict(s.params)
    rows = []
    for name, params in variants:  # settings differ per variant: one variant at a time, repeated
        db.build_index(MODEL, **{**defaults, **params})
        lat, lat_arrow, rec = [], [], []
        for _rep in range(2):
            for i, row in enumerate(q):  # the two result forms interleaved
                t0 = time.perf_counter()
                hits = db.search(MODEL, row).limit(K).to_pandas()
                lat.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                db.search(MODEL, row).limit(K).to_arrow()
                lat_arrow.append(time.perf_counter() - t0)
                if _rep == 0:
                    rec.append(len(gt[i] & set(hits["window_id"].tolist())) / K)
        rows.append((name, float(np.mean(rec)), float(np.median(lat) * 1e3)))
        rows.append((f"{name}, to_arrow()", float(np.mean(rec)), float(np.median(lat_arrow) * 1e3)))
    db.build_index(MODEL, **defaults)

    t0 = time.perf_counter()  # a filter not seen before: the view query runs
    db.search(MODEL, q[0]).where("site = 'S04'").exact().limit(K).to_pandas()
    first_filtered = time.perf_counter() - t0
    ex, fex, fann, frec, erec = [], [], [], [], []
    for i, row in enumerate(q[:30]):  # interleaved: exact, filtered exact, filtered ANN
        t0 = time.perf_counter()
        hits = db.search(MODEL, row).exact().limit(K).to_pandas()
        ex.append(time.perf_counter() - t0)
        erec.append(len(gt[i] & set(hits["window_id"].tolist())) / K)
        t0 = time.perf_counter()
        hits = db.search(MODEL, row).where(where).exact().limit(K).to_pandas()
        fex.append(time.perf_counter() - t0)
        frec.append(len(gt_site[i] & set(hits["window_id"].tolist())) / K)
        t0 = time.perf_counter()
        db.search(MODEL, row).where(where).limit(K).to_pandas()
        fann.append(time.perf_counter() - t0)
    cold = cold_first_answer(args.db, args.cold_runs)

    print(f"\n| search (n={args.n:,}) | recall@10 | p50 ms |")
    print("|---|---|---|")
    for name, r, p in rows:
        print(f"| ANN {name} | {r:.3f} | {p:.2f} |")
    print(f"| exact | {np.mean(erec):.3f} | {np.median(ex) * 1e3:.1f} |")
    print(f"| exact, {where} | {np.mean(frec):.3f} | {np.median(fex) * 1e3:.1f} |")
    print(f"| ANN, {where} | - | {np.median(fann) * 1e3:.1f} |")
    print(f"| exact, site = 'S04' (first use of the filter) | - | {first_filtered * 1e3:.1f} |")
    wall, cpu = np.median(np.asarray(cold), axis=0)
    print(
        f"| cold process -> first answer ({len(cold)} runs) | - | {wall:.2f} s ({cpu:.2f} s CPU) |"
    )


if __name__ == "__main__":
    main()
