"""Chorus next to perch-hoplite (SQLite + USearch, float16) on the same synthetic windows.

Installs nothing itself. perch-hoplite lives in its own virtual environment, never in Chorus's:

    python3 -m venv /tmp/hopenv
    /tmp/hopenv/bin/pip install perch-hoplite==1.0.2
    OMP_WAIT_POLICY=PASSIVE python benchmarks/peer_hoplite.py --n 100000 \\
        --hoplite-python /tmp/hopenv/bin/python --work /tmp/peer

The vectors (``index_bench.clustered``: 1536-d, ``--clusters`` clusters, 720 windows per recording,
recordings over ``--sites`` sites) are written once to ``--work``; each side ingests them, builds
its index and answers the same fresh queries. The hoplite side runs in the other interpreter
(``_HOPLITE_SIDE`` below) and reports JSON. Recall@10 is against exact float32 search. Latencies
are medians over the queries; the sides alternate (Chorus, hoplite, Chorus, ...) ``--repeats``
times and the table shows the medians of those runs. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from index_bench import clustered  # noqa: E402
from search_bench import MODEL, WINDOWS_PER_RECORDING, cold_first_answer, fill, truth  # noqa: E402

K = 10

_HOPLITE_SIDE = r"""
import json, shutil, sys, time
import numpy as np
from perch_hoplite.db import db_loader
work, n_sites, per_rec, k = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
vec = np.load(f"{work}/vectors.npy", mmap_mode="r"); qs = np.load(f"{work}/queries.npy")
path = f"{work}/hoplite"
shutil.rmtree(path, ignore_errors=True)
t0 = time.perf_counter()
db = db_loader.create_new_usearch_db(path, vec.shape[1])
deps = [db.insert_deployment(name=f"S{s:02d}", project="bench") for s in range(n_sites)]
n = len(vec)
for r in range((n + per_rec - 1) // per_rec):
    rid = db.insert_recording(filename=f"r{r}.wav", deployment_id=deps[r % n_sites])
    lo, hi = r * per_rec, min(n, (r + 1) * per_rec)
    wins = [{"recording_id": rid, "offsets": [5.0 * i, 5.0 * i + 5.0]} for i in range(hi - lo)]
    db.insert_windows_batch(wins, np.asarray(vec[lo:hi]), handle_duplicates="allow")
db.commit()
ingest = n / (time.perf_counter() - t0)
out = {"ingest": ingest}
for name, approx in (("ann", True), ("exact", False)):
    lat, hits = [], []
    for q in qs:
        t0 = time.perf_counter()
        res = db.search(q, k, approximate=approx)
        lat.append(time.perf_counter() - t0)
        hits.append([int(r.window_id) for r in res.search_results])
    out[name] = {"p50_ms": float(np.median(lat) * 1e3), "hits": hits}
import os
out["disk"] = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
print(json.dumps(out))
"""

_HOPLITE_COLD = r"""
import sys, time
t = time.perf_counter()
import numpy as np
from perch_hoplite.db import sqlite_usearch_impl as s
db = s.SQLiteUSearchDB.create(sys.argv[1] + "/hoplite", readonly=True)
db.search(np.load(sys.argv[1] + "/queries.npy")[0], 10)
print(time.perf_counter() - t)
"""


def hoplite_run(py: str, work: Path, sites: int) -> dict:
    args = [py, "-c", _HOPLITE_SIDE, str(work), str(sites), str(WINDOWS_PER_RECORDING), str(K)]
    got = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(got.stdout.strip().splitlines()[-1])


def hoplite_cold(py: str, work: Path, runs: int) -> list[float]:
    return [
        float(subprocess.run([py, "-c", _HOPLITE_COLD, str(work)], capture_output=True,
                             text=True, check=True).stdout.strip().splitlines()[-1])
        for _ in range(runs)
    ]  # fmt: skip


def chorus_run(work: Path, vec: np.ndarray, qs: np.ndarray, sites: int) -> dict:
    import shutil

    import index

    path = work / "chorus.chorus"
    shutil.rmtree(path, ignore_errors=True)
    db = index.connect(path)
    t0 = time.perf_counter()
    fill(db, vec, sites)
    db.build_index(MODEL)
    out = {"ingest": len(vec) / (time.perf_counter() - t0)}
    for name, exact in (("ann", False), ("exact", True)):
        lat, hits = [], []
        for q in qs:
            t0 = time.perf_counter()
            s = db.search(MODEL, q)
            res = (s.exact() if exact else s).limit(K).to_pandas()
            lat.append(time.perf_counter() - t0)
            hits.append(res["window_id"].tolist())
        out[name] = {"p50_ms": float(np.median(lat) * 1e3), "hits": hits}
    out["disk"] = sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--sites", type=int, default=20)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--hoplite-python", required=True, help="python of the perch-hoplite venv")
    ap.add_argument("--work", type=Path, required=True)
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args.work.mkdir(parents=True, exist_ok=True)
    vec = clustered(args.n, 1536, args.clusters, seed=3)
    qs = clustered(args.queries, 1536, args.clusters, seed=11)
    np.save(args.work / "vectors.npy", vec)
    np.save(args.work / "queries.npy", qs)
    gt = truth(vec, np.arange(args.n), qs)  # window ids: 0.. in fill order on both sides

    runs: dict[str, list[dict]] = {"chorus": [], "hoplite": []}
    for _ in range(args.repeats):
        runs["chorus"].append(chorus_run(args.work, vec, qs, args.sites))
        runs["hoplite"].append(hoplite_run(args.hoplite_python, args.work, args.sites))
    cold = {
        "chorus": cold_first_answer(args.work / "chorus.chorus", 3),
        "hoplite": hoplite_cold(args.hoplite_python, args.work, 3),
    }

    def recall(hits, offset):
        return np.mean(
            [len(set(np.asarray(h) - offset) & g) / K for h, g in zip(hits, gt, strict=True)]
        )

    def fig(side, key):
        return float(np.median([r[key]["p50_ms"] for r in runs[side]]))

    # hoplite window ids start at 1 (SQLite rowids), Chorus's at 0
    off = {"chorus": 0, "hoplite": 1}
    rows = [
        ("ingest + index, windows/s", *(np.median([r["ingest"] for r in runs[s]]) for s in off)),
        ("ANN search p50 ms", fig("chorus", "ann"), fig("hoplite", "ann")),
        *[(f"ANN recall@10 ({s})", recall(runs[s][-1]["ann"]["hits"], off[s]), None) for s in off],
        ("exact search p50 ms", fig("chorus", "exact"), fig("hoplite", "exact")),
        ("disk GB", runs["chorus"][-1]["disk"] / 1e9, runs["hoplite"][-1]["disk"] / 1e9),
        ("cold process -> first answer s", np.median(cold["chorus"]), np.median(cold["hoplite"])),
    ]
    print(f"\n| figure ({args.n:,} windows) | Chorus | hoplite | Chorus / hoplite |")
    print("|---|---|---|---|")
    for name, a, b in rows:
        ratio = f"{a / b:.2f}" if b else "-"
        print(f"| {name} | {a:,.3f} | {'-' if b is None else f'{b:,.3f}'} | {ratio} |")


if __name__ == "__main__":
    main()
