"""Labels: time intervals of recordings, and which windows they cover.

Labels are stored as intervals (``labels`` table), never as window ids, so they survive
re-embedding with another model or hop. ``window_labels`` maps them onto one model's windows: a
window carries a label when their overlap covers at least ``min_overlap`` of the window, or of the
label when the label is shorter than the window (a 1-s call inside a 5-s window labels it).
When a window overlaps several labels of one name, positive beats unsure beats negative, and among
labels of one kind the latest is reported. A label on exactly the interval of an earlier one of the
same name replaces it: that is how a correction (a mis-click in the explorer) is written.
"""

from __future__ import annotations

import datetime as _dt
import getpass
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from index.raven import KINDS, read_annotations
from index.roots import match_recording, recording_paths

LABELS_TABLE = "labels"
MIN_OVERLAP = 0.5  # fraction of the window (or of a shorter label) that must be covered
_KIND_RANK = {"negative": 0, "unsure": 1, "positive": 2}  # who wins when labels disagree
_SAME_LABEL = ("recording_id", "start_s", "end_s", "label")  # a relabel of these replaces
_KIND_RANK_SPAN = 2**40  # more labels than any recording will carry

LABELS_SCHEMA = pa.schema(
    [
        pa.field("label_id", pa.int64(), nullable=False),
        pa.field("recording_id", pa.int64(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),  # seconds from file start
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("low_hz", pa.float64()),  # optional frequency box
        pa.field("high_hz", pa.float64()),
        pa.field("label", pa.string(), nullable=False),
        pa.field("kind", pa.string(), nullable=False),  # positive | negative | unsure
        pa.field("source", pa.string(), nullable=False),  # user:<name> | probe:<id> | import:<file>
        pa.field("created_at", pa.timestamp("us"), nullable=False),
    ]
)


def labels_table(db):
    """The LanceDB ``labels`` table (created empty on first use)."""
    return db.open_table(LABELS_TABLE, LABELS_SCHEMA)


def default_source() -> str:
    """``user:<login name>`` for labels typed by a person."""
    try:
        return f"user:{getpass.getuser()}"
    except (KeyError, OSError):
        return "user:unknown"


def add_labels(db, labels: pd.DataFrame, source: str | None = None) -> np.ndarray:
    """Insert several labels in one commit; return their label ids (n,).

    Parameters
    ----------
    labels : pandas.DataFrame
        recording_id, start_s, end_s, label; optional kind (default "positive"), low_hz,
        high_hz, source (default ``source`` or ``user:<login>``).
    """
    df = labels.reset_index(drop=True)
    n = len(df)
    if n == 0:
        return np.empty(0, np.int64)
    kind = df["kind"] if "kind" in df else pd.Series(["positive"] * n)
    bad_kind = sorted(set(kind) - set(KINDS))
    if bad_kind:
        raise ValueError(f"label kind must be one of {KINDS}, got {bad_kind}")
    start, end = df["start_s"].astype(float).to_numpy(), df["end_s"].astype(float).to_numpy()
    if not (np.isfinite(start).all() and np.isfinite(end).all()) or (start < 0).any():
        raise ValueError("label times must be finite and non-negative")
    if (end <= start).any():
        i = int(np.flatnonzero(end <= start)[0])
        raise ValueError(f"label end {end[i]} is not after start {start[i]}")
    low, high = _optional(df, "low_hz", n), _optional(df, "high_hz", n)
    _check_band(low.to_numpy(zero_copy_only=False), high.to_numpy(zero_copy_only=False))
    recs = db.recordings()
    missing = sorted(set(df["recording_id"].astype(int)) - set(recs["recording_id"].tolist()))
    if missing:
        raise KeyError(f"no recording with id {missing[0]}")
    late = _first_late(recs, df["recording_id"].to_numpy(), start)
    if late is not None:  # such a label can never cover a window: most likely the wrong file
        i, known_end = late
        raise ValueError(
            f"label at {start[i]:g}-{end[i]:g} s starts after the end of recording "
            f"{int(df['recording_id'].iloc[i])} ({known_end:g} s)"
        )
    names = df["label"].astype(str).str.strip()
    if df["label"].isna().any() or (names == "").any():
        raise ValueError("label names must not be empty")
    table = labels_table(db)
    old = table.search().select(list(_SAME_LABEL) + ["label_id"]).limit(None).to_pandas()
    floor = int(old["label_id"].max()) + 1 if len(old) else 1
    ids = db.reserve_ids("next_label_id", "all", floor, n) + np.arange(n, dtype=np.int64)
    src = df["source"] if "source" in df else pd.Series([source or default_source()] * n)
    now = _dt.datetime.now().replace(microsecond=0)
    table.add(
        pa.table(
            {
                "label_id": ids,
                "recording_id": df["recording_id"].astype("int64").to_numpy(),
                "start_s": start,
                "end_s": end,
                "low_hz": low,
                "high_hz": high,
                "label": names.to_numpy(),
                "kind": kind.to_numpy(),
                "source": src.astype(str).to_numpy(),
                "created_at": [now] * n,
            },
            schema=LABELS_SCHEMA,
        )
    )
    # the same interval and name labelled again replaces the earlier label (a correction); added
    # first, deleted after: a crash in between leaves both, and the newer one still wins
    new = pd.DataFrame({"recording_id": df["recording_id"].astype("int64"), "start_s": start})
    new = new.assign(end_s=end, label=names.to_numpy())
    replaced = old.merge(new.drop_duplicates(), on=list(_SAME_LABEL))["label_id"]
    if len(replaced):
        table.delete(f"label_id IN ({', '.join(str(int(i)) for i in replaced)})")
    return ids


def _check_band(low: np.ndarray, high: np.ndarray) -> None:
    """Frequency bounds (NaN: not given) must be non-negative, low below high."""
    if (low < 0).any() or (high < 0).any():
        raise ValueError("label frequencies must be non-negative")
    bad = np.flatnonzero(low >= high)  # comparisons with NaN are False
    if len(bad):
        i = int(bad[0])
        raise ValueError(f"label low_hz {low[i]:g} is not below high_hz {high[i]:g}")


def _optional(df: pd.DataFrame, col: str, n: int) -> pa.Array:
    if col not in df:
        return pa.nulls(n, pa.float64())
    return pa.array(df[col].astype(float).to_numpy(), pa.float64(), from_pandas=True)


def add_label(
    db,
    recording: int | str | os.PathLike,
    start_s: float,
    end_s: float,
    label: str,
    kind: str = "positive",
    low_hz: float | None = None,
    high_hz: float | None = None,
    source: str | None = None,
) -> int:
    """Label one interval of a recording (id, or file path resolved with ``resolve_recording``).

    Returns the new label_id.
    """
    rid = recording if isinstance(recording, int | np.integer) else resolve_recording(db, recording)
    row = {
        "recording_id": [int(rid)],
        "start_s": [start_s],
        "end_s": [end_s],
        "label": [label],
        "kind": [kind],
        "low_hz": [np.nan if low_hz is None else low_hz],
        "high_hz": [np.nan if high_hz is None else high_hz],
    }
    return int(add_labels(db, pd.DataFrame(row), source=source)[0])


def list_labels(
    db, label: str | None = None, kind: str | None = None, recording_id: int | None = None
) -> pd.DataFrame:
    """Labels (optionally filtered), sorted by label_id, with the recording's path and abs_path."""
    clauses = []
    if label is not None:  # names are stored stripped
        clauses.append(f"label = {_sql_str(label.strip())}")
    if kind is not None:
        clauses.append(f"kind = {_sql_str(kind)}")
    if recording_id is not None:
        clauses.append(f"recording_id = {int(recording_id)}")
    query = labels_table(db).search().limit(None)
    if clauses:
        query = query.where(" AND ".join(clauses))
    df = query.to_arrow().to_pandas()
    recs = db.recordings()[["recording_id", "path", "abs_path", "site", "sample_rate"]]
    df = df.merge(recs, on="recording_id", how="left")
    return df.sort_values("label_id", ignore_index=True)


def remove_label(db, label_id: int) -> None:
    """Delete one label; KeyError if there is none with that id."""
    remove_labels(db, label_ids=[label_id])


def remove_labels(
    db,
    label_ids: list[int] | None = None,
    label: str | None = None,
    kind: str | None = None,
    source: str | None = None,
    recording_id: int | None = None,
) -> list[int]:
    """Delete several labels in one commit: the given ids, or those matching every filter.

    Parameters
    ----------
    label_ids : ids to delete (KeyError naming those that do not exist; nothing is deleted then).
    label, kind, source, recording_id : filters, ANDed (and ANDed with ``label_ids`` if given).

    Returns
    -------
    list of int
        The deleted label ids, sorted.
    """
    if not label_ids and all(x is None for x in (label, kind, source, recording_id)):
        raise ValueError("say which labels to remove: label ids or a filter (label, kind, ...)")
    clauses = []
    if label_ids:
        clauses.append(f"label_id IN ({', '.join(str(int(i)) for i in label_ids)})")
    for column, value in (("label", label), ("kind", kind), ("source", source)):
        if value is not None:
            clauses.append(f"{column} = {_sql_str(value.strip())}")
    if recording_id is not None:
        clauses.append(f"recording_id = {int(recording_id)}")
    where = " AND ".join(clauses)
    table = labels_table(db)
    found = table.search().where(where).select(["label_id"]).limit(None).to_arrow()
    ids = sorted(int(i) for i in found["label_id"].to_pylist())
    missing = sorted(set(int(i) for i in label_ids or []) - set(ids))
    if missing:
        raise KeyError(f"no label with id {', '.join(map(str, missing))}")
    if ids:
        table.delete(where)
    return ids


def restore_labels(db, rows: pd.DataFrame) -> int:
    """Put removed labels back exactly as they were (ids, source, created_at): the undo of a
    removal or of a relabel that replaced them.

    Parameters
    ----------
    rows : pandas.DataFrame
        Rows of ``list_labels`` (at least the ``LABELS_SCHEMA`` columns). Ids still in the table
        are skipped, so undoing twice restores once.

    Returns
    -------
    int
        How many labels were put back.
    """
    if rows is None or rows.empty:
        return 0
    table = labels_table(db)
    ids = ", ".join(str(int(i)) for i in rows["label_id"])
    present = table.search().where(f"label_id IN ({ids})").select(["label_id"]).limit(None)
    taken = set(present.to_arrow()["label_id"].to_pylist())
    back = rows[~rows["label_id"].astype(int).isin(taken)]
    if back.empty:
        return 0
    cols = {f.name: back[f.name] if f.name in back else None for f in LABELS_SCHEMA}
    table.add(pa.Table.from_pandas(pd.DataFrame(cols), schema=LABELS_SCHEMA, preserve_index=False))
    return len(back)


def _sql_str(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


# -- resolving file names to recordings ------------------------------------------------------
def resolve_recording(db, file: str | os.PathLike, recordings: pd.DataFrame | None = None) -> int:
    """recording_id of ``file`` (see :func:`index.roots.match_recording`) among ``recordings``
    (default: the database's)."""
    if recordings is None:
        return match_recording(*recording_paths(db), file)
    cols = (recordings[c].tolist() for c in ("recording_id", "audio_root", "path"))
    return match_recording(*cols, file)


def import_annotations(
    db,
    path: str | os.PathLike,
    label_column: str | None = None,
    default_label: str | None = None,
    kind: str | None = None,
    min_confidence: float | None = None,
) -> np.ndarray:
    """Import a Raven selection table or CSV as labels (source ``import:<file name>``).

    Each row's ``Begin Path`` (or ``Begin File`` / file column) is resolved to a recording; a table
    without one names its recording itself, as BirdNET-Analyzer's per-file outputs do
    (``<recording>.BirdNET.selection.table.txt``, ``<recording>.BirdNET.results.csv``).
    ``kind`` overrides the table's kinds (default: the ``kind`` column, else positive);
    ``min_confidence`` leaves out rows of a ``Confidence`` column below it.
    Raises ValueError naming the line of a row that is malformed or points to an unknown file;
    nothing is imported then.
    """
    table = read_annotations(
        path, label_column=label_column, default_label=default_label, min_confidence=min_confidence
    )
    recs = db.recordings()
    own = _recording_named_by_table(Path(path).name, recs)
    ids = []
    for row in table.itertuples(index=False):
        ref = row.path or row.file
        if not ref and own is None:
            raise ValueError(
                f"{Path(path).name}: line {row.line}: no file column to say which recording"
            )
        try:
            rid = _resolve_cached(db, ref, row.file, recs) if ref else own
        except KeyError as err:
            raise ValueError(f"{Path(path).name}: line {row.line}: {err.args[0]}") from None
        ids.append(rid)
    late = _first_late(recs, ids, table["start_s"].to_numpy())
    if late is not None:
        row = table.iloc[late[0]]
        rec_path = recs.set_index("recording_id").loc[ids[late[0]], "path"]
        raise ValueError(
            f"{Path(path).name}: line {row['line']}: {row['start_s']:g}-{row['end_s']:g} s starts "
            f"after the end of {rec_path} ({late[1]:g} s)"
        )
    table = table.assign(recording_id=ids)
    if kind is not None:
        table = table.assign(kind=kind)
    return add_labels(
        db,
        table.drop(columns=["file", "path", "line", "confidence"]),
        source=f"import:{Path(path).name}",
    )


def _first_late(recs: pd.DataFrame, rids, starts) -> tuple[int, float] | None:
    """(row, recorded duration in s) of the first label that starts after its recording's end, or
    None (the duration is what decoded, stored at ingest)."""
    rids, starts = np.asarray(rids, np.int64), np.asarray(starts, float)
    known = recs.set_index("recording_id")["duration_s"].astype(float)
    end = pd.Series(rids).map(known).fillna(np.inf).to_numpy(dtype=float)
    late = np.flatnonzero(starts >= end)
    return (int(late[0]), float(end[late[0]])) if len(late) else None


def _recording_named_by_table(table_name: str, recs: pd.DataFrame) -> int | None:
    """The one recording whose file stem begins a BirdNET-Analyzer output's name, or None."""
    if ".BirdNET." not in table_name:
        return None
    stem = table_name.split(".BirdNET.")[0]
    hit = recs[recs["path"].map(lambda p: Path(p).stem) == stem]
    return int(hit["recording_id"].iloc[0]) if len(hit) == 1 else None


def _resolve_cached(db, ref: str, file: str | None, recs: pd.DataFrame) -> int:
    try:
        return resolve_recording(db, ref, recs)
    except KeyError:
        if file and file != ref:  # Begin Path from another machine: try Begin File
            return resolve_recording(db, file, recs)
        raise


# -- labels onto windows ---------------------------------------------------------------------
def assign_windows(
    windows: pd.DataFrame, labels: pd.DataFrame, min_overlap: float = MIN_OVERLAP
) -> pd.DataFrame:
    """Which windows the labels cover (pure function).

    Parameters
    ----------
    windows : window_id, recording_id, start_s, end_s
    labels : label_id, recording_id, start_s, end_s, kind
    min_overlap : fraction of min(window length, label length) the overlap must reach

    Returns
    -------
    pandas.DataFrame
        One row per covered window: window_id, recording_id, start_s, end_s, kind, label_id
        (the winning label: positive > unsure > negative), target (1.0, 0.0, NaN for unsure).
    """
    if not 0 < min_overlap <= 1:
        raise ValueError(f"min_overlap must be in (0, 1], got {min_overlap}")
    # a later label on the very same interval (and name) corrects an earlier one
    same = [c for c in _SAME_LABEL if c in labels]
    labels = labels.sort_values("label_id").drop_duplicates(same, keep="last")
    out = []
    for rid, labs in labels.groupby("recording_id"):
        win = windows[windows["recording_id"] == rid]
        if win.empty:
            continue
        ws, we = win["start_s"].to_numpy()[:, None], win["end_s"].to_numpy()[:, None]  # (W, 1)
        ls, le = labs["start_s"].to_numpy()[None], labs["end_s"].to_numpy()[None]  # (1, L)
        overlap = np.minimum(we, le) - np.maximum(ws, ls)  # (W, L) seconds
        need = min_overlap * np.minimum(we - ws, le - ls)
        covers = (overlap > 0) & (overlap >= need - 1e-9)
        # kind first, then recency (labs is in label_id order): positions break the ties
        order = _KIND_RANK_SPAN * labs["kind"].map(_KIND_RANK).to_numpy() + np.arange(len(labs))
        rank = np.where(covers, order[None], -1)  # (W, L)
        best = rank.argmax(1)
        hit = rank.max(1) >= 0
        if not hit.any():
            continue
        chosen = labs.iloc[best[hit]]
        out.append(
            win[hit][["window_id", "recording_id", "start_s", "end_s"]].assign(
                kind=chosen["kind"].to_numpy(), label_id=chosen["label_id"].to_numpy()
            )
        )
    cols = ["window_id", "recording_id", "start_s", "end_s", "kind", "label_id", "target"]
    if not out:
        return pd.DataFrame(columns=cols)
    df = pd.concat(out, ignore_index=True)
    df["target"] = df["kind"].map({"positive": 1.0, "negative": 0.0, "unsure": np.nan})
    return df.sort_values("window_id", ignore_index=True)[cols]


def window_labels(db, model: str, label: str, min_overlap: float = MIN_OVERLAP) -> pd.DataFrame:
    """Windows of ``model`` covered by labels named ``label``; see ``assign_windows``."""
    labs = list_labels(db, label=label)
    snap = db.snapshot(model)
    wanted = np.isin(snap.recording_id, labs["recording_id"].unique())
    windows = pd.DataFrame(
        {
            "window_id": snap.window_id[wanted],
            "recording_id": snap.recording_id[wanted],
            "start_s": snap.start_s[wanted],
            "end_s": snap.end_s[wanted],
        }
    )
    return assign_windows(windows, labs, min_overlap)
