"""Peak memory of decoding and windowing a many-channel recording (issue 20, point 9).

Writes a 64-channel 96 kHz WAV (65 s, PCM_16: 0.8 GB), then in a fresh process per policy cuts
it into 5 s windows at 32 kHz exactly as ``chorus embed`` does (``embedder.audio.iter_windows``)
and reports that process's peak resident memory (``ru_maxrss``). The model is left out: its
memory does not depend on the channel count.

    python benchmarks/many_channels_memory.py [--seconds 65] [--channels 64] [--rate 96000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import soundfile as sf

CHILD = """
import json, resource, sys
from embedder import audio
path, policy = sys.argv[1], sys.argv[2]
n = sum(len(b) for b in audio.iter_windows(path, 32000, 5.0, 5.0, channels=policy))
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"policy": policy, "windows": n, "peak_rss_mb": round(peak_mb)}))
"""


def write_wav(path: Path, seconds: float, channels: int, rate: int) -> None:
    """Noise, written a second at a time (the writer never holds the file)."""
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", rate, channels, subtype="PCM_16") as out:
        for _ in range(int(seconds)):
            out.write((0.1 * rng.standard_normal((rate, channels))).astype(np.float32))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=65.0)
    ap.add_argument("--channels", type=int, default=64)
    ap.add_argument("--rate", type=int, default=96000)
    args = ap.parse_args()
    root = Path(__file__).resolve().parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "many.wav"
        write_wav(path, args.seconds, args.channels, args.rate)
        for policy in ("mix", "all"):
            done = subprocess.run(
                [sys.executable, "-c", CHILD, str(path), policy],
                capture_output=True,
                text=True,
                check=True,
                cwd=root,
                env={"PYTHONPATH": str(root), "OMP_WAIT_POLICY": "PASSIVE"},
            )
            row = json.loads(done.stdout.strip().splitlines()[-1])
            row.update(channels=args.channels, rate=args.rate, seconds=args.seconds)
            print(json.dumps(row))


if __name__ == "__main__":
    main()
