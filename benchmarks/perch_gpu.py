"""Perch on a GPU: model-only throughput, end-to-end from FLAC files, and where the time goes.

Run (on a CUDA machine): ``OMP_WAIT_POLICY=PASSIVE python benchmarks/perch_gpu.py --out results.json``

1. Model only: random-init Perch (speed does not depend on the weight values) on windows already on
   the device, per precision and batch size; frontend and backbone timed apart with CUDA events.
2. Per-core decode costs: FLAC decode (libsndfile and the compiled decoder of ``embedder.flac``),
   soxr resampling and the whole per-file window iterator on one core, at 32 kHz (no resampling)
   and 48 kHz (resampled to 32 kHz); see ``decode_bench.py``.
3. End to end: the loop of ``chorus embed`` (``iter_batches`` with N decode workers ->
   ``PerchEmbedder.embed``) over synthetic FLAC archives, with the time the main
   process waits for decoded windows measured apart from the time in the model, for each of
   ``--variants``: a FLAC decoder, ``+ring`` for workers that pack into a fixed ring of shared
   memory page-locked in place (as ``chorus embed`` does) rather than a fresh block per batch that
   the main process copies into page-locked memory. The database write
   is not included (LanceDB is not installed on the GPU machine; its insert rate is in RESULTS.md).

Everything prints as it goes; the last lines are a summary table. ``--quick`` shrinks every size so the
script can be checked on a CPU.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from decode_bench import per_core, use_decoder  # benchmarks/ is this script's folder

from embedder.batching import FileTask, WindowSpec, iter_batches
from embedder.models.perch import load

SR = 32_000  # Hz, model rate
WINDOW = 160_000  # samples per 5 s window
RESULTS: dict = {}
OUT: list[Path] = []  # where save() writes the JSON, if anywhere


def log(msg: str) -> None:
    print(msg, flush=True)


def save() -> None:
    """Write what is measured so far: a run cut short by a time limit still leaves its numbers."""
    if OUT:
        OUT[0].write_text(json.dumps(RESULTS, indent=1))


def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def time_device(fn, x: torch.Tensor, dev: torch.device, repeats: int, warmup: int = 3) -> float:
    """Median seconds of ``fn(x)`` (CUDA events on GPU, wall clock on CPU)."""
    with torch.inference_mode():
        for _ in range(warmup):
            fn(x)
        sync(dev)
        times = []
        for _ in range(repeats):
            if dev.type == "cuda":
                a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                a.record()
                fn(x)
                b.record()
                b.synchronize()
                times.append(a.elapsed_time(b) / 1e3)
            else:
                t0 = time.perf_counter()
                fn(x)
                times.append(time.perf_counter() - t0)
    return statistics.median(times)


def model_only(dev: torch.device, batches: list[int], precisions: list[str], repeats: int) -> None:
    """Windows/s of frontend + backbone on device-resident windows (no host traffic)."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    for precision in precisions:
        m = load(None, device=str(dev), precision=precision, batch_size=max(batches))
        net = m.model
        for bs in batches:
            x = (0.1 * torch.randn(bs, WINDOW, generator=gen)).to(dev)  # (B, n) random, not zeros
            try:
                with torch.inference_mode(), m.autocast():
                    t_all = time_device(net, x, dev, repeats)
                    logmel = net.frontend(x)  # (B, 500, 128)
                    t_front = time_device(net.frontend, x, dev, repeats)
                    t_cnn = time_device(net.spatial_from_logmel, logmel, dev, repeats)
            except torch.OutOfMemoryError:
                log(f"model-only {precision} batch {bs}: out of memory")
                break
            row = {
                "precision": precision,
                "batch": bs,
                "windows_per_s": bs / t_all,
                "frontend_ms_per_1k": 1e6 * t_front / bs,
                "backbone_ms_per_1k": 1e6 * t_cnn / bs,
            }
            RESULTS.setdefault("model_only", []).append(row)
            log(
                f"model-only {precision} batch {bs}: {row['windows_per_s']:.0f} windows/s "
                f"(frontend {row['frontend_ms_per_1k']:.1f} ms, backbone "
                f"{row['backbone_ms_per_1k']:.1f} ms per 1000 windows)"
            )
            del x, logmel
        if dev.type == "cuda":
            peak = torch.cuda.max_memory_allocated() / 2**30
            log(f"model-only {precision}: peak GPU memory {peak:.1f} GiB")
            torch.cuda.reset_peak_memory_stats()
        del m, net


def compiled(dev: torch.device, batch: int, repeats: int) -> None:
    """bf16 with the backbone under ``torch.compile``: compile time and windows/s."""
    m = load(None, device=str(dev), precision="bf16", batch_size=batch, compile=True)
    x = (0.1 * torch.randn(batch, WINDOW)).to(dev)
    t0 = time.perf_counter()
    with torch.inference_mode(), m.autocast():
        m.model(x)
        sync(dev)
        t_compile = time.perf_counter() - t0
        t = time_device(m.model, x, dev, repeats)
    RESULTS["compiled"] = {"batch": batch, "windows_per_s": batch / t, "compile_s": t_compile}
    log(f"compiled bf16 batch {batch}: {batch / t:.0f} windows/s (compile {t_compile:.0f} s)")


# ---------------------------------------------------------------------------------- FLAC archives
def _write_flac(args: tuple[str, int, float, int]) -> None:
    path, sr, minutes, seed = args
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * sr)
    t = np.arange(n) / sr
    # background noise plus a few tones: compresses like a real field recording (poorly)
    x = 0.05 * rng.standard_normal(n) + 0.1 * np.sin(2 * np.pi * (1000 + 200 * seed) * t)
    sf.write(path, x.astype(np.float32), sr, subtype="PCM_16", format="FLAC")


