"""Streamlit-free logic of the Density and Activity pages: which probes to offer, the order in
which the validation sample of ``index.density`` is shown, the batch of window cards, and the
site × date / site × hour tables of ``index.activity`` from one scoring of the archive.

Validations are ordinary labels: the probe's label, positive or negative (unsure passes a window
over), on the window's own span, so ``chorus density`` counts them exactly as the page does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from explorer.app.backend import windows_by_id

BATCH = 9  # windows per validation batch (three rows of cards)
CHOICES = ("positive", "negative", "unsure", "skip")  # what a person answers for a window
GROUP_BY = ("site", "week")  # the density groups offered first (as `chorus density`)


def model_probes(db, model: str) -> pd.DataFrame:
    """Stored probes of ``model``, newest first: probe_id, labels, threshold, average_precision."""
    from index.probe import list_probes

    probes = list_probes(db)
    return probes[probes["model"] == model].iloc[::-1].reset_index(drop=True)


def probe_names(probes: pd.DataFrame) -> dict[int, str]:
    """Names like "probe 3: 'hoot' (CV AP 0.91)" of the probes of ``model_probes``, by id."""
    out = {}
    for row in probes.itertuples():
        ap = row.average_precision
        ap = "" if ap is None or ap != ap else f" (CV AP {ap:.2f})"
        out[int(row.probe_id)] = f"probe {int(row.probe_id)}: '{row.labels.split(',')[0]}'{ap}"
    return out


def group_name(todo: pd.DataFrame, by: Sequence[str]) -> pd.Series:
    """The group of each row as one string, e.g. "ridge · 2024-W24"."""
    if todo.empty:
        return pd.Series([], dtype=object, index=todo.index)
    return todo[list(by)].astype(str).agg(" · ".join, axis=1)


def validation_order(todo: pd.DataFrame, by: Sequence[str]) -> pd.DataFrame:
    """The windows still to validate, in the order they are shown: one window of every group's
    every stratum, then a second of each, and so on — a group's density needs a validation in
    each of its strata before it has a value at all.

    ``todo`` is ``DensityResult.todo`` (in sample order within each group and stratum)."""
    keys = [*by, "stratum"]
    rank = todo.groupby(keys, sort=False).cumcount()
    ordered = todo.assign(_rank=rank).sort_values(["_rank", *keys], kind="stable")
    return ordered.drop(columns="_rank").reset_index(drop=True)


def next_batch(
    db,
    model: str,
    todo: pd.DataFrame,
    by: Sequence[str],
    n: int = BATCH,
    passed: Sequence[int] = (),
) -> pd.DataFrame:
    """The next ``n`` windows to validate as card rows (``backend.windows_by_id`` columns plus
    score, stratum and ``group``); windows ``passed`` (skipped in this session) come last."""
    order = validation_order(todo, by)
    later = order["window_id"].isin([int(w) for w in passed]).to_numpy()
    order = pd.concat([order[~later], order[later]]).head(int(n))
    info = order[["window_id", "score", "stratum"]].assign(group=group_name(order, by))
    rows = windows_by_id(db, model, order["window_id"].tolist())
    return rows.merge(info, on="window_id", how="left")


def validated_in_batch(batch: pd.DataFrame, todo: pd.DataFrame) -> np.ndarray:
    """Mask (len(batch),) of the batch's windows that are no longer waiting for a validation."""
    return ~batch["window_id"].isin(todo["window_id"]).to_numpy()


def shown_mark(choice: str | None, still_todo: bool) -> str | None:
    """What a card says it was marked: a positive or negative mark whose label has since been
    undone (the window waits again) is not shown."""
    if choice in ("positive", "negative") and still_todo:
        return None
    return choice


def density_display(table: pd.DataFrame, level: float) -> pd.DataFrame:
    """The density table as shown (as ``chorus density`` prints it): group columns, windows,
    density and the interval's ends to 3 decimals ("—" while a stratum has no validation),
    positives and validations done of needed."""
    out = table.drop(columns=["validated", "needed"])
    for col in ("density", "low", "high"):
        out[col] = [f"{x:.3f}" if x == x else "—" for x in table[col]]
    out = out.rename(columns={"low": f"low ({level:.0%})", "high": f"high ({level:.0%})"})
    out["validated"] = table["validated"].astype(str) + " / " + table["needed"].astype(str)
    return out


def table_csv(table: pd.DataFrame) -> bytes:
    """A table as CSV bytes (the pages' downloads)."""
    return table.to_csv(index=False).encode()


# --------------------------------------------------------------------------------------------------
# Activity

ACTIVITY_BY = ("site", "date", "hour")  # scored once; site × date and site × hour are sums of it


def activity_tables(
    db, probe_id: int, threshold: float | None = None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Detections per site × date and per site × hour of day (``index.activity`` tables).

    The archive is scored once, by site, date and hour; the two tables are its sums (windows and
    detections add up; the rate is taken again), with the label and threshold columns.
    """
    from index.activity import activity

    full = activity(db, probe_id, by=ACTIVITY_BY, threshold=threshold)
    return _collapse(full, ("site", "date")), _collapse(full, ("site", "hour"))


def _collapse(full: pd.DataFrame, by: tuple[str, str]) -> pd.DataFrame:
    sums = full.groupby(list(by), sort=True)[["windows", "detections"]].sum().reset_index()
    sums["rate"] = sums["detections"] / sums["windows"].where(sums["windows"] > 0)
    return sums.assign(label=full["label"].iloc[0], threshold=full["threshold"].iloc[0])
