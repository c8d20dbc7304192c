"""Ingest of many short clips: seconds per file as the database grows (issue 20, point 2).

Writes N short synthetic WAV clips (noise plus a tone), embeds them with ``spectral`` in one run and
times every chunk commit (``Database.set_status`` is called once per chunk with its finished
files): wall and CPU seconds per file, and the part spent in the per-chunk commits and compaction. The seconds per file around file 100, 1,000 and 10,000 must stay flat: every commit adds
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


DB_CALLS = ("add_embeddings", "finish_recordings", "set_status")  # per-chunk commits


def run(n: int, seconds: float, chunk_windows: int, work: Path) -> tuple[list, float]:
    """Embed ``n`` clips; return ([(files finished, wall s, CPU s, s in db commits)], total s).

    CPU seconds are this process's (all threads): other load on the machine does not count.
    """
    import explorer.ingest
    import index.db
    from explorer.ingest import embed_archive

    archive, db_path = work / "archive", work / "db.chorus"
    write_clips(archive, n, seconds)
    marks: list[tuple[int, float, float, float]] = []
    in_db = [0.0]
    # getattr: the same script times older commits (per-file finish_recording, no compaction)
    calls = [c for c in DB_CALLS if hasattr(index.db.Database, c)] or ["set_status"]
    if "finish_recordings" not in calls:
        calls.insert(0, "finish_recording")
    originals = {name: getattr(index.db.Database, name) for name in calls}
    compact = getattr(explorer.ingest, "compact_if_due", None)
    t0, c0 = time.perf_counter(), time.process_time()

    def timed(fn):
        def call(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                in_db[0] += time.perf_counter() - start

        return call

    def status(self, ids, status):
        timed(originals["set_status"])(self, ids, status)
        if status == "ok" and len(ids):
            done = (marks[-1][0] if marks else 0) + len(ids)
            now = time.perf_counter() - t0, time.process_time() - c0
            marks.append((done, *now, in_db[0]))

    for name in originals:
        if name != "set_status":
            setattr(index.db.Database, name, timed(originals[name]))
    index.db.Database.set_status = status
    if compact is not None:
        explorer.ingest.compact_if_due = timed(compact)
    try:
        embed_archive(
            archive, db_path, chunk_windows=chunk_windows, progress=False, index_factory="Flat"
        )
    finally:
        for name, fn in originals.items():
            setattr(index.db.Database, name, fn)
        if compact is not None:
            explorer.ingest.compact_if_due = compact
    return marks, time.perf_counter() - t0


def per_file_at(marks: list, n: int, span: int, column: int = 1) -> float:
    """Seconds per file (``column`` 1: wall, 2: CPU, 3: in db commits) over the ``span`` files
    finished before file ``n``."""
    done = np.array([m[0] for m in marks])
    when = np.array([m[column] for m in marks])
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
    print("  at file   wall s/file   CPU s/file   commits+compaction s/file")
    for n in args.sizes:
        wall, cpu, db = (per_file_at(marks, n, args.span, c) for c in (1, 2, 3))
        print(f"  {n:>7}   {wall:11.4f}   {cpu:10.4f}   {db:10.4f}")


if __name__ == "__main__":
    main()
