"""Activity summaries: detections per site and time bin (date, ISO week, month, hour of day).

A window's time is its recording's ``start_time`` plus the window's ``start_s``. Recordings without
a start time are not dropped and not folded into a real bin: their windows form the ``undated``
bucket of every time key (the convention of the explorer's cluster-by-hour chart), so the table
still accounts for every window. Each row carries its effort (windows scored) beside the count,
because a site recorded for 2 hours and one recorded for 20 cannot be compared on counts alone.

Detections are counted either per window (windows of a probe scoring at or above a threshold), or
per event from the stored detections of ``chorus classify`` (merged runs of windows), each event
in the bin of its start.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from index.timeline import window_times

TIME_KEYS = ("date", "week", "month", "hour")
GROUP_KEYS = ("site", *TIME_KEYS)
UNDATED = "undated"  # the time bin of windows whose recording has no start time
NO_SITE = "(no site)"
TABLE_SUFFIXES = (".csv", ".parquet")
_FORMATS = {"date": "%Y-%m-%d", "week": "%G-W%V", "month": "%Y-%m"}


def parse_by(by: str | Sequence[str]) -> tuple[str, ...]:
    """``"site,week"`` (or a sequence of names) as a tuple of known group keys; ValueError else."""
    keys = tuple(k.strip() for k in (by.split(",") if isinstance(by, str) else by) if k.strip())
    unknown = [k for k in keys if k not in GROUP_KEYS]
    if not keys or unknown:
        raise ValueError(f"--by takes a comma-separated list of {', '.join(GROUP_KEYS)}")
    if len(set(keys)) < len(keys):
        raise ValueError(f"--by names a key twice: {','.join(keys)}")
    return keys


def group_keys(
    recording_id: np.ndarray, start_s: np.ndarray, recordings: pd.DataFrame, by: Sequence[str]
) -> pd.DataFrame:
    """The group of each window (or detection) as string columns, one per key of ``by``.

    Parameters
    ----------
    recording_id, start_s : (n,) arrays of the windows' recordings and offsets in seconds.
    recordings : recording_id, site, start_time (NaT when undated).
    by : keys among ``GROUP_KEYS``.

    Returns
    -------
    pandas.DataFrame
        (n, len(by)) of strings: the site (``NO_SITE`` when empty), ``YYYY-MM-DD``, ``YYYY-Www``
        (ISO week), ``YYYY-MM`` or the hour ``00``..``23``; ``UNDATED`` for undated recordings.
        Strings sort in time order with ``undated`` last.
    """
    recs = recordings.set_index("recording_id")
    rid = pd.Index(recs.index).get_indexer(np.asarray(recording_id, np.int64))
    if (rid < 0).any():
        raise KeyError(f"no recording with id {int(np.asarray(recording_id)[rid < 0][0])}")
    out = {}
    if "site" in by:
        site = recs["site"].fillna("").astype(str).to_numpy()
        out["site"] = np.where(site == "", NO_SITE, site)[rid]
    if any(k in TIME_KEYS for k in by):
        start = pd.Series(recs["start_time"].to_numpy()[rid])
        t = window_times(start, pd.Series(np.asarray(start_s, float)))["time"].to_numpy()
        for key in (k for k in by if k in TIME_KEYS):
            out[key] = _time_labels(t, key)
    return pd.DataFrame({k: out[k] for k in by})


def _time_labels(t: np.ndarray, key: str) -> np.ndarray:
    """Labels of datetime64[us] times (n,) for one time key; formats each distinct day once."""
    day = t.astype("datetime64[D]")
    if key == "hour":
        undated = np.isnat(t)
        hours = np.full(len(t), 24, np.int64)  # the last entry of the table: undated
        since = t[~undated] - day[~undated].astype("datetime64[us]")
        hours[~undated] = since // np.timedelta64(1, "h")
        table = np.array([f"{h:02d}" for h in range(24)] + [UNDATED], dtype=object)
        return table[hours]
    uniq, inv = np.unique(day, return_inverse=True)  # few distinct days even for millions of rows
    names = pd.DatetimeIndex(uniq).strftime(_FORMATS[key]).to_numpy(dtype=object)
    names[np.isnat(uniq)] = UNDATED
    return names[inv.ravel()]


def summarize(windows: pd.DataFrame, detections: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """Detections and effort per group (pure).

    Parameters
    ----------
    windows : the group columns ``by`` of every window scored (the effort), one row per window.
    detections : the group columns ``by`` of every detection, one row per detection.

    Returns
    -------
    pandas.DataFrame
        ``by`` columns, windows, detections, rate (detections per window), sorted by group; every
        group with windows appears, with 0 detections where there were none.
    """
    by = list(by)
    effort = windows.groupby(by, sort=True).size().rename("windows")
    found = detections.groupby(by, sort=True).size().rename("detections")
    table = pd.concat([effort, found], axis=1).fillna(0).astype(np.int64)
    table["rate"] = table["detections"] / table["windows"].where(table["windows"] > 0)
    return table.reset_index().sort_values(by, ignore_index=True)


def activity(
    db,
    probe_id: int,
    by: str | Sequence[str] = ("site", "date"),
    threshold: float | None = None,
    precision: float | None = None,
    label: str | None = None,
    stored: bool = False,
    scorer=None,
) -> pd.DataFrame:
    """Detections of a probe per group of ``by`` (e.g. site × date, site × hour).

    Parameters
    ----------
    threshold, precision : the score threshold (see ``index.classify.choose_thresholds``; the
        probe's own threshold when neither is given). Ignored with ``stored``.
    label : which of the probe's labels (default: its first).
    stored : count the events stored by ``chorus classify`` (merged windows) instead of scoring
        the windows now; KeyError when the probe was never classified.

    Returns
    -------
    pandas.DataFrame
        ``by`` columns, windows (windows of the probe's model in the group), detections (windows
        at or above the threshold, or stored events), rate, label, threshold.
    """
    from index.classify import choose_thresholds, load_detections, score_windows
    from index.probe import load_probe

    by = parse_by(by)
    rec = load_probe(db, probe_id)
    j = rec.label_index(label)
    recordings = db.recordings()
    if stored:
        snap = db.snapshot(rec.model)
        windows = group_keys(snap.recording_id, snap.start_s, recordings, by)
        det = load_detections(db, probe_id)
        det = det[det["label"] == rec.labels[j]]
        thr = float(det["threshold"].iloc[0]) if len(det) else float("nan")
        hits = group_keys(det["recording_id"].to_numpy(), det["start_s"].to_numpy(), recordings, by)
    else:
        thr = choose_thresholds(rec, threshold, precision)[j].threshold
        meta, scores = score_windows(db, rec.model, rec.probe.coef_, rec.probe.intercept_, scorer)
        windows = group_keys(
            meta["recording_id"].to_numpy(), meta["start_s"].to_numpy(), recordings, by
        )
        hits = windows[scores[:, j] >= thr].reset_index(drop=True)  # the scored windows' keys
    return summarize(windows, hits, by).assign(label=rec.labels[j], threshold=thr)


def write_table(df: pd.DataFrame, out: str | Path) -> Path:
    """Write a table as CSV or Parquet, chosen by the file's suffix; return the path."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in TABLE_SUFFIXES:
        raise ValueError(f"{out.name}: the table is written as .csv or .parquet")
    out.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".csv":
        df.to_csv(out, index=False)
    else:
        df.to_parquet(out, index=False)
    return out
