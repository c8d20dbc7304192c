"""Exports of labels and detections: CSV, Parquet, Raven or Audacity per recording, Kaleidoscope.

Raven tables point into the original files (``Begin File`` = file name, ``Begin Path`` = absolute
path, times in seconds from the file start), one table per recording, so a bioacoustician can
open each recording in Raven with its selections. Unknown frequency bounds become the full band
(0 Hz to the Nyquist frequency of the recording).

Audacity label tracks are one tab-separated ``start, end, label`` file per recording (File >
Import > Labels), with Audacity's ``\\ low high`` line after a label that has a frequency band.
Kaleidoscope's is one CSV in the columns of its ``id.csv`` (INDIR, FOLDER, IN FILE, CHANNEL,
OFFSET, DURATION, DATE, TIME, HOUR, AUTO ID*, MANUAL ID): labels go to MANUAL ID, a probe's
detections to AUTO ID*, and DATE/TIME/HOUR are the recording's start (empty when undated).
In both, a label that is not positive keeps its kind in the text (``owl (negative)``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from index.raven import write_selection_table

FORMATS = ("csv", "parquet", "raven", "audacity", "kaleidoscope")
FOLDER_FORMATS = ("raven", "audacity")  # one file per recording in a folder
RAVEN_SUFFIX = ".selections.txt"  # Raven's own naming: <name>.Table.1.selections.txt
AUDACITY_SUFFIX = ".audacity.txt"  # Audacity imports any .txt label file
KALEIDOSCOPE_COLUMNS = [
    "INDIR",
    "FOLDER",
    "IN FILE",
    "CHANNEL",
    "OFFSET",
    "DURATION",
    "DATE",
    "TIME",
    "HOUR",
    "AUTO ID*",
    "MANUAL ID",
]
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

    df = _with_recording_info(db, list_labels(db, label=label))
    return write_rows(df, out, fmt, LABEL_COLUMNS, raven_extra=("kind", "source"), tag="labels")


class NoDetections(LookupError):
    """A probe with no stored detections: never classified, or its first run was stopped."""


def export_detections(db, probe_id: int, out: str | Path, fmt: str = "csv") -> list[Path]:
    """Write a probe's stored detections (see ``index.classify.classify``); return the files.

    Raises
    ------
    NoDetections
        Nothing is stored for the probe (a first ``classify`` killed after it created the
        table, or one that found nothing): an empty export would pass for a real result.
    KeyError
        An unknown probe.
    """
    from index.classify import load_detections

    found = load_detections(db, probe_id)
    if found.empty:
        raise NoDetections(
            f"probe {probe_id} has no detections: run `chorus classify --db {db.path} "
            f"--probe {probe_id}` first (again if it was stopped, or with a lower --threshold)"
        )
    df = _with_recording_info(db, found).assign(kind="detection")
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
    out : output file (csv, parquet, kaleidoscope) or folder (raven, audacity)
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown export format {fmt!r}; choose one of {FORMATS}")
    out = Path(out)
    if fmt == "kaleidoscope":
        out.parent.mkdir(parents=True, exist_ok=True)
        kaleidoscope_rows(df).to_csv(out, index=False)
        return [out]
    if fmt not in FOLDER_FORMATS:
        out.parent.mkdir(parents=True, exist_ok=True)
        table = df[[c for c in columns if c in df.columns]]
        if fmt == "csv":
            table.to_csv(out, index=False)
        else:
            table.to_parquet(out, index=False)
        return [out]
    if out.exists() and not out.is_dir():
        raise ValueError(
            f"{out} is a file: {fmt.capitalize()} export writes a folder with one file per recording"
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
        suffix = RAVEN_SUFFIX if fmt == "raven" else AUDACITY_SUFFIX
        name = f"{stem}.{tag}{suffix}" if tag else f"{stem}{suffix}"
        if fmt == "raven":
            files.append(write_selection_table(table, out / name, extra=tuple(raven_extra)))
        else:
            files.append(write_audacity_labels(rows, out / name))
    return files


def _with_recording_info(db, df: pd.DataFrame) -> pd.DataFrame:
    """Rows with their recording's audio_root and start_time (for Kaleidoscope's columns)."""
    recs = db.recordings()[["recording_id", "audio_root", "start_time"]]
    return df.drop(columns=["audio_root", "start_time"], errors="ignore").merge(
        recs, on="recording_id", how="left"
    )


def label_text(rows: pd.DataFrame) -> pd.Series:
    """The label, with its kind after it unless positive (or a detection): ``owl (negative)``."""
    kind = rows["kind"] if "kind" in rows else pd.Series("positive", index=rows.index)
    plain = kind.isin(["positive", "detection"])
    return rows["label"].astype(str).where(plain, rows["label"].astype(str) + " (" + kind + ")")


def write_audacity_labels(rows: pd.DataFrame, path: str | Path) -> Path:
    """One recording's rows as an Audacity label track (``start<TAB>end<TAB>label`` per line).

    Parameters
    ----------
    rows : start_s, end_s, label, optional kind, low_hz, high_hz (NaN: no band line).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = rows.sort_values("start_s", kind="stable")
    text = label_text(rows).str.replace(r"[\t\r\n]", " ", regex=True)
    low = rows["low_hz"] if "low_hz" in rows else pd.Series(np.nan, index=rows.index)
    high = rows["high_hz"] if "high_hz" in rows else pd.Series(np.nan, index=rows.index)
    lines = []
    for s, e, t, lo, hi in zip(rows["start_s"], rows["end_s"], text, low, high, strict=True):
        lines.append(f"{float(s):.6f}\t{float(e):.6f}\t{t}\n")
        if not (pd.isna(lo) and pd.isna(hi)):  # Audacity's spectral-selection line
            lo = 0.0 if pd.isna(lo) else float(lo)
            hi = lo if pd.isna(hi) else float(hi)
            lines.append(f"\\\t{lo:.6f}\t{hi:.6f}\n")
    path.write_text("".join(lines), encoding="utf-8")
    return path


def kaleidoscope_rows(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in Kaleidoscope's ``id.csv`` columns (``KALEIDOSCOPE_COLUMNS``).

    Parameters
    ----------
    df : path (relative to audio_root), audio_root, start_s, end_s, label, kind ("detection"
        for a probe's detections), optional start_time of the recording, channel (0-based).
    """
    df = df.sort_values(["path", "start_s"], kind="stable").reset_index(drop=True)
    folder = df["path"].map(lambda p: p.rsplit("/", 1)[0] if "/" in p else "")
    start = pd.to_datetime(df["start_time"]) if "start_time" in df else pd.Series(pd.NaT, df.index)
    text = label_text(df)
    detected = df["kind"].eq("detection") if "kind" in df else pd.Series(False, df.index)
    return pd.DataFrame(
        {
            "INDIR": df["audio_root"] if "audio_root" in df else "",
            "FOLDER": folder,
            "IN FILE": df["path"].map(lambda p: p.rsplit("/", 1)[-1]),
            "CHANNEL": df["channel"] if "channel" in df else 0,
            "OFFSET": df["start_s"].astype(float).round(6),
            "DURATION": (df["end_s"] - df["start_s"]).astype(float).round(6),
            "DATE": start.dt.strftime("%Y-%m-%d").fillna(""),
            "TIME": start.dt.strftime("%H:%M:%S").fillna(""),
            "HOUR": start.dt.hour.astype("Int64"),
            "AUTO ID*": text.where(detected, ""),
            "MANUAL ID": text.where(~detected, ""),
        }
    )[KALEIDOSCOPE_COLUMNS]
