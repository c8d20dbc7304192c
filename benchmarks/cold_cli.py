"""A cold ``chorus search``: wall time and peak resident memory of fresh processes.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/cold_cli.py            # on a new demo database
    OMP_WAIT_POLICY=PASSIVE python benchmarks/cold_cli.py --db D.chorus --query FILE@S-E

Without ``--db`` it writes ``chorus demo`` to a temporary folder and asks for the first planted
call of its truth table, as the stored window that holds it (so no model is loaded). The database is
left unchanged for ``SETTLE_S`` seconds, one untimed search records its snapshot and recording
columns in the cache folder (as any search does), then each timed run is a fresh
``python -m explorer.cli search`` (the ``chorus`` entry point), timed from its start to its exit
(interpreter start-up included) with its own peak resident memory (``wait4``). Prints a
Markdown table of the medians and which modules it loaded.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SETTLE_S = 2.5  # index.db.VERSIONS_SETTLE_S and a margin
WINDOW_S = 5  # the demo's windows (spectral: 5 s, no overlap)
PROBE = (
    "import sys, runpy; sys.argv = ['chorus', *sys.argv[1:]]\n"
    "try:\n    runpy.run_module('explorer.cli', run_name='__main__')\n"
    "finally:\n"
    "    print('loaded:', sorted(m for m in ('lance', 'lancedb', 'pandas', 'torch')"
    " if m in sys.modules), file=sys.stderr)\n"
)


def demo_database(folder: Path) -> tuple[Path, str]:
    """(database, query) of a new ``chorus demo`` in ``folder``."""
    subprocess.run(
        [sys.executable, "-m", "explorer.cli", "demo", str(folder), "--no-progress"],
        check=True,
        capture_output=True,
    )
    with open(folder / "truth.csv") as f:
        row = next(csv.DictReader(f))
    start = WINDOW_S * int(float(row["start_s"]) // WINDOW_S)  # the stored window holding it
    return folder / "demo.chorus", f"{row['file']}@{start}-{start + WINDOW_S}"


def one_run(argv: list[str], cwd: Path) -> tuple[float, float, str]:
    """(seconds, peak resident MB, the modules line) of one fresh process."""
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-c", PROBE, *argv],
        cwd=cwd,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    secs = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise RuntimeError(err.strip().splitlines()[-1])
    return secs, usage.ru_maxrss / 1024, err.strip().splitlines()[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--db", type=Path, default=None)
    ap.add_argument("--query", default=None, help="FILE@S-E (default: the demo's first call)")
    ap.add_argument("--runs", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.db is None:
            db, query = demo_database(Path(tmp))
            cwd = Path(tmp) / "audio"
        else:
            db, query, cwd = args.db, args.query, Path.cwd()
        argv = ["search", "--db", str(db), "--query", query, "-k", "5"]
        time.sleep(SETTLE_S)
        one_run(argv, cwd)  # records the cache files, as the first search after a change does
        runs = [one_run(argv, cwd) for _ in range(args.runs)]
    secs, mb = np.median([r[0] for r in runs]), np.median([r[1] for r in runs])
    print(f"\n| cold `chorus search` ({args.runs} fresh processes, medians) | figure |")
    print("|---|---|")
    print(f"| wall s, interpreter start-up included | {secs:.3f} |")
    print(f"| peak resident MB | {mb:.0f} |")
    print(f"| modules {runs[-1][2]} |  |")


if __name__ == "__main__":
    main()
