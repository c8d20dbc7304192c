"""Vectors read in place (``index.vector_view``) against reading them through Lance's ``take``
and against the float16 copy the index used to keep.

One compacted float16 table of ``--n`` x 1536 windows (as ``chorus embed`` leaves it). Figures,
medians of ``--repeats`` rounds, the ways alternating within a round:

* ``snapshot_ms`` / ``open_ms``: a fresh process's snapshot of the table and its view (file
  metadata plus the sampled-row check); from the second round on, both come from the snapshot
  cache file the first round wrote (``index.snapshot_cache``);
* ``score_<m>_{view,take}_ms``: exact scores of an ANN shortlist of m scattered rows;
* ``exact_{view,faiss,copy}_ms``: exact top-10 of one query: SimSIMD over the mapped pages (the
  default), FAISS over a copy of each mapped page (where SimSIMD is missing), FAISS over an
  in-RAM ``SQfp16`` copy of every vector (the old exact kernel);
* ``read_all_{view,arrow}_s``: streaming every vector (index builds, scoring, clustering).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/vector_view_bench.py --n 100000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_bench import clustered  # noqa: E402
from search_bench import MODEL  # noqa: E402
from store_read_bench import build  # noqa: E402

import index  # noqa: E402
from index import vector_view  # noqa: E402


def _ms(fn, reps: int = 20) -> float:
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e3)


def _without_view(snap, fn):
    view, snap._view = snap._view, None
    try:
        return fn()
    finally:
        snap._view = view


def one_round(path: Path, q: np.ndarray, copy: faiss.Index, rng) -> dict:
    db = index.connect(path, create=False)
    t0 = time.perf_counter()
    snap = db.snapshot(MODEL)
    t1 = time.perf_counter()
    view = snap.vector_view()
    out = {"snapshot_ms": (t1 - t0) * 1e3, "open_ms": (time.perf_counter() - t1) * 1e3}
    assert view is not None, "the table's layout gave no view"
    for m in (160, 1280):
        offs = [rng.choice(len(snap), m, replace=False) for _ in range(20)]
        it = iter(offs)
        out[f"score_{m}_view_ms"] = _ms(lambda it=it: snap.scores_at(next(it), q))
        it = iter(offs)
        out[f"score_{m}_take_ms"] = _without_view(
            snap, lambda it=it: _ms(lambda: snap.scores_at(next(it), q))
        )
    view.exact_top(q[None], 10)  # untimed: maps the pages the view keeps
    view.exact_top(q[None], 10)
    out["exact_view_ms"] = _ms(lambda: view.exact_top(q[None], 10), reps=7)
    simd, vector_view.simsimd = vector_view.simsimd, None
    try:
        out["exact_faiss_ms"] = _ms(lambda: view.exact_top(q[None], 10), reps=7)
    finally:
        vector_view.simsimd = simd
    copy.search(q[None], 10)
    out["exact_copy_ms"] = _ms(lambda: copy.search(q[None], 10), reps=7)

    def read_all() -> float:
        t0 = time.perf_counter()
        for _ids, vec in snap.iter_vectors():  # (b,), (b, dim) float32
            vec.sum()
        return time.perf_counter() - t0

    out["read_all_view_s"] = read_all()
    out["read_all_arrow_s"] = _without_view(snap, read_all)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        vec = clustered(args.n, 1536, 2000, seed=3)
        path = build(Path(tmp), vec, "float16")
        copy = faiss.index_factory(1536, "SQfp16", faiss.METRIC_INNER_PRODUCT)
        copy.add(vec)
        q = vec[7]
        del vec
        rounds = [one_round(path, q, copy, rng) for _ in range(args.repeats)]
    med = {k: round(float(np.median([r[k] for r in rounds])), 3) for k in rounds[0]}
    print(json.dumps({"n": args.n, **med}))


if __name__ == "__main__":
    main()
