"""Scoring an archive with a probe, detections, and review queues.

Scoring is a chunked matrix product over the model's windows; ``score_windows`` takes an
optional ``scorer`` so a caller with a GPU (the CLI, via torch) can supply its own matmul while
``index`` itself stays NumPy-only. Detections are windows above the threshold, merged per
recording where they overlap, stored in the ``detections`` table keyed by probe id so the export
verb and the app read the same rows. Review queues pick the next windows to label: the top
scores, the most uncertain (closest to the threshold) and diverse picks (k-center greedy).
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa

from index.labels import MIN_OVERLAP, window_labels
from index.probe import ProbeRecord, load_probe
from index.probe_eval import ThresholdChoice

DETECTIONS_TABLE = "detections"
BATCH_ROWS = 65_536  # windows per scoring chunk (~400 MB of 1536-d float32)
REVIEW_POOL = 2000  # top-scoring windows the diverse queue chooses from
STRATEGIES = ("top", "uncertain", "margin", "diverse")  # "margin" is "uncertain" by its other name

DETECTIONS_SCHEMA = pa.schema(
    [
        pa.field("probe_id", pa.int64(), nullable=False),
        pa.field("label", pa.string(), nullable=False),
        pa.field("recording_id", pa.int64(), nullable=False),
        pa.field("start_s", pa.float64(), nullable=False),
        pa.field("end_s", pa.float64(), nullable=False),
        pa.field("score", pa.float32(), nullable=False),  # max probability over merged windows
        pa.field("n_windows", pa.int32(), nullable=False),
        pa.field("threshold", pa.float64(), nullable=False),
        pa.field("created_at", pa.timestamp("us"), nullable=False),
    ]
)

Scorer = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def numpy_scorer(X: np.ndarray, coef: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """Logits (b, L) of vectors X (b, d) for coef (L, d) float32 and bias (L,)."""
    return X @ coef.T + bias.astype(np.float32)


def score_windows(
    db,
    model: str,
    coef: np.ndarray,
    bias: np.ndarray,
    scorer: Scorer | None = None,
    batch_rows: int = BATCH_ROWS,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Probabilities of every window of ``model``.

    Returns
    -------
    meta : pandas.DataFrame
        window_id, recording_id, start_s, end_s (snapshot order).
    scores : np.ndarray
        (n, L) float32 probabilities aligned with ``meta``.
    """
    snap = db.snapshot(model)
    coef = np.ascontiguousarray(coef, dtype=np.float32)  # (L, d)
    if coef.shape[1] != snap.dim:
        raise ValueError(f"probe expects {coef.shape[1]}-d vectors, {model!r} has {snap.dim}-d")
    scorer = scorer or numpy_scorer
    scores = np.zeros((len(snap), len(coef)), dtype=np.float32)
    for ids, X in snap.iter_vectors(batch_rows):
        logits = np.asarray(scorer(X, coef, np.asarray(bias)), dtype=np.float32)  # (b, L)
        scores[snap.offsets(ids)] = 1.0 / (1.0 + np.exp(-logits))
    meta = pd.DataFrame(
        {
            "window_id": snap.window_id,
            "recording_id": snap.recording_id,
            "start_s": snap.start_s,
            "end_s": snap.end_s,
        }
    )
    return meta, scores


def merge_detections(df: pd.DataFrame, gap_s: float = 0.0) -> pd.DataFrame:
    """Merge overlapping (or closer than ``gap_s``) detections per recording and label.

    Parameters
    ----------
    df : recording_id, start_s, end_s, score, optional label (windows above threshold)

    Returns
    -------
    pandas.DataFrame
        label, recording_id, start_s, end_s, score (max of the merged), n_windows.
    """
    if "label" not in df:
        df = df.assign(label="")
    cols = ["label", "recording_id", "start_s", "end_s", "score", "n_windows"]
    if df.empty:
        return pd.DataFrame(columns=cols)
    df = df.sort_values(["label", "recording_id", "start_s"], ignore_index=True)
    start, end = df["start_s"].to_numpy(), df["end_s"].to_numpy()
    same = (df["label"].to_numpy()[1:] == df["label"].to_numpy()[:-1]) & (
        df["recording_id"].to_numpy()[1:] == df["recording_id"].to_numpy()[:-1]
    )
    # A row starts a new event unless it touches the running end of the previous event.
    run_end = pd.Series(end).groupby((~np.r_[False, same]).cumsum()).cummax().to_numpy()
    new = np.r_[True, ~same | (start[1:] > run_end[:-1] + gap_s)]
    event = np.cumsum(new) - 1
    out = df.groupby(event).agg(
        label=("label", "first"),
        recording_id=("recording_id", "first"),
        start_s=("start_s", "min"),
        end_s=("end_s", "max"),
        score=("score", "max"),
        n_windows=("score", "size"),
    )
    return out.reset_index(drop=True)[cols]


