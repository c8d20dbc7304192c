"""Perch CPU throughput per backend and precision, side by side: torch eager / compiled, fp32 / bf16,
and onnxruntime (``backend="onnxruntime"``: the backbone exported with ``torch.onnx``, the log-mel
from the torch frontend).

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/perch_cpu.py [--threads 2] [--batch 8] [--repeats 7]``
Prints the CPU's model and relevant flags, then one table row per variant: median windows/s over
the repeats, after warm-up passes. bf16 rows run only where ``embedder.runtime.cpu_bf16_problem()``
allows bf16.
Every variant (onnxruntime included) lives in its own process, as a user's model would: several
models in one process share the allocator's state, which hides the page-fault cost of large
activations (measured: it flattered the old eager path by ~30 %). The processes are built first
and then timed in interleaved rounds, one at a time in a shuffled order each round, so that
background load on a shared machine hits all rows alike.
The network is the random-init Perch model (speed does not depend on the weight values).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import random
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import torch

from embedder.models.perch import load
from embedder.native import cpu_flags
from embedder.runtime import cpu_bf16_problem

SAMPLES = 160_000  # 5 s at 32 kHz
WARMUP = 2  # untimed passes per variant (oneDNN primitive caches, allocator)
SETTLE_S = 0.05  # untimed pause after each call: onnxruntime's spinning threads wind down
PLAIN = {"backend": "torch", "micro_batch": 0, "cpu_workers": 1}  # eager, one thread team
ORT_LABEL = "onnxruntime fp32 (backend=onnxruntime)"
VARIANTS = {
    "torch fp32 plain eager, one thread team": PLAIN,
    "torch fp32 eager: micro-batch, batch split on threads": {"backend": "torch"},
    "torch fp32 + torch.compile (freezing)": {"backend": "torch", "compile": True},
    "torch bf16 eager: bf16 weights, batch split on threads": {"precision": "bf16"},
    "torch bf16 + torch.compile (freezing)": {"precision": "bf16", "compile": True},
    ORT_LABEL: {"backend": "onnxruntime"},
    "default: load(device='cpu')": {},
}
# CPU features that decide which kernels torch, oneDNN and onnxruntime's MLAS can use
FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def make_batch(batch_size: int) -> np.ndarray:
    return (0.1 * np.random.default_rng(0).standard_normal((batch_size, SAMPLES))).astype(
        np.float32
    )


def variant_process(
    conn: Connection, opts: dict, threads: int, batch_size: int, burst: int
) -> None:
    """Child: build one variant, report its first call and backend, then time
    ``burst`` back-to-back calls per request (after one untimed call when ``burst`` > 1) until
    told to stop."""
    torch.set_num_threads(threads)
    batch = make_batch(batch_size)
    t0 = time.perf_counter()
    model = load(None, device="cpu", batch_size=batch_size, **opts)
    fn = model.embed
    first = fn(batch)  # includes torch.compile's compilation (and the ONNX export, if not cached)
    conn.send((time.perf_counter() - t0, first, model.backend))
    for _ in range(WARMUP):
        fn(batch)
    while conn.recv():
        if burst > 1:  # the untimed call brings clocks and caches back from the idle wait
            fn(batch)
        t0 = time.perf_counter()
        for _ in range(burst):
            fn(batch)
        conn.send(burst * batch_size / (time.perf_counter() - t0))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument(
        "--burst",
        type=int,
        default=1,
        help="calls timed back to back per round (sustained rate; 1 = one call after an idle wait)",
    )
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile rows")
    ap.add_argument("--no-bf16", action="store_true", help="skip the bf16 rows")
    ap.add_argument(
        "--only", default="", help="keep only the torch rows whose label contains this text"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    bf16_problem = cpu_bf16_problem()
    if bf16_problem:
        print(f"# bf16 rows skipped: {bf16_problem}")
    variants = {
        k: v
        for k, v in VARIANTS.items()
        if not (args.no_compile and v.get("compile"))
        and not ((args.no_bf16 or bf16_problem) and v.get("precision") == "bf16")
        and (args.only in k or k == ORT_LABEL)
    }
    reference = load(None, device="cpu", batch_size=args.batch, **PLAIN).embed(
        make_batch(args.batch)
    )
    ctx = mp.get_context("spawn")
    conns: dict[str, Connection] = {}
    procs = []
    for label, opts in variants.items():  # built one at a time: compile times stay honest
        parent, child = ctx.Pipe()
        proc = ctx.Process(
            target=variant_process,
            args=(child, opts, args.threads, args.batch, args.burst),
        )
        proc.start()
        setup_s, got, backend = parent.recv()
        cos = np.min(
            (reference * got).sum(1)
            / np.linalg.norm(reference, axis=1)
            / np.linalg.norm(got, axis=1)
        )
        print(
            f"# {label}: backend {backend}; load + first call {setup_s:.1f} s; "
            f"min cosine vs plain fp32 {cos:.6f}",
            flush=True,
        )
        conns[label] = parent
        procs.append(proc)

    load_before = os.getloadavg()
    rates: dict[str, list[float]] = {label: [] for label in variants}
    order = random.Random(0)
    for _ in range(args.repeats):
        labels = list(variants)
        order.shuffle(labels)
        for label in labels:
            time.sleep(SETTLE_S)
            conns[label].send(True)
            rates[label].append(conns[label].recv())
    load_after = os.getloadavg()
    for conn in conns.values():
        conn.send(False)
    for proc in procs:
        proc.join()

    ort_rate = statistics.median(rates[ORT_LABEL])
    print(
        f"# CPU: {cpu_model()}; {args.threads} threads; batch {args.batch}; burst {args.burst}; "
        f"median of {args.repeats} interleaved rounds; one process per variant; "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    have = sorted(f for f in FLAGS if f in cpu_flags())
    print(
        f"# CPU flags: {' '.join(have) or 'unknown'}; torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}"
    )
    print(
        f"# load average (1/5/15 min) before {load_before[0]:.2f}/{load_before[1]:.2f}/"
        f"{load_before[2]:.2f}, after {load_after[0]:.2f}/{load_after[1]:.2f}/{load_after[2]:.2f}"
    )
    width = max(len(label) for label in variants)
    print(f"| {'variant':<{width}} | windows/s | vs onnxruntime | paired | min-max   |")
    print(f"|{'-' * (width + 2)}|----------:|---------------:|-------:|-----------|")
    for label, r in rates.items():
        med = statistics.median(r)
        # each round's rate over onnxruntime's in the same round: drift between rounds cancels
        paired = statistics.median([a / b for a, b in zip(r, rates[ORT_LABEL], strict=True)])
        print(
            f"| {label:<{width}} | {med:9.1f} | {med / ort_rate:13.2f}x | {paired:5.2f}x | "
            f"{min(r):4.1f}-{max(r):4.1f} |"
        )


if __name__ == "__main__":
    main()
