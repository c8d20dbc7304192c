"""Streamlit glue of the Density and Activity pages: cached results of ``index.density`` and
``index.activity``, and the Density page's validation loop (its batch of cards, the marks made,
the button callbacks that write the validations as labels). State lives under ``dn_*`` keys and
starts afresh when the probe or the grouping changes."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer.app import state, survey, widgets
from index.density import DensityResult

NOTE = "dn-note"
CHOICE_HELP = {
    "positive": "The window holds the call: stored as a positive label.",
    "negative": "The window does not hold the call: stored as a negative label.",
    "unsure": "Cannot tell: stored as unsure; another window of its stratum takes its place.",
    "skip": "Not now: nothing is stored, the window stays in the sample.",
}


@st.cache_data(show_spinner="Scoring and planning the validation sample…", max_entries=16)
def density(
    path: str,
    version: str,
    labels_version: int,
    probe_id: int,
    by: tuple[str, ...],
    per_stratum: int,
) -> DensityResult:
    """``index.density.call_density``; keyed by the labels version, so a validation updates it."""
    from index.density import call_density

    return call_density(state._connect(path), probe_id, by, per_stratum)


@st.cache_data(show_spinner="Counting detections…", max_entries=16)
def activity(
    path: str, version: str, probe_id: int, threshold: float
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(site × date, site × hour) activity tables at ``threshold``."""
    return survey.activity_tables(state._connect(path), probe_id, threshold)


def begin(probe_id: int, by: tuple[str, ...], per_stratum: int) -> None:
    """Forget the batch and marks of other settings."""
    if st.session_state.get("dn_session") != (probe_id, by, per_stratum):
        for key in ("dn_batch", "dn_marks", "dn_passed"):
            st.session_state.pop(key, None)
        st.session_state["dn_session"] = (probe_id, by, per_stratum)


def batch() -> pd.DataFrame | None:
    return st.session_state.get("dn_batch")


def marks() -> dict[int, str]:
    return st.session_state.setdefault("dn_marks", {})


def next_batch(model: str, result: DensityResult, by: tuple[str, ...], n: int) -> None:
    """Button callback: the next windows to validate (windows skipped before come last)."""
    passed = st.session_state.setdefault("dn_passed", set())
    passed.update(w for w, c in marks().items() if c == "skip")
    rows = survey.next_batch(state.db(), model, result.todo, by, int(n), sorted(passed))
    st.session_state["dn_batch"] = rows
    st.session_state["dn_marks"] = {}
    if rows.empty:
        st.session_state[NOTE] = ("success", "Every window of the sample is validated.")


def _mark(rows: pd.DataFrame, label: str, choice: str) -> None:
    note = f"dn-card-{int(rows['window_id'].iloc[0])}-note"
    try:
        widgets.store_mark(rows, label, choice, marks(), note)
    except (KeyError, ValueError) as err:
        st.session_state[NOTE] = ("error", f"Not stored: {err}")


def card_actions(label: str, todo_ids: set[int]):
    """``widgets.window_card`` actions: positive / negative / unsure / skip for one window."""

    def draw(rows: pd.DataFrame, key: str) -> None:
        wid = int(rows["window_id"].iloc[0])
        chosen = survey.shown_mark(marks().get(wid), wid in todo_ids)
        st.session_state.pop(f"dn-card-{wid}-note", None)  # the mark says it on the card
        widgets.mark_buttons(
            rows, key, survey.CHOICES, chosen, _mark, (rows, label), helps=CHOICE_HELP
        )

    return draw
