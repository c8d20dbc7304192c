"""The FAISS tier that ``factory="auto"`` picks at 1 M windows, measured on its own (no LanceDB).

At 1 M x 1536 the full benchmark (``index_bench.py``, which also fills LanceDB) needs ~12 GB and
most of an hour on 2 cores; the search-side questions — recall@10 against exact search and
single-query latency of the chosen index — only need the index. Same data generator, same factory,
training-sample rule and search parameters as ``index.faiss_index``.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/index_1m_faiss.py --n 1000000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import faiss
import numpy as np

from index import faiss_index as fi

sys.path.insert(0, str(Path(__file__).parent))
from index_bench import clustered  # noqa: E402

K = 10


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=1536)
    ap.add_argument("--clusters", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument(
        "--grid",
        nargs="*",
        default=["16,16", "64,32", "32,64", "32,128", "32,256", "64,256"],
        help="extra NPROBE,K_FACTOR pairs to measure besides the defaults",
    )
    args = ap.parse_args()
    t0 = time.perf_counter()
    x = clustered(args.n, args.dim, args.clusters, seed=2)  # (n, dim) unit vectors
    q = clustered(args.queries, args.dim, args.clusters, seed=3)
    print(f"data {x.shape} in {time.perf_counter() - t0:.0f} s", flush=True)

    t0 = time.perf_counter()
    truth = np.empty((len(q), K), np.int64)
    for i in range(0, len(q), 50):  # exact inner product, blocked to bound memory
        s = x @ q[i : i + 50].T  # (n, 50)
        truth[i : i + 50] = np.argsort(-s, axis=0)[:K].T
    print(f"exact ground truth in {time.perf_counter() - t0:.0f} s", flush=True)

    factory, params = fi.choose_factory(args.n, args.dim)
    index = faiss.index_factory(args.dim, factory, faiss.METRIC_INNER_PRODUCT)
    ivf = faiss.extract_index_ivf(index)
    ivf.cp.niter = fi.IVF_KMEANS_ITERS
    t0 = time.perf_counter()
    size = int(min(args.n, max(fi.TRAIN_POINTS_PER_CELL * ivf.nlist, 10_000), fi.TRAIN_SAMPLE_MAX))
    sample = np.sort(np.random.default_rng(0).choice(args.n, size, replace=False))
    index.train(x[sample])
    t_train = time.perf_counter() - t0
    index.add(x)
    t_build = time.perf_counter() - t0
    print(f"{factory}: trained on {size} in {t_train:.0f} s, built in {t_build:.0f} s", flush=True)
    del x  # the index holds its own copy (RFlat); 6 GB less for the rest of the run
    with tempfile.TemporaryDirectory() as tmp:  # written to disk: serialising in memory doubles it
        faiss.write_index(index, f"{tmp}/ix")
        nbytes = Path(f"{tmp}/ix").stat().st_size

    rows = []
    grid = [(params["nprobe"], params["k_factor"])] + [
        tuple(int(v) for v in p.split(",")) for p in args.grid
    ]
    for nprobe, k_factor in grid:
        ivf.nprobe = nprobe
        faiss.downcast_index(index).k_factor = k_factor
        _, found = index.search(q, K)
        recall = np.mean([len(set(a) & set(b)) / K for a, b in zip(found, truth, strict=True)])
        lat = []
        for v in q:
            t = time.perf_counter()
            index.search(v[None], K)
            lat.append((time.perf_counter() - t) * 1e3)
        rows.append((nprobe, k_factor, recall, np.percentile(lat, 50), np.percentile(lat, 99)))
    print("\n| index | params | recall@10 | p50 ms | p99 ms | build s | bytes/vector |")
    print("|---|---|---|---|---|---|---|")
    for nprobe, k_factor, recall, p50, p99 in rows:
        print(f"| {factory} | nprobe={nprobe}, k_factor={k_factor} | {recall:.3f} | {p50:.2f} | "
              f"{p99:.2f} | {t_build:.0f} | {nbytes / args.n:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