def classify(
    db,
    probe_id: int,
    threshold: float | None = None,
    precision: float | None = None,
    scorer: Scorer | None = None,
    merge: bool = True,
    store: bool = True,
) -> pd.DataFrame:
    """Score the archive with a stored probe and keep windows at or above the threshold.

    The threshold is ``threshold`` if given, else the one reaching ``precision`` on the probe's
    cross-validated curve, else the probe's stored threshold (per label).

    Returns
    -------
    pandas.DataFrame
        probe_id, label, recording_id, path, start_s, end_s, score, n_windows, threshold —
        also stored in the ``detections`` table (replacing that probe's previous detections).
    """
    rec = load_probe(db, probe_id)
    thresholds = [c.threshold for c in choose_thresholds(rec, threshold, precision)]
    meta, scores = score_windows(db, rec.model, rec.probe.coef_, rec.probe.intercept_, scorer)
    parts = []
    for j, name in enumerate(rec.labels):
        hit = scores[:, j] >= thresholds[j]
        d = meta[hit].assign(score=scores[hit, j], label=name)
        d = merge_detections(d) if merge else d.assign(n_windows=1).drop(columns="window_id")
        parts.append(d.assign(threshold=thresholds[j]))
    det = pd.concat(parts, ignore_index=True).assign(probe_id=rec.probe_id)
    if store:
        _store_detections(db, rec.probe_id, det)
    return _with_paths(db, det)


def choose_thresholds(
    rec: ProbeRecord, threshold: float | None = None, precision: float | None = None
) -> list[ThresholdChoice]:
    """Each label's threshold: ``threshold`` if given, else the one for ``precision`` on the
    probe's cross-validated curve (``reached`` False when no threshold gets there), else the
    probe's stored threshold."""
    if threshold is not None:
        if not 0 <= threshold <= 1:
            raise ValueError(f"threshold is a probability in [0, 1], got {threshold}")
        return [ThresholdChoice(float(threshold))] * len(rec.labels)
    if precision is not None:
        if not 0 < precision <= 1:
            raise ValueError(f"precision must be in (0, 1], got {precision}")
        return [rec.threshold_choice(precision, j) for j in range(len(rec.labels))]
    return [ThresholdChoice(float(t)) for t in rec.thresholds]


def _store_detections(db, probe_id: int, det: pd.DataFrame) -> None:
    # the new set goes in first and the old one out after, and readers keep only the newest
    # created_at of a probe: a reader never sees an empty or a mixed set in between
    table = db.open_table(DETECTIONS_TABLE, DETECTIONS_SCHEMA)
    now = _dt.datetime.now()
    rows = det.assign(created_at=now)[DETECTIONS_SCHEMA.names]
    if len(rows):
        table.add(pa.Table.from_pandas(rows, schema=DETECTIONS_SCHEMA, preserve_index=False))
    stamp = now.isoformat(sep=" ", timespec="microseconds")
    table.delete(f"probe_id = {int(probe_id)} AND created_at < TIMESTAMP '{stamp}'")


def load_detections(db, probe_id: int) -> pd.DataFrame:
    """Stored detections of a probe (with recording path/abs_path); KeyError if never classified."""
    if DETECTIONS_TABLE not in db.table_names():
        raise KeyError(
            f"no detections for probe {probe_id}: run `chorus classify --probe {probe_id}`"
        )
    table = db.open_table(DETECTIONS_TABLE)
    df = table.search().where(f"probe_id = {int(probe_id)}").limit(None).to_arrow().to_pandas()
    df = df[df["created_at"] == df["created_at"].max()]  # the newest run (see _store_detections)
    if df.empty:
        load_probe(db, probe_id)  # KeyError for an unknown probe; else it found nothing
    return _with_paths(db, df.drop(columns=["created_at"]))


