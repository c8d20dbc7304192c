"""Perch CPU throughput: PyTorch fp32 / bf16 variants vs onnxruntime on the same exported network.

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/perch_cpu.py [--threads 2] [--batch 8] [--repeats 7]``
Prints one table row per variant: median windows/s over the repeats (after a warm-up pass).
The network is the random-init Perch model (speed does not depend on the weight values).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from embedder.perch import load

SAMPLES = 160_000  # 5 s at 32 kHz
WARMUP = 2  # untimed passes per variant (oneDNN primitive caches, allocator)


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def time_fn(fn, batch: np.ndarray, repeats: int) -> float:
    """Median windows/s of ``fn(batch)``."""
    for _ in range(WARMUP):
        fn(batch)
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn(batch)
        rates.append(len(batch) / (time.perf_counter() - t0))
    return statistics.median(rates)


def torch_variant(batch_size: int, **options):
    m = load(None, device="cpu", batch_size=batch_size, **options)
    return m.embed


def export_onnx(path: Path, batch_size: int) -> tuple[str, object]:
    """Export raw audio -> embedding; if the FFT frontend does not export, the backbone only."""
    m = load(None, device="cpu", channels_last=False)
    net = m.model.eval()
    audio = torch.zeros(batch_size, SAMPLES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(
                net, (audio,), str(path), input_names=["audio"], dynamo=False, opset_version=17
            )
            return "audio", net
        except Exception as exc:  # noqa: BLE001 - report and fall back
            print(f"# full-model export failed ({type(exc).__name__}); exporting the backbone")

        class Backbone(torch.nn.Module):
            def __init__(self, net):
                super().__init__()
                self.net = net

            def forward(self, logmel):
                return self.net.spatial_from_logmel(logmel).mean(dim=(1, 2))

        logmel = net.frontend(audio)
        torch.onnx.export(
            Backbone(net),
            (logmel,),
            str(path),
            input_names=["logmel"],
            dynamo=False,
            opset_version=17,
        )
        return "logmel", net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    batch = (0.1 * rng.standard_normal((args.batch, SAMPLES))).astype(np.float32)

    rows = []
    variants = {
        "torch fp32 (fused BN, channels_last)": {},
        "torch fp32 (fused BN, NCHW)": {"channels_last": False},
        "torch fp32 (unfused BN, NCHW)": {"channels_last": False, "fuse_bn": False},
        "torch bf16 autocast (channels_last)": {"precision": "bf16"},
        "torch bf16 autocast (NCHW)": {"precision": "bf16", "channels_last": False},
        "torch bf16 autocast + torch.compile (freezing)": {"precision": "bf16", "compile": True},
        "torch fp32 + torch.compile (freezing)": {"compile": True},
    }
    for label, opts in variants.items():
        t0 = time.perf_counter()
        fn = torch_variant(args.batch, **opts)
        rate = time_fn(fn, batch, args.repeats)
        print(
            f"# {label}: {rate:.1f} windows/s (setup+run {time.perf_counter() - t0:.0f} s)",
            flush=True,
        )
        rows.append((label, rate))

    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as tmp:
        onnx_path = Path(tmp) / "perch.onnx"
        kind, net = export_onnx(onnx_path, args.batch)
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(str(onnx_path), so, providers=["CPUExecutionProvider"])

        def run_ort(x: np.ndarray) -> np.ndarray:
            if kind == "logmel":  # the frontend runs in torch, as it would in production
                with torch.inference_mode():
                    x = net.frontend(torch.from_numpy(x)).numpy()
            return sess.run(None, {kind: x})[0]

        rows.append((f"onnxruntime fp32 (input: {kind})", time_fn(run_ort, batch, args.repeats)))
        ref = torch_variant(args.batch)(batch)
        got = run_ort(batch)
        cos = float(
            np.min((ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1))
        )

    ort_rate = rows[-1][1]
    print(
        f"# CPU: {cpu_model()}; {args.threads} threads; batch {args.batch}; "
        f"median of {args.repeats}; torch {torch.__version__}, onnxruntime {ort.__version__}; "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}"
    )
    print(f"# onnxruntime vs torch fp32 embedding: min cosine {cos:.6f}")
    print(f"| {'variant':<44} | windows/s | vs onnxruntime |")
    print(f"|{'-' * 46}|----------:|---------------:|")
    for label, rate in rows:
        print(f"| {label:<44} | {rate:9.1f} | {rate / ort_rate:13.2f}x |")


if __name__ == "__main__":
    main()