def make_archive(
    folder: Path, sr: int, n_files: int, minutes: float, repeats: int, procs: int
) -> list[FileTask]:
    """``n_files`` distinct FLACs, each hard-linked ``repeats`` times (decoding is the same work)."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [(str(folder / f"f{i:03d}.flac"), sr, minutes, i) for i in range(n_files)]
    with mp.get_context("fork").Pool(procs) as pool:
        pool.map(_write_flac, jobs)
    tasks = []
    for r in range(repeats):
        for i in range(n_files):
            src, dst = folder / f"f{i:03d}.flac", folder / f"f{i:03d}_r{r:03d}.flac"
            if r and not dst.exists():
                os.link(src, dst)
            tasks.append(FileTask(len(tasks), str(src if r == 0 else dst)))
    return tasks


def end_to_end(
    tasks: list[FileTask], workers: int, batch: int, pin: bool, m=None, reuse: bool = True
) -> dict:
    """The ingest loop; ``m=None`` measures the decode side alone. ``reuse``: the workers pack into
    a ring of reused shared memory, page-locked in place (what ``chorus embed`` does)."""
    spec = WindowSpec(SR, 5.0, 5.0)
    n = 0
    t_wait = t_model = 0.0
    t0 = time.perf_counter()
    it = iter_batches(tasks, spec, batch, workers, pin_memory=pin, reuse_memory=reuse)
    while True:
        ta = time.perf_counter()
        b = next(it, None)
        tb = time.perf_counter()
        t_wait += tb - ta
        if b is None:
            break
        if len(b) and m is not None:
            vectors = m.embed(b.audio)  # (B, 1536), back on the host
            assert vectors.shape == (len(b), 1536)
            t_model += time.perf_counter() - tb
        n += len(b)
    total = time.perf_counter() - t0
    return {
        "windows": n,
        "seconds": total,
        "windows_per_s": n / total,
        "wait_s": t_wait,
        "model_s": t_model,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    ap.add_argument("--workers", type=int, default=16)
    ap.add_argument("--batch", type=int, default=256, help="end-to-end batch size")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile (slow start)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, to check the script on a CPU")
    ap.add_argument("--batches", default="128,256,512,1024", help="model-only batch sizes")
    ap.add_argument("--precisions", default="bf16,fp16,fp32", help="model-only precisions")
    ap.add_argument("--tmp", type=Path, default=None, help="folder for the synthetic archives")
    ap.add_argument(
        "--variants",
        default="fast+ring,fast,libsndfile+ring",
        help="end to end: FLAC decoders; +ring: workers reuse page-locked shared memory",
    )
    args = ap.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    gpu = torch.cuda.get_device_name() if dev.type == "cuda" else "none"
    RESULTS["machine"] = {
        "gpu": gpu,
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if dev.type == "cuda" else None,
    }
    log(f"# {RESULTS['machine']}")
    if args.out:
        OUT.append(args.out)
    q = args.quick
    batches = [8, 16] if q else [int(b) for b in args.batches.split(",")]
    precisions = ["fp32", "bf16"] if q else args.precisions.split(",")
    model_only(dev, batches, precisions, repeats=2 if q else 10)
    save()

    tmp = Path(tempfile.mkdtemp(dir=args.tmp))
    n_files, minutes, reps = (2, 1.0, 2) if q else (32, 10.0, 10)
    procs = min(32, os.cpu_count() or 1)
    m = load(None, device=str(dev), batch_size=args.batch)
    for sr in (32_000, 48_000):
        t0 = time.perf_counter()
        tasks = make_archive(tmp / f"sr{sr}", sr, n_files, minutes, reps, procs)
        log(f"archive {sr} Hz: {len(tasks)} files, {time.perf_counter() - t0:.0f} s to write")
        core = per_core(Path(tasks[0].path), repeats=1 if q else 3)
        log(f"per core {sr} Hz (core-s per 1000 windows): {core}")
        pin = dev.type == "cuda"
        RESULTS[f"sr{sr}"] = {"per_core": core}
        for name in args.variants.split(","):
            decoder, _, ring = name.partition("+")
            use_decoder(decoder)  # read by the decode workers as they start
            dec = end_to_end(tasks, args.workers, args.batch, pin, reuse=bool(ring))
            log(f"decode only {sr} Hz, {args.workers} workers, {name}: {dec}")
            e2e = end_to_end(tasks, args.workers, args.batch, pin, m, reuse=bool(ring))
            log(f"end to end {sr} Hz, {args.workers} workers, {name}: {e2e}")
            RESULTS[f"sr{sr}"][name] = {"decode_only": dec, "end_to_end": e2e}
            save()
    if args.compile:
        compiled(dev, 8 if q else 512, repeats=2 if q else 10)

    log("\n| measurement | windows/s |")
    log("|---|---:|")
    for row in RESULTS["model_only"]:
        log(
            f"| model only, {row['precision']}, batch {row['batch']} | {row['windows_per_s']:.0f} |"
        )
    if "compiled" in RESULTS:
        log(f"| model only, bf16 + torch.compile | {RESULTS['compiled']['windows_per_s']:.0f} |")
    for sr in (32_000, 48_000):
        r, w = RESULTS[f"sr{sr}"], args.workers
        for key, v in r["per_core"].items():
            log(f"| one core, {sr} Hz: {key} (core-s per 1000 windows) | {v:.2f} |")
        for name in args.variants.split(","):
            dec, e2e = r[name]["decode_only"], r[name]["end_to_end"]
            log(f"| {w} workers, decode only, {sr} Hz, {name} | {dec['windows_per_s']:.0f} |")
            log(f"| {w} workers, end to end, {sr} Hz, {name} | {e2e['windows_per_s']:.0f} |")
    save()


if __name__ == "__main__":
    main()
