"""Decoding cost of the ingest on the CPU: libsndfile vs the compiled FLAC decoder.

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/decode_bench.py [--workers 2] [--out d.json]``

For 10-minute synthetic FLAC files (noise + a tone, 16-bit: they compress like field recordings,
poorly) at 32 kHz (the model rate) and 48 kHz (resampled to 32 kHz), in core-seconds per 1000
five-second windows (lower is better):

1. per core, in this process, the two decoders interleaved, median of ``--repeats``:
   the FLAC decode alone, soxr resampling alone, and the whole per-file window iterator
   (``audio.iter_windows``: decode, resample, window);
2. ``iter_batches`` with ``--workers`` decode processes packing 256-window batches (the decode side
   of ``chorus embed``; no model, but the main process copies each batch once, as an upload does):
   wall-clock windows/s and CPU time of all processes, for each of ``--variants`` (a decoder, and
   ``+ring`` for workers that reuse a fixed ring of shared memory), run alternately in fresh
   processes; "without start-up" subtracts a run over a third of the files (process and worker
   start), which is what a large archive sees.

A GPU ingest is bound by (2): ``benchmarks/perch_gpu.py`` measures it next to the model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from embedder import audio, flac

SR = 32_000  # Hz, model rate
WINDOW_S = 5.0  # s
RATES = (32_000, 48_000)  # Hz, archive rates
DECODERS = {"libsndfile": "0", "fast": "1"}  # value of CHORUS_FAST_FLAC


def write_flac(path: Path, sr: int, minutes: float, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(minutes * 60 * sr)
    t = np.arange(n) / sr
    x = 0.05 * rng.standard_normal(n) + 0.1 * np.sin(2 * np.pi * (1000 + 200 * seed) * t)
    sf.write(path, x.astype(np.float32), sr, subtype="PCM_16", format="FLAC")


def use_decoder(name: str) -> None:
    os.environ[flac.SWITCH_ENV] = DECODERS[name]
    flac.LIBRARY.reset()


def decode_only(path: Path, name: str) -> float:
    """Seconds to decode the whole file with one decoder, blocks of BLOCK_S."""
    with sf.SoundFile(path) as snd:
        block = int(audio.BLOCK_S * snd.samplerate)
        t0 = time.perf_counter()
        if name == "fast":
            with flac.FlacReader(path) as reader:
                while len(reader.read(block)):
                    pass
        else:
            while len(snd.read(block, dtype="float32", always_2d=True)):
                pass
        return time.perf_counter() - t0


def resample_only(path: Path) -> float:
    x, sr = sf.read(path, dtype="float32", always_2d=True)  # (n, 1)
    if sr == SR:
        return 0.0
    block = int(audio.BLOCK_S * sr)
    rs = soxr.ResampleStream(sr, SR, 1, dtype="float32", quality=audio.RESAMPLE_QUALITY)
    t0 = time.perf_counter()
    for i in range(0, len(x), block):
        rs.resample_chunk(x[i : i + block], last=i + block >= len(x))
    return time.perf_counter() - t0


def iter_windows(path: Path) -> tuple[float, int]:
    t0 = time.perf_counter()
    n = sum(len(wb.start_s) for wb in audio.iter_windows(path, SR, WINDOW_S, WINDOW_S))
    return time.perf_counter() - t0, n


def per_core(path: Path, repeats: int) -> dict:
    info = sf.info(path)
    windows = audio.count_windows(int(info.frames * SR / info.samplerate), SR, WINDOW_S, WINDOW_S)
    k = 1000 / windows
    times: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name in DECODERS:
            use_decoder(name)
            times.setdefault(f"decode {name}", []).append(decode_only(path, name))
            t, n = iter_windows(path)
            assert n == windows, (n, windows)
            times.setdefault(f"iter_windows {name}", []).append(t)
        times.setdefault("resample", []).append(resample_only(path))
    return {key: statistics.median(v) * k for key, v in times.items()}


def batches_run(paths: list[Path], workers: int, variant: str, consume: bool) -> dict:
    """One ``iter_batches`` pass in a fresh process (CPU time of it and its workers).

    ``variant``: a decoder name, ``+ring`` for ``reuse_memory=True``; ``consume``: the main process
    copies every batch once, as the upload to the model does (a staging copy, or the model's read).
    """
    name, _, ring = variant.partition("+")
    code = f"""
import json, resource, sys, time
import numpy as np
from embedder.batching import FileTask, WindowSpec, iter_batches
paths = {[str(p) for p in paths]!r}
tasks = [FileTask(i, p) for i, p in enumerate(paths)]
def cpu():
    a, b = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return a.ru_utime + a.ru_stime + b.ru_utime + b.ru_stime
spec = WindowSpec({SR}, {WINDOW_S}, {WINDOW_S})
stage = np.empty((256, int({SR} * {WINDOW_S})), np.float32)
stage[:] = 0
t0, c0, n = time.perf_counter(), cpu(), 0
for b in iter_batches(tasks, spec, 256, {workers}, reuse_memory={bool(ring)}):
    if {consume} and len(b):
        np.copyto(stage[: len(b)], b.audio)
    n += len(b)
print(json.dumps({{"windows": n, "wall_s": time.perf_counter() - t0, "cpu_s": cpu() - c0}}))
"""
    env = {**os.environ, flac.SWITCH_ENV: DECODERS[name], "OMP_WAIT_POLICY": "PASSIVE"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    return {**r, "windows_per_s": r["windows"] / r["wall_s"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--files", type=int, default=48, help="files per archive (hard links of 2)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path)
    ap.add_argument(
        "--variants",
        default="libsndfile,fast,fast+ring",
        help="iter_batches runs: decoder names, +ring to reuse the workers' memory",
    )
    ap.add_argument("--batch-repeats", type=int, default=3)
    ap.add_argument("--rates", default=",".join(map(str, RATES)), help="archive rates (Hz)")
    ap.add_argument(
        "--no-consume",
        dest="consume",
        action="store_false",
        help="leave the batches untouched (runs before 27 Nov 2026 did)",
    )
    args = ap.parse_args()
    variants = args.variants.split(",")
    print(f"# fast FLAC decoder: {flac.status()}")
    machine = {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "python": platform.python_version(), "libsndfile": sf.__libsndfile_version__}  # fmt: skip
    results: dict = {"machine": machine}
    with tempfile.TemporaryDirectory() as tmp:
        for sr in map(int, args.rates.split(",")):
            base = [Path(tmp) / f"{sr}_{i}.flac" for i in range(2)]
            for i, p in enumerate(base):
                write_flac(p, sr, args.minutes, i)
            paths = []
            for i in range(args.files):
                link = Path(tmp) / f"{sr}_link{i}.flac"
                os.link(base[i % 2], link)
                paths.append(link)
            core = per_core(base[0], args.repeats)
            print(f"{sr} Hz per core (core-s per 1000 windows): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in core.items()))  # fmt: skip
            runs: dict[str, list[dict]] = {name: [] for name in variants}
            small = paths[: max(2, len(paths) // 3)]  # for the start-up cost, subtracted
            for _ in range(args.batch_repeats):
                for name in variants:
                    big = batches_run(paths, args.workers, name, args.consume)
                    few = batches_run(small, args.workers, name, args.consume)
                    big["marginal_cpu_s_per_1k"] = (
                        1000 * (big["cpu_s"] - few["cpu_s"]) / (big["windows"] - few["windows"])
                    )
                    runs[name].append(big)
            summary = {}
            for name, rs in runs.items():
                summary[name] = {
                    "windows_per_s": statistics.median(r["windows_per_s"] for r in rs),
                    "cpu_s_per_1k": statistics.median(1000 * r["cpu_s"] / r["windows"] for r in rs),
                    "marginal_cpu_s_per_1k": statistics.median(
                        r["marginal_cpu_s_per_1k"] for r in rs
                    ),
                }
                print(f"{sr} Hz iter_batches, {args.workers} workers, {name}: "
                      f"{summary[name]['windows_per_s']:.0f} windows/s, "
                      f"{summary[name]['cpu_s_per_1k']:.2f} CPU-s per 1000 windows "
                      f"({summary[name]['marginal_cpu_s_per_1k']:.2f} without start-up)")  # fmt: skip
            results[f"sr{sr}"] = {"per_core": core, "iter_batches": summary, "runs": runs}
    if args.out:
        args.out.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
