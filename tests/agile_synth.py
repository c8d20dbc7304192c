"""Synthetic Chorus databases for the agile-loop tests: no audio, planted "calls" in vectors.

Each recording is a run of 5-s windows; a window that holds a planted call of type T gets the
unit direction of T added to its random background vector, so probes and clusters have a
known truth. Used by the AGILE test files (tests/test_index_*.py, test_explorer_agile_cli.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

import index

WINDOW_S = 5.0  # seconds per window (hop = window)
MODEL = "synth"


@dataclass
class SynthDB:
    db: object
    root: Path  # audio root (files are not written: labels and vectors need none)
    truth: pd.DataFrame  # call_type, recording_id, path, start_s, end_s
    windows: pd.DataFrame  # window_id, recording_id, start_s, end_s, call_type ("" = none)


def make_synth_db(
    path: Path,
    n_recordings: int = 8,
    windows_per_recording: int = 40,
    dim: int = 32,
    call_types: tuple[str, ...] = ("owl", "wren"),
    call_rate: float = 0.15,
    strength: float = 1.2,
    seed: int = 0,
) -> SynthDB:
    rng = np.random.default_rng(seed)
    db = index.connect(path / "survey.chorus")
    root = path / "audio"
    root.mkdir(parents=True, exist_ok=True)
    directions = np.linalg.qr(rng.normal(size=(dim, len(call_types))))[0].T  # (T, dim) orthonormal
    truth, windows = [], []
    for r in range(n_recordings):
        rel = f"site{r % 2}/rec{r:02d}.wav"
        rid = db.upsert_recording(
            root,
            rel,
            duration_s=windows_per_recording * WINDOW_S,
            sample_rate=32000,
            channels=1,
            site=f"S{r % 2}",
            start_time=dt.datetime(2024, 5, 1, 4 + r % 3),
            status="ok",
        )
        start = np.arange(windows_per_recording) * WINDOW_S
        kinds = np.where(
            rng.random(windows_per_recording) < call_rate,
            rng.integers(0, len(call_types), windows_per_recording),
            -1,
        )
        vec = rng.normal(size=(windows_per_recording, dim)) / np.sqrt(dim)  # (W, dim)
        vec[kinds >= 0] += strength * directions[kinds[kinds >= 0]]
        ids = db.add_embeddings(
            MODEL,
            pd.DataFrame(
                {
                    "recording_id": rid,
                    "start_s": start,
                    "end_s": start + WINDOW_S,
                    "vector": list(vec),
                }
            ),
        )
        for w, k in enumerate(kinds):
            label = call_types[k] if k >= 0 else ""
            windows.append((int(ids[w]), rid, start[w], start[w] + WINDOW_S, label))
            if k >= 0:  # a 1-s call in the middle of the window
                truth.append((label, rid, rel, start[w] + 2.0, start[w] + 3.0))
    truth_df = pd.DataFrame(
        truth, columns=["call_type", "recording_id", "path", "start_s", "end_s"]
    )
    win_df = pd.DataFrame(
        windows, columns=["window_id", "recording_id", "start_s", "end_s", "call_type"]
    )
    return SynthDB(db, root, truth_df, win_df)
