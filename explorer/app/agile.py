"""The agile loop behind the Agile page, Streamlit-free: candidates from a search by example or
from a probe's review queue (the one ``chorus review`` writes), a retrain that stores a probe and
reports its cross-validated figure, and the running count of labels.

A round: label a batch (positive / negative / unsure, or skip), retrain, take the next batch by
margin sampling, top scores or diversity among the likely positives (``index.classify``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from explorer.app import backend
from explorer.commands.review import STRATEGIES  # the app offers `chorus review`'s

TARGET_PRECISION = 0.9


@dataclass
class Round:
    """One retrain of the loop: the probe, the labels it saw and its cross-validated figures."""

    number: int
    probe_id: int
    positive: int
    negative: int
    unsure: int
    average_precision: float | None  # cross-validated (None when CV was impossible)
    ap_low: float | None  # bootstrap interval over recordings, when there is one
    ap_high: float | None
    uncertain: bool
    summary: str  # the line `chorus review` prints


def label_counts(db, label: str) -> dict[str, int]:
    """Labels named ``label`` by kind: {"positive": n, "negative": n, "unsure": n}."""
    from index.labels import list_labels

    counts = list_labels(db, label=label)["kind"].value_counts()
    return {k: int(counts.get(k, 0)) for k in ("positive", "negative", "unsure")}


def _unlabelled(db, model: str, label: str, window_ids: np.ndarray) -> np.ndarray:
    """Mask of ``window_ids`` not yet covered by a label named ``label``."""
    from index.labels import window_labels

    covered = window_labels(db, model, label)["window_id"].to_numpy()
    return ~np.isin(window_ids, covered)


def search_batch(db, model: str, query_ids: list[int], label: str, n: int = 12) -> pd.DataFrame:
    """The ``n`` windows nearest to the query windows (mean of their scores), leaving out the
    queries themselves and windows already labelled ``label``: the first batch of a loop.

    Returns
    -------
    pandas.DataFrame
        Card rows (``backend.windows_by_id`` columns) with ``score``, best first.
    """
    from index.labels import window_labels

    if not query_ids:
        raise ValueError("pick at least one query window")
    covered = len(window_labels(db, model, label))
    hits = db.search(model, [int(i) for i in query_ids]).limit(n + covered + len(query_ids))
    hits = hits.to_pandas()
    ids = hits["window_id"].to_numpy(np.int64)
    keep = _unlabelled(db, model, label, ids) & ~np.isin(ids, query_ids)
    hits = hits[keep].head(n)
    rows = backend.windows_by_id(db, model, hits["window_id"].tolist())
    return rows.merge(hits[["window_id", "score"]], on="window_id", how="left")


def probe_batch(
    db, model: str, probe_id: int, label: str, strategy: str = "margin", n: int = 12, seed: int = 0
) -> pd.DataFrame:
    """The next ``n`` windows to label for a probe: ``index.classify.review_queue``, the queue
    ``chorus review`` writes (windows labelled ``label`` left out), as card rows with ``score``."""
    if strategy not in STRATEGIES:  # the app offers `chorus review`'s strategies only
        raise ValueError(f"unknown strategy {strategy!r}; choose one of {STRATEGIES}")
    return backend.review_queue(db, model, probe_id, strategy, n, label=label, seed=seed)


def retrain(db, model: str, label: str, number: int) -> Round:
    """Train, cross-validate and store a probe for ``label`` on every label so far.

    Raises ValueError (``index.probe.TooFewExamples``) with what to label next when there are
    too few examples; nothing is stored then.
    """
    from explorer.commands.review import round_summary
    from index.labels import list_labels
    from index.probe import WEAK_WEIGHT, train_probe

    rec = train_probe(db, model, label, weak_weight=WEAK_WEIGHT, precision=TARGET_PRECISION)
    m = rec.metrics[0]
    ci = m.get("average_precision_ci") or (None, None)
    counts = label_counts(db, label)
    return Round(
        number=number,
        probe_id=rec.probe_id,
        positive=counts["positive"],
        negative=counts["negative"],
        unsure=counts["unsure"],
        average_precision=m.get("average_precision"),
        ap_low=ci[0],
        ap_high=ci[1],
        uncertain=bool(m.get("uncertain") or m.get("cv_error")),
        summary=round_summary(rec, label, list_labels(db, label=label)),
    )


def rounds_table(rounds: list[Round]) -> pd.DataFrame:
    """One row per round for the page's table and chart."""
    cols = ["number", "probe_id", "positive", "negative", "unsure", "average_precision"]
    cols += ["ap_low", "ap_high", "uncertain"]
    return pd.DataFrame([{c: getattr(r, c) for c in cols} for r in rounds], columns=cols)


def recording_windows(db, model: str, recording_id: int) -> pd.DataFrame:
    """window_id, start_s, end_s of one recording's windows, in time order (query pickers)."""
    snap = db.snapshot(model)
    mine = snap.recording_id == int(recording_id)
    df = pd.DataFrame(
        {
            "window_id": snap.window_id[mine],
            "start_s": snap.start_s[mine],
            "end_s": snap.end_s[mine],
        }
    )
    return df.sort_values(["start_s", "window_id"], ignore_index=True)


def hits_batch(db, model: str, hits: pd.DataFrame, label: str, n: int = 12) -> pd.DataFrame:
    """The first ``n`` search hits not yet labelled ``label`` (a batch from the Search page's
    query: ``backend.run_search`` has already left out the query's own windows)."""
    ids = hits["window_id"].to_numpy(np.int64)
    return hits[_unlabelled(db, model, label, ids)].head(n).reset_index(drop=True)


def probes_for(db, model: str, label: str) -> list[int]:
    """Stored probes of ``model`` whose first label is ``label``, newest first."""
    from index.probe import list_probes

    probes = list_probes(db)
    first = probes["labels"].str.split(",").str[0]
    mine = probes[(probes["model"] == model) & (first == label)]
    return [int(i) for i in mine["probe_id"][::-1]]
