"""Streamlit glue of the Agile page: the session's batch, marks and rounds, and the button
callbacks that call ``agile`` (they run before the page is drawn again). State lives under
``ag_*`` keys and starts afresh when the model or the label changes."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from explorer.app import agile, backend, state, widgets
from explorer.app.survey import CHOICES

KEYS = {"positive": "P", "negative": "N", "unsure": "U", "skip": "S"}  # C and R are Streamlit's
NOTE = "ag-note"


def begin(model: str, label: str) -> None:
    """Forget the batch and rounds of another model or label."""
    if st.session_state.get("ag_session") != (model, label):
        for key in ("ag_batch", "ag_rounds", "ag_probe", "ag_marks", "ag_query"):
            st.session_state.pop(key, None)
        st.session_state["ag_session"] = (model, label)


def rounds() -> list[agile.Round]:
    return st.session_state.get("ag_rounds", [])


def batch() -> pd.DataFrame | None:
    return st.session_state.get("ag_batch")


def marks() -> dict[int, str]:
    return st.session_state.setdefault("ag_marks", {})


def _set_batch(rows: pd.DataFrame) -> None:
    st.session_state["ag_batch"] = rows
    st.session_state["ag_marks"] = {}
    if rows.empty:
        st.session_state[NOTE] = ("info", "No unlabelled windows left for this start.")


def _fail(err: Exception) -> None:
    st.session_state[NOTE] = ("error", str(err.args[0]) if err.args else str(err))


def start_from_window(model: str, label: str, window_id: int, n: int) -> None:
    try:
        st.session_state["ag_query"] = ("window", int(window_id))
        st.session_state.pop("ag_probe", None)
        _set_batch(agile.search_batch(state.db(), model, [int(window_id)], label, int(n)))
    except (KeyError, ValueError) as err:
        _fail(err)


def start_from_search(model: str, label: str, n: int) -> None:
    from index.labels import window_labels

    queries = state.queries()
    try:
        covered = len(window_labels(state.db(), model, label))
        hits = backend.run_search(state.db(), model, queries, k=int(n) + covered)
        st.session_state["ag_query"] = ("search", None)
        st.session_state.pop("ag_probe", None)
        _set_batch(agile.hits_batch(state.db(), model, hits, label, int(n)))
    except (KeyError, ValueError) as err:
        _fail(err)


def start_from_probe(model: str, label: str, probe_id: int, strategy: str, n: int) -> None:
    st.session_state["ag_probe"] = int(probe_id)
    next_batch(model, label, strategy, n)


def next_batch(model: str, label: str, strategy: str, n: int) -> None:
    """The probe's next review batch, or the start's search again (labelled windows left out)."""
    probe_id = st.session_state.get("ag_probe")
    query = st.session_state.get("ag_query")
    if probe_id is None and query is None:
        st.session_state[NOTE] = ("error", "Start from a window, the Search query or a probe.")
        return
    if probe_id is None and query[0] == "window":
        return start_from_window(model, label, query[1], n)
    if probe_id is None:
        return start_from_search(model, label, n)
    try:
        _set_batch(agile.probe_batch(state.db(), model, probe_id, label, strategy, int(n)))
    except (KeyError, ValueError) as err:
        _fail(err)


def retrain(model: str, label: str, strategy: str, n: int) -> None:
    """Train on every label so far, keep the round's figures, and take the next batch."""
    try:
        done = agile.retrain(state.db(), model, label, len(rounds()) + 1)
    except (KeyError, ValueError) as err:
        _fail(err)
        return
    st.session_state["ag_rounds"] = [*rounds(), done]
    st.session_state["ag_probe"] = done.probe_id
    st.session_state["probe_id"] = done.probe_id  # the Classify page shows the latest probe
    next_batch(model, label, strategy, n)
    note = st.session_state.get(NOTE)
    if note is None or note[0] != "error":
        st.session_state[NOTE] = ("success", f"Round {done.number}: {done.summary}")


def _mark(rows: pd.DataFrame, label: str, choice: str) -> None:
    note = f"ag-card-{int(rows['window_id'].iloc[0])}-note"
    try:
        widgets.store_mark(rows, label, choice, marks(), note)
    except (KeyError, ValueError) as err:
        _fail(err)


def card_actions(label: str):
    """``widgets.window_card`` actions: positive / negative / unsure / skip for one window."""

    def draw(rows: pd.DataFrame, key: str) -> None:
        wid = int(rows["window_id"].iloc[0])
        st.session_state.pop(f"ag-card-{wid}-note", None)  # the mark says it on the card
        widgets.mark_buttons(rows, key, CHOICES, marks().get(wid), _mark, (rows, label))

    return draw


def next_unmarked(rows: pd.DataFrame) -> int | None:
    """Position in the batch of the first window not marked yet, or None when all are."""
    todo = ~rows["window_id"].astype(int).isin(list(marks())).to_numpy()
    return int(todo.argmax()) if todo.any() else None


def key_row(rows: pd.DataFrame, label: str) -> None:
    """Buttons with keyboard shortcuts (P, N, U, S) that mark the next unmarked window: a batch
    is labelled without the mouse, in the grid's order."""
    at = next_unmarked(rows)
    target = None if at is None else rows.iloc[[at]]
    with st.container(horizontal=True, gap="small", vertical_alignment="center"):
        for choice in CHOICES:
            st.button(
                choice,  # Streamlit shows the key beside it
                key=f"ag-key-{choice}",
                icon=widgets.MARK_ICONS[choice],
                shortcut=KEYS[choice],
                disabled=target is None,
                on_click=_mark,
                args=(target, label, choice),
            )
        if target is not None:
            t = target.iloc[0]
            st.caption(f"Keys mark window {at + 1}: {t['path']} @ {t['start_s']:.1f} s")
