"""The low-memory index tier at scale: recall@10, latency, resident memory, build time, disk.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/lowmem_index_bench.py --n 500000 --db /tmp/lm.chorus

Data: ``--n`` unit 1536-d vectors from a ``--clusters`` Gaussian mixture (centres and spreads as
``index_bench.clustered``), generated chunk by chunk from per-chunk seeds (so the ground truth
regenerates them instead of holding them) and written straight into a database that stores
vectors as float16 (``vector_dtype="float16"``, what ``chorus embed --store float16`` does).
The table is then compacted (as ``chorus embed`` does every 32 commits). The index is the
low-memory tier (``LowMemTier.for_size``; ``auto`` picks it above
``LOWMEM_BYTES``). Queries are fresh draws from the mixture; recall@10 is against exact search
over the stored (float16-rounded) vectors. Searches run in a fresh process (what a user's
``chorus search`` or explorer pays): its resident memory is read after opening the database and
running every query; latency is the whole ``db.search(model, q).limit(10).to_pandas()``, the
shortlist multiples (``k_factor``) interleaved query by query. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

MODEL = "bench"
K = 10
CHUNK = 20_000
WINDOWS_PER_RECORDING = 720


def chunk_vectors(i: int, m: int, dim: int, clusters: int, seed: int) -> np.ndarray:
    """Unit vectors (m, dim) float32 of chunk ``i`` (deterministic per chunk)."""
    centres = np.random.default_rng(0).standard_normal((clusters, dim)).astype(np.float32)
    spread = np.random.default_rng(1).uniform(0.6, 1.2, clusters).astype(np.float32)
    rng = np.random.default_rng([seed, i])
    c = rng.integers(0, clusters, m)
    x = centres[c] + spread[c, None] * rng.standard_normal((m, dim), dtype=np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def fill(db, n: int, dim: int, clusters: int) -> float:
    """Write ``n`` windows in CHUNK commits; return seconds."""
    db.register_model(MODEL, {"dim": dim}, vector_dtype="float16")
    n_rec = -(-n // WINDOWS_PER_RECORDING)
    rec = [{"audio_root": str(db.path.parent), "path": f"r{r}.wav"} for r in range(n_rec)]
    rec_ids = np.asarray(db.upsert_recordings(rec))
    t0 = time.perf_counter()
    for i in range(0, n, CHUNK):
        m = min(CHUNK, n - i)
        j = np.arange(i, i + m)
        start = (j % WINDOWS_PER_RECORDING) * 5.0
        vec = chunk_vectors(i // CHUNK, m, dim, clusters, seed=1)
        db.add_embeddings(
            MODEL,
            {
                "recording_id": rec_ids[j // WINDOWS_PER_RECORDING],
                "start_s": start,
                "end_s": start + 5.0,
                "vector": vec,
            },
        )
    return time.perf_counter() - t0


def compact(db) -> float:
    """Merge the fill's commits into full fragments, as ``chorus embed``'s periodic compaction
    leaves a table (a take touching 100 small fragments costs ~3x one touching a few), and drop
    the old versions so that the disk figure counts one copy; return seconds."""
    t0 = time.perf_counter()
    db.windows(MODEL).optimize(cleanup_older_than=datetime.timedelta(0))
    return time.perf_counter() - t0


def ground_truth(db, q: np.ndarray) -> np.ndarray:
    """Window ids (m, K) of the exact top-K over the stored vectors, streamed from the table."""
    snap = db.snapshot(MODEL)
    best_s = np.full((len(q), K), -np.inf, np.float32)
    best_i = np.zeros((len(q), K), np.int64)
    for ids, vec in snap.iter_vectors(batch_rows=50_000):
        s = q @ vec.T  # (m, b)
        s_all = np.concatenate([best_s, s], axis=1)
        i_all = np.concatenate([best_i, np.broadcast_to(ids, s.shape)], axis=1)
        top = np.argpartition(-s_all, K - 1, axis=1)[:, :K]
        best_s = np.take_along_axis(s_all, top, 1)
        best_i = np.take_along_axis(i_all, top, 1)
    return best_i


CHILD = r"""
import json, sys, time
import numpy as np
import index
db_path, k_factors, qfile = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
q = np.load(qfile)
def rss():
    f = dict(l.split(":", 1) for l in open("/proc/self/status"))
    return int(f["VmRSS"].split()[0]) * 1024, int(f["VmHWM"].split()[0]) * 1024
