"""Exports of labels and detections: CSV, Parquet, or Raven selection tables per recording.

Raven tables point into the original files (``Begin File`` = file name, ``Begin Path`` = absolute
path, times in seconds from the file start), one table per recording, so a bioacoustician can
open each recording in Raven with its selections. Unknown frequency bounds become the full band
(0 Hz to the Nyquist frequency of the recording).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from index.raven import write_selection_table

FORMATS = ("csv", "parquet", "raven")
RAVEN_SUFFIX = ".selections.txt"  # Raven's own naming: <name>.Table.1.selections.txt
LABEL_COLUMNS = [
    "label_id",
    "label",
    "kind",
    "source",
    "recording_id",
    "path",
    "abs_path",
    "start_s",
    "end_s",
    "low_hz",
    "high_hz",
    "created_at",
]
DETECTION_COLUMNS = [
    "probe_id",
    "label",
    "recording_id",
    "path",
    "abs_path",
    "start_s",
    "end_s",
    "score",
    "n_windows",
    "threshold",
]


def export_labels(db, out: str | Path, fmt: str = "csv", label: str | None = None) -> list[Path]:
    """Write the labels (optionally one name) as CSV, Parquet or Raven tables; return the files."""
    from index.labels import list_labels

    df = list_labels(db, label=label)
    return write_rows(df, out, fmt, LABEL_COLUMNS, raven_extra=("kind", "source"), tag="labels")


def export_detections(db, probe_id: int, out: str | Path, fmt: str = "csv") -> list[Path]:
    """Write a probe's stored detections (see ``index.classify.classify``); return the files."""
    from index.classify import load_detections

    df = load_detections(db, probe_id)
    return write_rows(
        df, out, fmt, DETECTION_COLUMNS, raven_extra=("score",), tag=f"probe{probe_id}"
    )


def write_rows(
    df: pd.DataFrame, out: str | Path, fmt: str, columns: list[str], raven_extra=(), tag: str = ""
) -> list[Path]:
    """Write rows to one CSV/Parquet file, or a folder of Raven tables (one per recording).

    Parameters
    ----------
    df : rows with recording_id, path (relative to its audio root), abs_path, start_s, end_s,
        label, optional low_hz, high_hz, sample_rate and the ``columns`` to keep.
    out : output file (csv, parquet) or folder (raven)
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {FORMATS}")
    out = Path(out)
    if fmt != "raven":
        out.parent.mkdir(parents=True, exist_ok=True)
        table = df[[c for c in columns if c in df.columns]]
        if fmt == "csv":
            table.to_csv(out, index=False)
        else:
            table.to_parquet(out, index=False)
        return [out]
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"{out} is a file: Raven export writes a folder with one table per recording"
        )
    out.mkdir(parents=True, exist_ok=True)
    files, used = [], set()
    for rid, rows in df.groupby("recording_id", sort=True):
        rel = str(rows["path"].iloc[0])
        nyquist = float(rows["sample_rate"].iloc[0]) / 2 if "sample_rate" in rows else np.nan
        table = rows.assign(
            file=rel.rsplit("/", 1)[-1],
            path=rows["abs_path"],
            low_hz=rows["low_hz"].fillna(0.0) if "low_hz" in rows else 0.0,
            high_hz=rows["high_hz"].fillna(nyquist) if "high_hz" in rows else nyquist,
        )
        stem = rel.rsplit(".", 1)[0].replace("/", "__")  # folders kept: same-named files differ
        if stem.lower() in used:  # a.wav beside a.flac, or one path under two audio roots
            stem = f"{stem}.rec{int(rid)}"
        used.add(stem.lower())  # lower: case-insensitive file systems (macOS, Windows)
        name = f"{stem}.{tag}{RAVEN_SUFFIX}" if tag else f"{stem}{RAVEN_SUFFIX}"
        files.append(write_selection_table(table, out / name, extra=tuple(raven_extra)))
    return files
