"""Streamlit-free label writes of the explorer, each returned as a ``LabelChange`` that one click
undoes: bulk labels from the Map and Clusters pages, and the Labels page's edits and deletions.

A change remembers the label ids it added and the rows it removed (a relabel of the same interval
and name replaces the earlier label, so even a plain write may remove rows); undoing deletes the
first and puts the second back with their original ids (``index.labels.restore_labels``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from index.raven import KINDS

SPAN = ["recording_id", "start_s", "end_s"]
FILTER_COLUMNS = ("label", "kind", "source", "path")  # what the Labels page filters by


@dataclass
class LabelChange:
    """One labelling action as it can be undone.

    Attributes
    ----------
    what : str
        What was done, for the feedback line and the undo button ("Stored 12 × positive 'owl'").
    added : list of int
        Label ids the action wrote.
    removed : pandas.DataFrame
        Label rows (``list_labels`` columns) the action deleted or replaced.
    """

    what: str
    added: list[int] = field(default_factory=list)
    removed: pd.DataFrame = field(default_factory=pd.DataFrame)


def write_labels(db, rows: pd.DataFrame, label: str, kind: str, source: str) -> LabelChange:
    """Store ``label`` (``kind``) on the time span of each window in ``rows`` (n rows).

    Earlier labels of the same name on exactly those spans are replaced (the library's rule for a
    correction) and kept in the change, so an undo brings them back.
    """
    from index.labels import add_labels, list_labels

    label = str(label).strip()
    if kind not in KINDS:
        raise ValueError(f"label kind must be one of {KINDS}, got {kind!r}")
    spans = rows[SPAN].astype({"recording_id": "int64", "start_s": float, "end_s": float})
    spans = spans.drop_duplicates()
    before = list_labels(db, label=label)
    replaced = before.merge(spans, on=SPAN)
    ids = add_labels(db, spans.assign(label=label, kind=kind), source=source)
    return LabelChange(
        f"Stored {len(ids)} × {kind} '{label}'", [int(i) for i in ids], replaced.copy()
    )


def remove(db, label_ids: list[int]) -> LabelChange:
    """Delete several labels in one commit; the change holds them for an undo."""
    from index.labels import list_labels, remove_labels

    ids = sorted({int(i) for i in label_ids})
    if not ids:
        raise ValueError("select labels to delete first")
    rows = list_labels(db)
    rows = rows[rows["label_id"].isin(ids)]
    remove_labels(db, label_ids=ids)
    return LabelChange(f"Deleted {len(rows)} label(s)", [], rows.copy())


def edit(
    db, label_ids: list[int], label: str | None = None, kind: str | None = None, source: str = ""
) -> LabelChange:
    """Give several labels a new name and/or kind (same spans and frequency boxes).

    The edited labels are written anew (new ids, ``source``) and the old rows removed, so an
    undo restores them exactly.
    """
    from index.labels import add_labels, list_labels, remove_labels

    ids = sorted({int(i) for i in label_ids})
    if not ids:
        raise ValueError("select labels to edit first")
    name = (label or "").strip() or None
    if name is None and kind is None:
        raise ValueError("give a new label name or kind")
    if kind is not None and kind not in KINDS:
        raise ValueError(f"label kind must be one of {KINDS}, got {kind!r}")
    before = list_labels(db)
    old = before[before["label_id"].isin(ids)]
    new = old[[*SPAN, "low_hz", "high_hz", "label", "kind"]]
    new = new.assign(label=name or new["label"], kind=kind or new["kind"])
    # other labels on those spans with the new name are replaced too: keep them for an undo
    others = before[~before["label_id"].isin(ids)].merge(new[[*SPAN, "label"]], on=[*SPAN, "label"])
    added = add_labels(db, new, source=source)
    left = _existing(db, ids)  # a kind-only edit was already replaced by add_labels
    if left:
        remove_labels(db, label_ids=left)
    change = "→ " + ", ".join(x for x in (f"'{name}'" if name else "", kind or "") if x)
    removed = pd.concat([old, others], ignore_index=True)
    return LabelChange(f"Edited {len(old)} label(s) {change}", [int(i) for i in added], removed)


def _existing(db, ids: list[int]) -> list[int]:
    from index.labels import labels_table

    where = f"label_id IN ({', '.join(str(int(i)) for i in ids)})"
    found = labels_table(db).search().where(where).select(["label_id"]).limit(None).to_arrow()
    return [int(i) for i in found["label_id"].to_pylist()]


def undo(db, change: LabelChange) -> str:
    """Reverse ``change``: delete what it added (those still there), restore what it removed."""
    from index.labels import remove_labels, restore_labels

    still = _existing(db, change.added) if change.added else []
    if still:
        remove_labels(db, label_ids=still)
    restored = restore_labels(db, change.removed)
    return f"Undone: {change.what} ({len(still)} removed, {restored} restored)."


def filter_labels(labels: pd.DataFrame, **chosen: list) -> pd.DataFrame:
    """Rows of ``labels`` whose columns take one of the chosen values (an empty choice: all).

    ``chosen`` keys are among ``FILTER_COLUMNS``, e.g. ``label=["owl"], kind=["positive"]``.
    """
    keep = pd.Series(True, index=labels.index)
    for col, values in chosen.items():
        if col not in FILTER_COLUMNS:
            raise ValueError(f"cannot filter labels by {col!r}; use one of {FILTER_COLUMNS}")
        if values:
            keep &= labels[col].isin(list(values))
    return labels[keep]
