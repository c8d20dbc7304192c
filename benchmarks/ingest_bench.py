"""Ingest of one long recording: windows/s end to end and the embed process's peak resident memory.

Writes a synthetic N-hour FLAC (default 24 h at 16 kHz: noise with a tone every minute), then runs
``chorus embed`` on it in a child process and samples that process's RSS every 0.2 s. The point is the
memory curve: streaming decode must keep it flat however long the file is.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/ingest_bench.py --hours 24 --model spectral
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import psutil
import soundfile as sf

SAMPLE_RATE = 16_000  # Hz, a common recorder setting
BLOCK_S = 600  # s written per block


def write_long_file(path: Path, hours: float, seed: int = 0) -> None:
    """A FLAC of ``hours`` of pink-ish noise with a 2 kHz tone at the top of every minute."""
    rng = np.random.default_rng(seed)
    total = int(hours * 3600 * SAMPLE_RATE)
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, format="FLAC", subtype="PCM_16") as out:
        for start in range(0, total, BLOCK_S * SAMPLE_RATE):
            n = min(BLOCK_S * SAMPLE_RATE, total - start)
            x = np.cumsum(rng.standard_normal(n)) * 0.002
            x -= np.convolve(x, np.ones(64) / 64, mode="same")  # remove the random-walk drift
            x += 0.01 * rng.standard_normal(n)
            t = (start + np.arange(n)) / SAMPLE_RATE
            x += 0.1 * np.sin(2 * np.pi * 2000 * t) * ((t % 60) < 1.0)
            out.write(np.clip(x, -1, 1).astype(np.float32))


def run(archive: Path, db: Path, model: str, workers: int) -> dict:
    cmd = [sys.executable, "-m", "explorer.cli", "embed", str(archive), "--db", str(db),
           "--model", model, "--no-progress", "--workers", str(workers)]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    ps = psutil.Process(proc.pid)
    peak, samples = 0, []
    while proc.poll() is None:
        try:
            rss = ps.memory_info().rss + sum(c.memory_info().rss for c in ps.children(True))
        except psutil.Error:
            break
        peak = max(peak, rss)
        samples.append(rss)
        time.sleep(0.2)
    out = proc.communicate()[0]
    if proc.returncode:
        raise SystemExit(f"embed failed ({proc.returncode}): {out}")
    return {
        "seconds": time.perf_counter() - t0,
        "peak_rss_mb": peak / 2**20,
        "median_rss_mb": float(np.median(samples)) / 2**20 if samples else 0.0,
        "summary": out.strip().splitlines()[-1],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hours", type=float, default=24.0)
    ap.add_argument("--model", default="spectral")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--dir", default=None, help="work folder (default: a temp folder)")
    args = ap.parse_args()
    work = Path(args.dir or tempfile.mkdtemp(prefix="chorus-ingest-"))
    (work / "archive").mkdir(parents=True, exist_ok=True)
    path = work / "archive" / "20240601_000000.flac"
    t0 = time.perf_counter()
    if not path.exists():
        write_long_file(path, args.hours)
    print(f"file: {path} ({path.stat().st_size / 2**20:.0f} MB, {args.hours} h) "
          f"written in {time.perf_counter() - t0:.0f} s")  # fmt: skip
    r = run(work / "archive", work / "bench.chorus", args.model, args.workers)
    n = int(r["summary"].split(" windows")[0].split()[-1])
    print(r["summary"])
    print(f"| {args.hours} h FLAC, {args.model}, {args.workers} worker(s) | {n} | "
          f"{r['seconds']:.0f} | {n / r['seconds']:.0f} | {r['peak_rss_mb']:.0f} | "
          f"{r['median_rss_mb']:.0f} |")  # fmt: skip


if __name__ == "__main__":
    main()
