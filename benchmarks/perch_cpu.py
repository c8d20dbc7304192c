"""Perch CPU throughput: PyTorch fp32 / bf16 variants vs onnxruntime on the same exported network.

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/perch_cpu.py [--threads 2] [--batch 8] [--repeats 7]``
Prints one table row per variant: median windows/s over the repeats, after warm-up passes.
Every variant (onnxruntime included) lives in its own process, as a user's model would: several
models in one process share the allocator's state, which hides the page-fault cost of large
activations (measured: it flattered the old eager path by ~30 %). The processes are built first
and then timed in interleaved rounds, one at a time in a shuffled order each round, so that
background load on a shared machine hits all rows alike.
The network is the random-init Perch model (speed does not depend on the weight values).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing as mp
import os
import platform
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from multiprocessing.connection import Connection
from pathlib import Path

import numpy as np
import torch

from embedder.perch import load

SAMPLES = 160_000  # 5 s at 32 kHz
WARMUP = 2  # untimed passes per variant (oneDNN primitive caches, allocator)
SETTLE_S = 0.05  # untimed pause after each call: onnxruntime's spinning threads wind down
# eager PyTorch as before the CPU fast path (fused BN, channels_last, intra-op threads)
PLAIN = {"onednn": False, "micro_batch": 0, "cpu_workers": 1}
ONE_TEAM = {"cpu_workers": 1, "cpu_kernels": False}  # oneDNN fused ops, micro-batches, one team

VARIANTS = {
    "torch fp32 plain eager (before)": PLAIN,
    "torch fp32 oneDNN fused + micro-batch, 1 team": ONE_TEAM,
    "torch fp32 oneDNN fused, batch split on threads, no compiled kernel": {"cpu_kernels": False},
    "torch fp32 default: the above + fused depthwise kernel": {},
    "torch fp32 plain + micro-batch + torch.compile (freezing)": {"compile": True},
    "torch bf16 plain autocast (before)": {**PLAIN, "precision": "bf16"},
    "torch bf16 oneDNN fused + micro-batch, 1 team": {**ONE_TEAM, "precision": "bf16"},
    "torch bf16 oneDNN fused, batch split on threads — default": {"precision": "bf16"},
    "torch bf16 plain + micro-batch + torch.compile (freezing)": {
        "precision": "bf16",
        "compile": True,
    },
}


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


def make_ort(batch: np.ndarray, threads: int) -> Callable[[np.ndarray], np.ndarray]:
    """onnxruntime on the plain network's exported backbone (log-mel from the torch frontend)."""
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "perch.onnx"
        net = export_backbone_onnx(onnx_path, batch)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])

    def run_ort(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():  # the frontend runs in torch, as it would in production
            logmel = net.frontend(torch.from_numpy(x)).numpy()
        return sess.run(None, {"logmel": logmel})[0]

    return run_ort


def variant_process(
    conn: Connection, opts: dict | None, threads: int, batch_size: int, burst: int
) -> None:
    """Child: build one variant (``None`` = onnxruntime), report its first call, then time
    ``burst`` back-to-back calls per request (after one untimed call when ``burst`` > 1) until
    told to stop."""
    torch.set_num_threads(threads)
    batch = make_batch(batch_size)
    t0 = time.perf_counter()
    if opts is None:
        fn = make_ort(batch, threads)
    else:
        fn = load(None, device="cpu", batch_size=batch_size, **opts).embed
    first = fn(batch)  # includes torch.compile's compilation
    conn.send((time.perf_counter() - t0, first))
    for _ in range(WARMUP):
        fn(batch)
    while conn.recv():
        if burst > 1:  # the untimed call brings clocks and caches back from the idle wait
            fn(batch)
        t0 = time.perf_counter()
        for _ in range(burst):
            fn(batch)
        conn.send(burst * batch_size / (time.perf_counter() - t0))


def export_backbone_onnx(path: Path, batch: np.ndarray) -> torch.nn.Module:
    """Export the plain network's backbone (log-mel -> embedding) and return the network.

    The legacy exporter cannot export ``torch.fft.rfft`` (and the dynamo exporter needs
    ``onnxscript``), so onnxruntime gets the log-mel from the same torch frontend.
    """
    net = load(None, device="cpu", channels_last=False, **PLAIN).model.eval()

    class Backbone(torch.nn.Module):
        def __init__(self, net: torch.nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, logmel: torch.Tensor) -> torch.Tensor:
            return self.net.spatial_from_logmel(logmel).mean(dim=(1, 2))

    with torch.no_grad():
        logmel = net.frontend(torch.from_numpy(batch))
    # the TorchScript exporter prints tracer noise on stdout
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Backbone(net),
            (logmel,),
            str(path),
            input_names=["logmel"],
            dynamo=False,
            opset_version=17,
        )
    return net


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
    ap.add_argument(
        "--only", default="", help="keep only the torch rows whose label contains this text"
    )
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    import onnxruntime as ort

    ort_label = "onnxruntime fp32 (backbone; torch log-mel)"
    variants: dict[str, dict | None] = {
        k: v
        for k, v in VARIANTS.items()
        if not (args.no_compile and v.get("compile")) and args.only in k
    }
    variants[ort_label] = None
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
        setup_s, got = parent.recv()
        cos = np.min(
            (reference * got).sum(1)
            / np.linalg.norm(reference, axis=1)
            / np.linalg.norm(got, axis=1)
        )
        print(
            f"# {label}: load + first call {setup_s:.1f} s; min cosine vs plain fp32 {cos:.6f}",
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

    ort_rate = statistics.median(rates[ort_label])
    print(
        f"# CPU: {cpu_model()}; {args.threads} threads; batch {args.batch}; burst {args.burst}; "
        f"median of {args.repeats} interleaved rounds; one process per variant; "
        f"torch {torch.__version__}, onnxruntime {ort.__version__}; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
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
        paired = statistics.median([a / b for a, b in zip(r, rates[ort_label], strict=True)])
        print(
            f"| {label:<{width}} | {med:9.1f} | {med / ort_rate:13.2f}x | {paired:5.2f}x | "
            f"{min(r):4.1f}-{max(r):4.1f} |"
        )


if __name__ == "__main__":
    main()
