"""Per-stage costs of ``chorus embed --ray`` per shard, and windows/s for 1-3 local nodes.

Makes a synthetic archive (WAV files of noise and tones at 32 kHz), embeds it with the
``spectral`` model once on one machine (the reference) and then on Ray: a local cluster of
1, 2 and 3 nodes (``ray.cluster_utils.Cluster``, ``--cpus`` logical CPUs each) on this machine.
Prints one JSON document: per-stage seconds per shard (plan, decode, model, fragment write,
commit) and windows/s of each run. The nodes share this machine's cores, so more nodes here
measure overhead, not scaling: RESULTS.md turns the per-stage costs into a model for N GPU nodes.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/distributed_bench.py --files 24 --seconds 60
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf


def make_archive(root: Path, files: int, seconds: float, sr: int = 32000) -> Path:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * sr)) / sr
    for i in range(files):
        x = 0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * (300 + 97 * i) * t)
        sf.write(root / f"S{i % 4}_{20240601 + i}_050000.wav", x.astype(np.float32), sr)
    return root


def per_shard(stages) -> dict:
    n = max(1, stages.shards)
    return {
        "shards": stages.shards,
        "commits": stages.commits,
        "windows_per_shard": float(np.mean([s["n_windows"] for s in stages.per_shard])),
        "plan_s": stages.plan / n,
        "decode_s": stages.decode / n,
        "model_s": stages.model / n,
        "write_s": stages.write / n,
        "commit_s_per_shard": stages.commit / n,
        "commit_s_per_commit": stages.commit / max(1, stages.commits),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--shard-windows", type=int, default=48)
    ap.add_argument("--commit-shards", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=2, help="logical CPUs per node")
    ap.add_argument("--nodes", default="1,2,3")
    args = ap.parse_args()

    import ray
    from ray.cluster_utils import Cluster

    from explorer.ingest import embed_archive

    out: dict = {"files": args.files, "seconds_each": args.seconds}
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "archive").mkdir()
        root = make_archive(Path(tmp) / "archive", args.files, args.seconds)
        t0 = time.perf_counter()
        s = embed_archive(root, Path(tmp) / "single.chorus", progress=False)
        out["single_machine"] = {"windows": s.n_windows, "seconds": time.perf_counter() - t0}
        out["single_machine"]["windows_per_s"] = s.n_windows / out["single_machine"]["seconds"]
        for n_nodes in [int(n) for n in args.nodes.split(",")]:
            cluster = Cluster(
                initialize_head=True,
                head_node_args={"num_cpus": args.cpus, "include_dashboard": False},
            )
            for _ in range(n_nodes - 1):
                cluster.add_node(num_cpus=args.cpus)
            ray.init(address=cluster.address, logging_level="WARNING", log_to_driver=False)
            try:
                opts = {"shard_windows": args.shard_windows, "commit_shards": args.commit_shards}
                t0 = time.perf_counter()
                s = embed_archive(
                    root,
                    Path(tmp) / f"ray{n_nodes}.chorus",
                    progress=False,
                    ray_address=cluster.address,
                    ray_options=opts,
                )
                wall = time.perf_counter() - t0
                out[f"ray_{n_nodes}_nodes"] = {
                    "windows": s.n_windows,
                    "seconds": wall,
                    "windows_per_s": s.n_windows / wall,
                    "per_shard": per_shard(s.stages),
                }
            finally:
                ray.shutdown()
                cluster.shutdown()
            print(json.dumps(out[f"ray_{n_nodes}_nodes"]), flush=True)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