t0 = time.perf_counter()
db = index.connect(db_path, create=False)
db.search("bench", q[0]).limit(10).to_pandas()
first = time.perf_counter() - t0
ann = db.search_state.load_ann("bench")
lat = {kf: [] for kf in k_factors}
ids = {kf: [] for kf in k_factors}
for row in q:
    for kf in k_factors:  # interleaved: the machine is shared
        ann.settings.params["k_factor"] = kf
        t = time.perf_counter()
        hits = db.search("bench", row).limit(10).to_pandas()
        lat[kf].append(time.perf_counter() - t)
        ids[kf].append(hits["window_id"].tolist())
r, hwm = rss()
print(json.dumps({"first_s": first, "lat": lat, "ids": ids, "rss": r, "hwm": hwm,
                  "factory": ann.settings.factory, "kind": ann.tier.kind}))
"""


def du(path: Path) -> int:
    """Bytes under ``path``, each file once (the index's stable names are hard links)."""
    files = {p.stat().st_ino: p.stat().st_size for p in path.rglob("*") if p.is_file()}
    return sum(files.values())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500_000)
    ap.add_argument("--dim", type=int, default=1536)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k-factors", default="32,64,128")
    ap.add_argument("--db", type=Path, required=True)
    args = ap.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import index
    from index.tiers import LowMemTier

    out: dict = {"n": args.n, "dim": args.dim, "cpus": os.cpu_count()}
    db = index.connect(args.db)
    if MODEL not in db.models():
        out["fill_s"] = round(fill(db, args.n, args.dim, args.clusters), 1)
        out["compact_s"] = round(compact(db), 1)
    t0 = time.perf_counter()
    tier = LowMemTier.for_size(args.n, args.dim)
    s = db.build_index(MODEL, factory=tier.factory)
    out["build_s"] = round(time.perf_counter() - t0, 1)
    out["factory"], out["action"] = s.factory, s.action
    q = chunk_vectors(10**6, args.queries, args.dim, args.clusters, seed=2)
    t0 = time.perf_counter()
    truth = ground_truth(db, q)
    out["truth_s"] = round(time.perf_counter() - t0, 1)
    qfile = args.db.parent / "lowmem_queries.npy"
    np.save(qfile, q)
    kfs = [float(x) for x in args.k_factors.split(",")]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, str(args.db), json.dumps(kfs), str(qfile)],
        capture_output=True,
        text=True,
        env=env,
        check=True,
    )
    child = json.loads(proc.stdout.strip().splitlines()[-1])
    for kf in kfs:
        got = child["ids"][str(kf)]
        lat = np.asarray(child["lat"][str(kf)]) * 1e3
        rec = np.mean([len(set(g) & set(t)) / K for g, t in zip(got, truth.tolist(), strict=True)])
        out[f"kf{kf:g}"] = {
            "recall@10": round(float(rec), 4),
            "p50_ms": round(float(np.median(lat)), 2),
            "p99_ms": round(float(np.percentile(lat, 99)), 2),
        }
    out["rss_gb"] = round(child["rss"] / 1e9, 3)
    out["peak_rss_gb"] = round(child["hwm"] / 1e9, 3)
    out["first_answer_s"] = round(child["first_s"], 2)
    out["disk_lance_b_per_window"] = round(du(args.db / "lance") / args.n, 1)
    out["disk_faiss_b_per_window"] = round(du(args.db / "faiss") / args.n, 1)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
