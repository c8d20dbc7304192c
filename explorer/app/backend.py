"""Streamlit-free logic behind the explorer pages: archive summaries, window tables, map points,
queries and searches. Functions take an open database (``index.connect``) and return plain data, so
they are cached by ``state.py`` and tested without a browser.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from index.timeline import window_times

MAP_POINTS = 50_000  # windows sampled for the map
RECORDING_COLUMNS = ["recording_id", "path", "abs_path", "site", "start_time", "sample_rate"]


def model_names(db) -> list[str]:
    """Models that have a windows table in the database (sorted)."""
    tables = set(db.table_names())
    return [m for m in db.models() if f"embeddings_{m}" in tables]


def table_version(db, model: str) -> str:
    """Versions of a model's windows table and of the recordings table (sites, paths and times
    joined onto windows): the cache key of everything derived from them."""
    return "w{}-r{}".format(*db.data_versions(model))


# --------------------------------------------------------------------------------------------------
# Archive


@dataclass
class ArchiveSummary:
    recordings: pd.DataFrame  # one row per recording, failed ones included
    n_recordings: int  # readable recordings (index.summary.recording_counts, as `chorus info`)
    n_failed: int
    hours: float  # total duration of readable recordings (h)
    sites: list[str]
    first: pd.Timestamp | None  # earliest start time among the dated recordings
    last: pd.Timestamp | None
    windows: dict[str, int]  # model -> committed windows
    n_dated: int = 0  # readable recordings with a start time
    dates: str = ""  # e.g. "1 of 98 recordings dated: 2025-02-22 06:00:00"


def archive_summary(db) -> ArchiveSummary:
    """Counts shown on the Archive page (cheap: one scan of the recordings table)."""
    from index.summary import describe_dates, recording_counts

    rec = db.recordings()
    counts = recording_counts(rec)
    return ArchiveSummary(
        recordings=rec,
        n_recordings=counts["n_recordings"],
        n_failed=counts["n_failed"],
        hours=counts["hours"],
        sites=counts["sites"],
        first=pd.Timestamp(counts["date_min"]) if counts["date_min"] else None,
        last=pd.Timestamp(counts["date_max"]) if counts["date_max"] else None,
        windows={m: db.n_windows(m) for m in model_names(db)},
        n_dated=counts["n_dated"],
        dates=describe_dates(counts),
    )


# --------------------------------------------------------------------------------------------------
# Windows


def windows_by_id(db, model: str, window_ids) -> pd.DataFrame:
    """Rows of the given windows joined with their recordings, in the order of ``window_ids``.

    Read from the model's in-memory snapshot (no table scan), so thousands of ids from a map
    selection cost milliseconds; ids no longer in the table are dropped.
    """
    snap = db.snapshot(model)
    ids = np.asarray([int(i) for i in window_ids], dtype=np.int64)
    off = snap.offsets(ids[snap.contains(ids)]) if len(ids) else np.empty(0, np.int64)
    rows = pd.DataFrame(
        {
            "window_id": snap.window_id[off],
            "recording_id": snap.recording_id[off],
            "channel": snap.channel[off],
            "start_s": snap.start_s[off],
            "end_s": snap.end_s[off],
        }
    )
    return with_recordings(rows, db.recordings())


def with_recordings(windows: pd.DataFrame, recordings: pd.DataFrame) -> pd.DataFrame:
    """Add path, abs_path, site, start_time, ``hour`` and ``date`` (``index.timeline``) to window rows."""
    cols = [c for c in RECORDING_COLUMNS if c in recordings.columns]
    stale = [c for c in cols if c != "recording_id" and c in windows.columns]
    out = windows.drop(columns=stale).merge(recordings[cols], on="recording_id", how="left")
    start = out["start_time"] if "start_time" in out else pd.Series(pd.NaT, index=out.index)
    out[["hour", "date"]] = window_times(start, out["start_s"])[["hour", "date"]]
    return out


def map_points(db, model: str, method: str = "pca", n: int = MAP_POINTS) -> pd.DataFrame:
    """A stratified sample of at most ``n`` windows with 2-D map coordinates ``x``, ``y``.

    The projection itself (and its on-disk cache) is ``index.projection.project``; here the points get
    the recording columns the map colours and hovers by (site, hour, path).
    """
    from index.projection import project

    coords, _ = project(db, model, method=method, sample=int(n))
    coords = coords.drop(columns=["site"], errors="ignore")
    return with_recordings(coords, db.recordings())


def time_filter(
    sites: list[str] | None = None,
    date_range: tuple | None = None,
    hours: tuple[int, int] | None = None,
    all_dates: tuple | None = None,
) -> str | None:
    """SQL ``where`` for search over sites, window dates (inclusive) and hours of the day.

    ``hours = (lo, hi)`` keeps windows starting in [lo, hi); (0, 24) means no restriction, as
    does a ``date_range`` equal to ``all_dates`` (the range the page offers by default).
    Windows of recordings with no known start time have no date or hour and are dropped by
    date/hour filters.
    """
    if all_dates is not None and date_range is not None and tuple(date_range) == tuple(all_dates):
        date_range = None
    clauses = []
    if sites:
        quoted = ", ".join("'" + str(s).replace("'", "''") + "'" for s in sites)
        clauses.append(f"site IN ({quoted})")
    if date_range is not None and len(date_range) == 2 and all(date_range):
        lo, hi = (pd.Timestamp(d).date().isoformat() for d in date_range)
        clauses.append(f"date >= date '{lo}' AND date <= date '{hi}'")
    if hours is not None and tuple(hours) != (0, 24):
        clauses.append(f"hour >= {int(hours[0])} AND hour < {int(hours[1])}")
    return " AND ".join(clauses) or None


# --------------------------------------------------------------------------------------------------
# Search

MAX_UPLOAD_BYTES = 50 * 1024 * 1024  # refuse bigger query uploads even if Streamlit allows them


@dataclass
class Query:
    """One example in a search: a positive or negative vector and where it came from."""

    kind: str  # "positive" | "negative"
    source: str  # e.g. "upload: call.wav" or "rec.wav @ 12.0-17.0 s"
    vector: np.ndarray  # (dim,)
    span: tuple[int, float, float] | None = None  # (recording_id, start_s, end_s) if archived


def run_search(
    db,
    model: str,
    queries: list[Query],
    k: int = 20,
    where: str | None = None,
    per_recording: int | None = None,
    include_query: bool = False,
) -> pd.DataFrame:
    """Search with the positive queries (and negatives); hits best first, with hour and date.

    Windows overlapping a query's span of an archived recording are left out unless
    ``include_query`` (they would top the results with scores near 1)."""
    pos = [q.vector for q in queries if q.kind == "positive"]
    neg = [q.vector for q in queries if q.kind == "negative"]
    if not pos:
        raise ValueError("add at least one positive example to search")
    builder = db.search(model, np.stack(pos).astype(np.float32))  # (P, dim)
    if neg:
        builder = builder.negatives(np.stack(neg).astype(np.float32))  # (N, dim)
    if not include_query:  # a mask on the snapshot, not a SQL clause for the filter engine
        builder = builder.exclude_spans([q.span for q in queries if q.span])
    if where:
        builder = builder.where(where)
    if per_recording:
        builder = builder.per_recording(int(per_recording))
    hits = builder.limit(int(k)).to_pandas()
    return with_recordings(hits, db.recordings()).reset_index(drop=True)


# --------------------------------------------------------------------------------------------------
# Labels


def label_names(db) -> list[str]:
    """Label names in use, most recent first."""
    from index.labels import list_labels

    labs = list_labels(db)
    if labs.empty:
        return []
    return labs.sort_values("label_id", ascending=False)["label"].drop_duplicates().tolist()


def window_labels(db, model: str, windows: pd.DataFrame) -> pd.DataFrame:
    """``label`` column for ``windows``: the name of a positive label covering it, else None.

    A window covered by positives of several names shows the most recently created one.
    """
    from index.labels import assign_windows, list_labels

    out = pd.DataFrame({"window_id": windows["window_id"].to_numpy(), "label": None})
    labs = list_labels(db, kind="positive")
    if labs.empty:
        return out
    hits = [
        assign_windows(windows, group).assign(label=name) for name, group in labs.groupby("label")
    ]
    latest = pd.concat(hits).sort_values("label_id").drop_duplicates("window_id", keep="last")
    names = out["window_id"].map(latest.set_index("window_id")["label"])
    return out.assign(label=names.astype(object).where(names.notna(), None))


# --------------------------------------------------------------------------------------------------
# Probes


def train_probe(db, model: str, label: str, weak_weight: float, precision: float) -> int:
    """Train, cross-validate and store a probe for one label; return its probe_id."""
    from index.probe import train_probe as train

    return train(db, model, label, weak_weight=weak_weight, precision=precision).probe_id


def metric_notes(label: str, metrics: dict) -> list[str]:
    """Warnings for the Classify page: an unreachable target precision, folds too uncertain to
    trust (the same lines ``chorus train`` prints)."""
    from index.probe_eval import target_note

    notes = [target_note(label, metrics)]
    if metrics.get("uncertain"):
        notes.append(
            f"These cross-validated figures are too uncertain to trust "
            f"({metrics.get('why_uncertain')}): label windows in more recordings."
        )
    return [n for n in notes if n]


def probe_info(db, probe_id: int) -> dict:
    """label, model, threshold and cross-validated metrics of a stored probe (first label)."""
    from index.probe import load_probe

    rec = load_probe(db, probe_id)
    return {
        "probe_id": rec.probe_id,
        "label": rec.labels[0],
        "model": rec.model,
        "threshold": float(rec.thresholds[0]),
        "metrics": rec.metrics[0],
        "training": rec.training,
    }


def _probe_of(db, probe_id: int, model: str):
    """The stored probe, refused when it was trained on another model's windows."""
    from index.probe import load_probe

    rec = load_probe(db, probe_id)
    if rec.model != model:
        raise ValueError(f"probe {probe_id} was trained on {rec.model!r}, not on {model!r}")
    return rec


