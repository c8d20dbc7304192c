"""Reading every vector of a model from a float16 and a float32 table (what scoring, clustering and
index builds pay): ``snapshot.iter_vectors`` over ``--n`` x 1536 compacted windows, the two tables
read alternately, medians of ``--repeats``. Prints one JSON line (seconds per full read).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/store_read_bench.py --n 200000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from index_bench import clustered  # noqa: E402
from search_bench import MODEL, fill  # noqa: E402

import index  # noqa: E402


def build(folder: Path, vec: np.ndarray, dtype: str) -> Path:
    path = folder / f"{dtype}.chorus"
    db = index.connect(path)
    db.register_model(MODEL, {"name": MODEL, "dim": int(vec.shape[1])}, vector_dtype=dtype)
    fill(db, vec, 20)
    db.windows(MODEL).optimize()  # as `chorus embed` leaves a table: compacted
    return path


def read_all(path: Path) -> float:
    db = index.connect(path, create=False)
    t0 = time.perf_counter()
    for _ids, vec in db.snapshot(MODEL).iter_vectors():  # (b,), (b, dim) float32
        vec.sum()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        vec = clustered(args.n, 1536, 2000, seed=3)
        paths = {d: build(Path(tmp), vec, d) for d in ("float32", "float16")}
        del vec
        times: dict[str, list[float]] = {d: [] for d in paths}
        for _ in range(args.repeats):
            for dtype, path in paths.items():
                times[dtype].append(read_all(path))
    print(json.dumps({"n": args.n, **{d: float(np.median(t)) for d, t in times.items()}}))


if __name__ == "__main__":
    main()
