"""Chorus next to perch-hoplite (SQLite + USearch, float16) on the same synthetic windows.

Installs nothing itself. perch-hoplite lives in its own virtual environment, never in Chorus's:

    python3 -m venv /tmp/hopenv
    /tmp/hopenv/bin/pip install perch-hoplite==1.0.2
    OMP_WAIT_POLICY=PASSIVE python benchmarks/peer_hoplite.py --n 100000 \\
        --hoplite-python /tmp/hopenv/bin/python --work /tmp/peer

The vectors (``index_bench.clustered``: 1536-d, ``--clusters`` clusters, 720 windows per recording,
recordings over ``--sites`` sites) are written once to ``--work``; each side ingests them once and
builds its index in a fresh interpreter (the ingest figure and that process's peak resident memory,
the vectors read from the same ``.npy``), then answers the same fresh queries ``--repeats`` times, the
sides alternating (Chorus, hoplite, Chorus, ...); the table shows the medians of those runs. The
hoplite side runs in the other interpreter (``_HOPLITE_*`` below) and reports JSON.

Figures: recall@10 against exact float32 search; latencies are medians over the queries of one
search call, after ``WARM`` untimed queries of the same form on each side (Chorus:
``db.search(...).limit(10)`` then ``to_arrow()``, the cheapest result form, and
``to_pandas()``; hoplite: ``db.search(q, 10)``, which returns ids and scores only); filtered exact
search keeps one site of 20 (Chorus: ``.where("site = 'S03'").exact()``; hoplite:
``match_window_ids`` on the deployment, then its embeddings scored with NumPy); cold start is a fresh
interpreter's time from its first import to its first answer (interpreter start-up excluded) and
its peak resident memory then, for both Chorus result forms; it opens the snapshot and the
recording columns from the cache folder the warm runs wrote (:mod:`index.snapshot_cache`), as
any search after the first one on a table that has not changed for a few seconds does.
Prints a Markdown table.
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
from search_bench import MODEL, WINDOWS_PER_RECORDING, truth  # noqa: E402

K = 10
SITE = 3  # the filtered searches keep site S03
WARM = 5  # untimed queries before each timed form, on both sides

_HOPLITE_BUILD = r"""
import json, shutil, sys, time
import numpy as np
from perch_hoplite.db import db_loader
work, n_sites, per_rec = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
vec = np.load(f"{work}/vectors.npy", mmap_mode="r")
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
import os
disk = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(path) for f in fs)
hwm = [ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmHWM")]
print(json.dumps({"ingest": n / (time.perf_counter() - t0), "disk": disk, "peak_mb": int(hwm[0]) / 1024}))
"""

_HOPLITE_SEARCH = r"""
import json, sys, time
import numpy as np
from ml_collections import config_dict
from perch_hoplite.db import sqlite_usearch_impl as s
work, k, site = sys.argv[1], int(sys.argv[2]), sys.argv[3]
WARM = int(sys.argv[4])
qs = np.load(f"{work}/queries.npy")
db = s.SQLiteUSearchDB.create(f"{work}/hoplite", readonly=True)
out = {}
for name, approx in (("ann", True), ("exact", False)):
    for q in qs[:WARM]:  # untimed: the first queries also fill the page cache
        db.search(q, k, approximate=approx)
    lat, hits = [], []
    for q in qs:
        t0 = time.perf_counter()
        res = db.search(q, k, approximate=approx)
        lat.append(time.perf_counter() - t0)
        hits.append([int(r.window_id) for r in res.search_results])
    out[name] = {"p50_ms": float(np.median(lat) * 1e3), "hits": hits}
def filtered(q):
    ids = np.asarray(db.match_window_ids(deployments_filter=config_dict.create(eq={"name": site})))
    scores = db.get_embeddings_batch(ids).astype(np.float32) @ q
    top = np.argpartition(-scores, k)[:k]
    return ids[top[np.argsort(-scores[top])]]
for q in qs[:WARM]:
    filtered(q)
lat, hits = [], []
for q in qs[:30]:
    t0 = time.perf_counter()
    got = filtered(q)
    lat.append(time.perf_counter() - t0)
    hits.append(got.tolist())
out["filtered_exact"] = {"p50_ms": float(np.median(lat) * 1e3), "hits": hits}
print(json.dumps(out))
"""

_HOPLITE_COLD = r"""
import sys, time
t = time.perf_counter()
import numpy as np
from perch_hoplite.db import sqlite_usearch_impl as s
db = s.SQLiteUSearchDB.create(sys.argv[1] + "/hoplite", readonly=True)
db.search(np.load(sys.argv[1] + "/queries.npy")[0], 10)
secs = time.perf_counter() - t
# VmHWM: this process's own peak (ru_maxrss would count the parent's pages it forked from)
hwm = [ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmHWM")]
print(secs, hwm[0])
"""

_CHORUS_COLD = r"""
import sys, time
t = time.perf_counter()
import numpy as np
import index
db = index.connect(sys.argv[1] + "/chorus.chorus", create=False)
found = db.search(sys.argv[2], np.load(sys.argv[1] + "/queries.npy")[0]).limit(10)
found.to_arrow() if sys.argv[3] == "arrow" else found.to_pandas()
secs = time.perf_counter() - t
# VmHWM: this process's own peak (ru_maxrss would count the parent's pages it forked from)
hwm = [ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmHWM")]
print(secs, hwm[0])
"""


def _json_run(args: list[str]) -> dict:
    got = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(got.stdout.strip().splitlines()[-1])


def cold(py: str, code: str, *args: str, runs: int = 3) -> tuple[float, float]:
    """Median (seconds to the first answer, peak resident MB) of ``runs`` fresh interpreters."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    out = []
    for _ in range(runs):
        got = subprocess.run([py, "-c", code, *args], capture_output=True, text=True, env=env)
        if got.returncode:
            raise RuntimeError(got.stderr.strip().splitlines()[-1])
        secs, kb = got.stdout.split()[-2:]
        out.append((float(secs), float(kb) / 1024))
    return float(np.median([s for s, _ in out])), float(np.median([m for _, m in out]))


_CHORUS_BUILD = r"""
import json, shutil, sys, time
import numpy as np
sys.path.insert(0, sys.argv[4])
from search_bench import MODEL, fill
from peer_hoplite import disk_bytes
import index
work, sites, store = sys.argv[1], int(sys.argv[2]), sys.argv[3]
vec = np.load(f"{work}/vectors.npy", mmap_mode="r")  # read as hoplite's build reads it
path = f"{work}/chorus.chorus"
shutil.rmtree(path, ignore_errors=True)
db = index.connect(path)
# the vector type `chorus embed` gives a new model (``--store``)
db.register_model(MODEL, {"name": MODEL, "dim": int(vec.shape[1])}, vector_dtype=store)
t0 = time.perf_counter()
fill(db, vec, sites)
db.build_index(MODEL)
ingest = len(vec) / (time.perf_counter() - t0)
hwm = [ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmHWM")]
print(json.dumps({"ingest": ingest, "disk": disk_bytes(__import__("pathlib").Path(path)),
                  "peak_mb": int(hwm[0]) / 1024}))
"""


def chorus_build(work: Path, sites: int, store: str = "float16") -> dict:
    """Ingest and index in a fresh interpreter (its own peak memory), as hoplite's build."""
    here = str(Path(__file__).resolve().parent)
    return _json_run([sys.executable, "-c", _CHORUS_BUILD, str(work), str(sites), store, here])


def disk_bytes(path: Path) -> int:
    """Bytes of the files under ``path``, each inode once (the index's generation files are hard
    links of its current name)."""
    files = (f.stat() for f in path.rglob("*") if f.is_file())
    sizes = {(st.st_dev, st.st_ino): st.st_size for st in files}
    return sum(sizes.values())


def chorus_search(work: Path, qs: np.ndarray, k_factor: float | None = None) -> dict:
    """The timed forms; ``k_factor``: also ``ann_kf``, ANN with that shortlist factor
    (``.index_params(k_factor=)``)."""
    import index

    db = index.connect(work / "chorus.chorus", create=False)
    out = {}
    forms = {
        "ann": lambda q: db.search(MODEL, q).limit(K).to_arrow(),
        "ann_pandas": lambda q: db.search(MODEL, q).limit(K).to_pandas(),
        "exact": lambda q: db.search(MODEL, q).exact().limit(K).to_arrow(),
        "filtered_exact": lambda q: (
            db.search(MODEL, q).where(f"site = 'S{SITE:02d}'").exact().limit(K).to_arrow()
        ),
    }
    if k_factor:

        def ann_kf(q):
            return db.search(MODEL, q).index_params(k_factor=k_factor).limit(K).to_arrow()

        forms = {"ann": forms.pop("ann"), "ann_kf": ann_kf, **forms}
    for name, run in forms.items():
        for q in qs[:WARM]:  # untimed, as on hoplite's side
            run(q)
        lat, hits = [], []
        for q in qs[:30] if name == "filtered_exact" else qs:
            t0 = time.perf_counter()
            res = run(q)
            lat.append(time.perf_counter() - t0)
            hits.append(
                list(
                    res["window_id"].tolist()
                    if hasattr(res, "iloc")
                    else res["window_id"].to_pylist()
                )
            )
        out[name] = {"p50_ms": float(np.median(lat) * 1e3), "hits": hits}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--clusters", type=int, default=2000)
    ap.add_argument("--sites", type=int, default=20)
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hoplite-python", required=True, help="python of the perch-hoplite venv")
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--reuse", action="store_true", help="keep both databases of a previous run")
    ap.add_argument(
        "--reuse-hoplite", action="store_true", help="build Chorus again, keep hoplite's database"
    )
    ap.add_argument("--store", choices=["float16", "float32"], default="float16")
    ap.add_argument(
        "--k-factor", type=float, help="also time Chorus's ANN at this shortlist factor"
    )
    args = ap.parse_args()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args.work.mkdir(parents=True, exist_ok=True)
    vec = clustered(args.n, 1536, args.clusters, seed=3)
    qs = clustered(args.queries, 1536, args.clusters, seed=11)
    reusing = (args.reuse or args.reuse_hoplite) and (args.work / "vectors.npy").exists()
    if not reusing:  # the same seeds give the same vectors: a rerun keeps the file
        np.save(args.work / "vectors.npy", vec)
    np.save(args.work / "queries.npy", qs)
    ids = np.arange(args.n)  # window ids: 0.. in fill order (hoplite's start at 1, see below)
    gt = truth(vec, ids, qs)
    site_ok = (ids // WINDOWS_PER_RECORDING) % args.sites == SITE
    gt_site = truth(vec, ids, qs[:30], site_ok)
    del vec  # 6 GB at 1 M: kept, it pushed both databases out of the page cache

    built_path = args.work / "built.json"
    if (args.reuse or args.reuse_hoplite) and built_path.exists():
        built = json.loads(built_path.read_text())
        if args.reuse_hoplite:
            built["chorus"] = chorus_build(args.work, args.sites, args.store)
            built_path.write_text(json.dumps(built))
    else:
        built = {
            "chorus": chorus_build(args.work, args.sites, args.store),
            "hoplite": _json_run(
                [
                    args.hoplite_python,
                    "-c",
                    _HOPLITE_BUILD,
                    str(args.work),
                    str(args.sites),
                    str(WINDOWS_PER_RECORDING),
                ]
            ),  # fmt: skip
        }
        built_path.write_text(json.dumps(built))
    runs: dict[str, list[dict]] = {"chorus": [], "hoplite": []}
    hop = [args.hoplite_python, "-c", _HOPLITE_SEARCH, str(args.work), str(K), f"S{SITE:02d}",
           str(WARM)]  # fmt: skip
    for _ in range(args.repeats):
        runs["chorus"].append(chorus_search(args.work, qs, args.k_factor))
        runs["hoplite"].append(_json_run(hop))
    cold_runs = {"chorus": [], "chorus_pandas": [], "hoplite": []}
    for _ in range(3):  # interleaved too
        for side, form in (("chorus", "arrow"), ("chorus_pandas", "pandas")):
            cold_runs[side].append(
                cold(sys.executable, _CHORUS_COLD, str(args.work), MODEL, form, runs=1)
            )
        cold_runs["hoplite"].append(
            cold(args.hoplite_python, _HOPLITE_COLD, str(args.work), runs=1)
        )
    coldm = {s: np.median(np.asarray(v), axis=0) for s, v in cold_runs.items()}
    off = {"chorus": 0, "hoplite": 1}  # hoplite window ids are SQLite rowids, from 1

    def recall(side: str, key: str, truth_sets) -> float:
        hits = runs[side][-1][key]["hits"]
        return float(
            np.mean(
                [
                    len(set(np.asarray(h) - off[side]) & g) / K
                    for h, g in zip(hits, truth_sets, strict=True)
                ]
            )
        )

    def p50(side: str, key: str) -> float:
        return float(np.median([r[key]["p50_ms"] for r in runs[side]]))

    rows = [
        ("ingest + index, windows/s", built["chorus"]["ingest"], built["hoplite"]["ingest"]),
        ("ANN search p50 ms (Chorus: to_arrow)", p50("chorus", "ann"), p50("hoplite", "ann")),
        ("ANN search p50 ms (Chorus: to_pandas)", p50("chorus", "ann_pandas"), p50("hoplite", "ann")),
        ("ANN recall@10", recall("chorus", "ann", gt), recall("hoplite", "ann", gt)),
        *([(f"ANN p50 ms at k_factor {args.k_factor:g} (to_arrow)", p50("chorus", "ann_kf"),
            p50("hoplite", "ann")),
           (f"ANN recall@10 at k_factor {args.k_factor:g}", recall("chorus", "ann_kf", gt),
            recall("hoplite", "ann", gt))] if args.k_factor else []),
        ("exact search p50 ms", p50("chorus", "exact"), p50("hoplite", "exact")),
        ("exact recall@10", recall("chorus", "exact", gt), recall("hoplite", "exact", gt)),
        ("filtered exact p50 ms (1 site of 20)", p50("chorus", "filtered_exact"),
         p50("hoplite", "filtered_exact")),
        ("filtered exact recall@10", recall("chorus", "filtered_exact", gt_site),
         recall("hoplite", "filtered_exact", gt_site)),
        ("peak resident MB, ingest + index", built["chorus"].get("peak_mb", 0),
         built["hoplite"].get("peak_mb", 0)),
        ("disk GB", built["chorus"]["disk"] / 1e9, built["hoplite"]["disk"] / 1e9),
        ("cold process -> first answer s (Chorus: to_arrow)", coldm["chorus"][0],
         coldm["hoplite"][0]),
        ("peak resident MB after the first search (cold, to_arrow)", coldm["chorus"][1],
         coldm["hoplite"][1]),
        ("cold process -> first answer s (Chorus: to_pandas)", coldm["chorus_pandas"][0],
         coldm["hoplite"][0]),
        ("peak resident MB after the first search (cold, to_pandas)", coldm["chorus_pandas"][1],
         coldm["hoplite"][1]),
    ]  # fmt: skip
    print(f"\n| figure ({args.n:,} windows) | Chorus | hoplite | Chorus / hoplite |")
    print("|---|---|---|---|")
    for name, a, b in rows:
        ratio = f"{a / b:.2f}" if b else "-"
        print(f"| {name} | {a:,.3f} | {b:,.3f} | {ratio} |")


if __name__ == "__main__":
    main()