def probe_scores(db, model: str, probe_id: int, vectors: np.ndarray) -> np.ndarray:
    """Probability of the probe's (first) label for ``model``'s vectors ``(n, dim)`` -> ``(n,)``."""
    scores = _probe_of(db, probe_id, model).probe.positive_scores(vectors)
    return np.asarray(scores).reshape(len(vectors), -1)[:, 0]


def archive_scores(db, model: str, probe_id: int) -> pd.DataFrame:
    """window_id and score of every window of ``model`` (one chunked matrix product)."""
    from index.classify import score_windows

    rec = _probe_of(db, probe_id, model)
    meta, scores = score_windows(db, model, rec.probe.coef_, rec.probe.intercept_)
    return meta[["window_id"]].assign(score=scores[:, 0])


def review_queue(
    db, model: str, probe_id: int, strategy: str, n: int, label: str | None = None, seed: int = 0
) -> pd.DataFrame:
    """Windows to review next (not yet labelled with ``label``, default the probe's first), as
    card rows with their ``score``."""
    from index.classify import review_queue as queue

    _probe_of(db, probe_id, model)
    q = queue(db, probe_id, strategy=strategy, n=n, label=label, seed=seed)
    rows = windows_by_id(db, model, q["window_id"].tolist())
    return rows.merge(q[["window_id", "score"]], on="window_id", how="left")


def detections_csv(det: pd.DataFrame) -> bytes:
    from index.export import DETECTION_COLUMNS

    return det[[c for c in DETECTION_COLUMNS if c in det.columns]].to_csv(index=False).encode()


def detections_raven(det: pd.DataFrame) -> bytes:
    """A zip of Raven selection tables, one per recording, pointing into the original files."""
    import io
    import tempfile
    import zipfile
    from pathlib import Path

    from index.export import DETECTION_COLUMNS, write_rows

    buf = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="chorus-raven-") as tmp:
        files = write_rows(det, Path(tmp) / "raven", "raven", DETECTION_COLUMNS, ("score",), "")
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in files:
                zf.write(f, f.name)
    return buf.getvalue()


def fmt_metric(value) -> str:
    return "–" if value is None else f"{value:.3f}"