def _with_paths(db, det: pd.DataFrame) -> pd.DataFrame:
    recs = db.recordings()[["recording_id", "path", "abs_path", "sample_rate"]]
    det = det.merge(recs, on="recording_id", how="left")
    return det.sort_values(["label", "recording_id", "start_s"], ignore_index=True)


# -- review queues ---------------------------------------------------------------------------
def pick_top(scores: np.ndarray, n: int) -> np.ndarray:
    """Indices of the ``n`` highest scores, best first."""
    n = min(n, len(scores))
    part = np.argpartition(-scores, n - 1)[:n] if n else np.empty(0, int)
    return part[np.argsort(-scores[part], kind="stable")]


def pick_uncertain(scores: np.ndarray, threshold: float, n: int) -> np.ndarray:
    """Indices of the ``n`` scores closest to ``threshold``, closest first."""
    return pick_top(-np.abs(scores - threshold), n)


def k_center_greedy(
    X: np.ndarray, n: int, centers: np.ndarray | None = None, seed: int = 0
) -> np.ndarray:
    """Greedy k-center picks: each next row is the one farthest from all chosen (and ``centers``).

    Parameters
    ----------
    X : (m, d) candidates; centers : (c, d) already-covered points (e.g. labelled windows).

    Returns
    -------
    np.ndarray
        Up to ``n`` row indices into X, in pick order.
    """
    m = len(X)
    n = min(n, m)
    if n == 0:
        return np.empty(0, int)
    dist = np.full(m, np.inf)
    for c in [] if centers is None else centers:
        dist = np.minimum(dist, ((X - c) ** 2).sum(1))
    picks = []
    first = int(np.random.default_rng(seed).integers(m)) if np.isinf(dist).all() else None
    for _ in range(n):
        i = first if first is not None else int(np.argmax(dist))
        first = None
        picks.append(i)
        dist = np.minimum(dist, ((X - X[i]) ** 2).sum(1))
        dist[i] = -1.0
    return np.asarray(picks)


def review_queue(
    db,
    probe_id: int,
    strategy: str = "top",
    n: int = 10,
    label: str | None = None,
    pool: int = REVIEW_POOL,
    min_overlap: float = MIN_OVERLAP,
    scorer: Scorer | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Windows to label next, excluding windows already covered by a label of that name.

    Parameters
    ----------
    strategy : "top" (highest scores), "uncertain" or "margin" (closest to the probe's
        threshold: margin sampling) or "diverse" (k-center greedy over the embeddings of the
        likely positives, at most ``pool`` of the top scores at or above the threshold, topped up
        with the next best only when fewer than ``n``; it starts from the labelled positives so
        picks differ from what is already known).
    label : which of the probe's labels (default: its first).

    Returns
    -------
    pandas.DataFrame
        window_id, recording_id, path, abs_path, start_s, end_s, score, in queue order.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown review strategy {strategy!r}; choose one of {STRATEGIES}")
    rec = load_probe(db, probe_id)
    j = rec.label_index(label)
    meta, scores = score_windows(db, rec.model, rec.probe.coef_, rec.probe.intercept_, scorer)
    covered = window_labels(db, rec.model, rec.labels[j], min_overlap)
    free = ~meta["window_id"].isin(covered["window_id"]).to_numpy()
    cand = np.flatnonzero(free)
    s = scores[cand, j]
    if strategy == "top":
        rows = cand[pick_top(s, n)]
    elif strategy in ("uncertain", "margin"):
        rows = cand[pick_uncertain(s, rec.thresholds[j], n)]
    else:
        # among likely positives: the top of a pool drawn from every window is mostly windows
        # scoring ~0, and their diversity is that of the background
        likely = int((s >= rec.thresholds[j]).sum())
        top = cand[pick_top(s, min(pool, max(n, likely)))]
        _, X = db.vectors(rec.model, meta["window_id"].to_numpy()[top])
        pos = covered.loc[covered["kind"] == "positive", "window_id"].to_numpy()
        known = db.vectors(rec.model, pos)[1] if len(pos) else None
        rows = top[k_center_greedy(X, n, known, seed)]
    out = meta.iloc[rows].assign(score=scores[rows, j]).reset_index(drop=True)
    recs = db.recordings()[["recording_id", "path", "abs_path"]]
    return out.merge(recs, on="recording_id", how="left")
