"""Ingest of many short clips: seconds per file as the database grows (issue 20, point 2).

Writes N short synthetic WAV clips (noise plus a tone), embeds them with ``spectral`` in one run and
times every chunk commit (``Database.set_status`` is called once per chunk with its finished
files). The seconds per file around file 100, 1,000 and 10,000 must stay flat: every commit adds
files to the LanceDB tables, and without compaction each later commit reads all of them.

``--chunk-windows 32`` (one clip is one window) makes a commit every 32 files, 60x more commits
than the default 2,000-window chunks: the worst case for small files.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/compaction_bench.py --sizes 100 1000 10000
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

SAMPLE_RATE = 16_000


def write_clips(root: Path, n: int, seconds: float) -> None:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    for i in range(n):
        x = 0.05 * rng.standard_normal(t.size) + 0.2 * np.sin(2 * np.pi * (300 + i % 3000) * t)
        folder = root / f"site{i % 10}"
        folder.mkdir(parents=True, exist_ok=True)
        sf.write(folder / f"clip_{i:06d}.wav", x.astype(np.float32), SAMPLE_RATE)


def run(n: int, seconds: float, chunk_windows: int, work: Path) -> tuple[list, float]:
    """Embed ``n`` clips; return ([(files finished, seconds since start)], total seconds)."""
    import index.db
    from explorer.ingest import embed_archive

    archive, db_path = work / "archive", work / "db.chorus"
    write_clips(archive, n, seconds)
    marks: list[tuple[int, float]] = []
    original = index.db.Database.set_status
    t0 = time.perf_counter()

    def timed(self, ids, status):
        original(self, ids, status)
        if status == "ok" and len(ids):
            done = (marks[-1][0] if marks else 0) + len(ids)
            marks.append((done, time.perf_counter() - t0))

    index.db.Database.set_status = timed
    try:
        embed_archive(
            archive, db_path, chunk_windows=chunk_windows, progress=False, index_factory="Flat"
        )
    finally:
        index.db.Database.set_status = original
    return marks, time.perf_counter() - t0


def per_file_at(marks: list, n: int, span: int) -> float:
    """Seconds per file over the ``span`` files finished before file ``n``."""
    done = np.array([m[0] for m in marks])
    when = np.array([m[1] for m in marks])
    lo = max(int(done[0]), n - span)
    return float((np.interp(n, done, when) - np.interp(lo, done, when)) / (n - lo))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100, 1000, 10000])
    ap.add_argument("--seconds", type=float, default=1.0, help="length of one clip")
    ap.add_argument("--chunk-windows", type=int, default=32)
    ap.add_argument("--span", type=int, default=100, help="files per measurement")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        marks, total = run(max(args.sizes), args.seconds, args.chunk_windows, Path(tmp))
    print(f"{max(args.sizes)} clips of {args.seconds} s, a commit every {args.chunk_windows} files")
    print(f"embed_archive took {total:.1f} s in all (discovery, planning and index build included)")
    for n in args.sizes:
        print(f"  s/file at file {n:>6}: {per_file_at(marks, n, args.span):.4f}")


if __name__ == "__main__":
    main()
