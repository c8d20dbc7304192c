"""Reusable pieces of the pages: window cards (spectrogram, audio, label buttons), the label picker,
and the selected-windows table with bulk labelling."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from explorer.app import audio_access, backend, label_ops, state

KINDS = ("positive", "negative", "unsure")
KIND_ICONS = {
    "positive": ":material/check:",
    "negative": ":material/close:",
    "unsure": ":material/help:",
}
CARDS_PER_ROW = 3
USER_SOURCE = "user:app"
CONFIRM_ABOVE = 20  # a bulk write to more windows than this asks first
UNDO_KEY = "label_undo"  # session list of LabelChange, newest last
UNDO_DEPTH = 20  # changes kept for undo


@dataclass(frozen=True)
class TypedLabel:
    """The label in a picker's text box, read when a button is clicked: text typed and a click
    made before the page reran arrive together, and the text of the last run would be stale."""

    key: str
    shown: str  # the text as of this run (button tooltips)

    def __str__(self) -> str:
        return self.shown


def label_picker(key: str) -> TypedLabel:
    """Text box for the label that buttons write; empty at first, so a bulk click never writes a
    name the user did not choose."""
    known = backend.label_names(state.db())
    value = st.text_input(
        "Label to write",
        value="",
        key=key,
        placeholder="species or sound type",
        help="Buttons store it as positive, negative or unsure."
        + (f" Names in use: {', '.join(known[:12])}." if known else ""),
    )
    return TypedLabel(key, value.strip())


def _typed(label) -> str:
    if isinstance(label, TypedLabel):
        return str(st.session_state.get(label.key, "")).strip()
    return str(label).strip()


def _ids(rows: pd.DataFrame) -> tuple[int, ...]:
    return tuple(int(i) for i in rows["window_id"])


def _write_label(rows: pd.DataFrame, label, kind: str, key: str, bulk: bool = False) -> None:
    """Button callback: store labels at once (before the rerun draws the page again); a bulk
    write above ``CONFIRM_ABOVE`` windows waits for a confirmation instead."""
    name = _typed(label)
    if not name:
        st.session_state[f"{key}-note"] = ("error", "Type a label first.")
        return
    if bulk and len(rows) > CONFIRM_ABOVE:
        st.session_state[f"{key}-confirm"] = (_ids(rows), name, kind)
        return
    _store(rows, name, kind, f"{key}-note")


def _store(rows: pd.DataFrame, name: str, kind: str, note_key: str) -> None:
    try:
        change = label_ops.write_labels(state.db(), rows, name, kind, USER_SOURCE)
    except (KeyError, ValueError) as err:
        st.session_state[note_key] = ("error", f"Not stored: {err}")
        return
    record(change, note_key)


def record(change: label_ops.LabelChange, note_key: str) -> None:
    """Keep ``change`` for the undo button and say what it did (once, at ``note_key``)."""
    stack = st.session_state.setdefault(UNDO_KEY, [])
    stack.append(change)
    del stack[:-UNDO_DEPTH]
    st.session_state[note_key] = ("success", f"{change.what}.")


def _confirm(rows: pd.DataFrame, key: str) -> None:
    pending = st.session_state.pop(f"{key}-confirm", None)
    if pending is not None:
        _store(rows, pending[1], pending[2], f"{key}-note")


def feedback(note_key: str) -> None:
    """Show (once) what the last label button did."""
    note = st.session_state.pop(note_key, None)
    if note:
        getattr(st, note[0])(note[1])


def _undo(note_key: str) -> None:
    stack = st.session_state.get(UNDO_KEY) or []
    if stack:
        st.session_state[note_key] = ("success", label_ops.undo(state.db(), stack.pop()))
        st.session_state["lab_gen"] = st.session_state.get("lab_gen", 0) + 1  # stale selection


def undo_button(key: str) -> None:
    """One click undoes the session's last label action (bulk write, edit or deletion)."""
    stack = st.session_state.get(UNDO_KEY) or []
    if stack:
        st.button(
            f"Undo: {stack[-1].what}",
            key=f"{key}-undo",
            icon=":material/undo:",
            on_click=_undo,
            args=(f"{key}-undo-note",),
        )
    feedback(f"{key}-undo-note")


MARK_ICONS = {**KIND_ICONS, "skip": ":material/skip_next:"}


def store_mark(rows: pd.DataFrame, label: str, choice: str, marks: dict, note_key: str) -> None:
    """Mark one window (``rows``: its row): a label of kind ``choice`` is written, with an undo,
    unless ``choice`` is "skip"; then ``marks[window_id] = choice``. KeyError / ValueError of the
    write propagate and leave it unmarked."""
    if choice != "skip":
        record(label_ops.write_labels(state.db(), rows, label, choice, USER_SOURCE), note_key)
    marks[int(rows["window_id"].iloc[0])] = choice


def mark_buttons(
    rows: pd.DataFrame,
    key: str,
    choices,
    chosen: str | None,
    on_click,
    args: tuple = (),
    helps: dict | None = None,
) -> None:
    """One window card's marking buttons (positive / negative / unsure / skip), the chosen one
    highlighted, under it what was chosen. ``on_click(*args, choice)`` stores a mark."""
    with st.container(horizontal=True, gap="small"):
        for choice in choices:
            st.button(
                choice,
                key=f"{key}-{choice}",
                icon=MARK_ICONS[choice],
                help=(helps or {}).get(choice),
                type="primary" if chosen == choice else "tertiary",
                on_click=on_click,
                args=(*args, choice),
            )
    if chosen:
        st.caption(f"Marked **{chosen}**.")


def label_buttons(
    rows: pd.DataFrame, label: TypedLabel | str, key: str, bulk: bool = False
) -> None:
    """Positive / negative / unsure buttons writing ``label`` for ``rows`` to the labels table.

    Bulk buttons ask before writing more than ``CONFIRM_ABOVE`` windows and come with an undo
    button."""
    with st.container(horizontal=True, gap="small"):
        for kind in KINDS:
            st.button(
                f"{kind} ({len(rows)})" if bulk else kind,
                key=f"{key}-{kind}",
                icon=KIND_ICONS[kind],
                help=f"Store '{str(label) or '…'}' as {kind} for {'these windows' if bulk else 'this window'}",
                on_click=_write_label,
                args=(rows, label, kind, key, bulk),
                type="secondary" if bulk else "tertiary",
            )
    if bulk:
        _confirmation(rows, key)
    feedback(f"{key}-note")
    if bulk:
        undo_button(key)


def _confirmation(rows: pd.DataFrame, key: str) -> None:
    pending = st.session_state.get(f"{key}-confirm")
    if pending is None:
        return
    if pending[0] != _ids(rows):  # the selection changed since the click: ask again
        st.session_state.pop(f"{key}-confirm")
        return
    st.warning(f"Write '{pending[1]}' as {pending[2]} on {len(rows):,} windows?")
    with st.container(horizontal=True, gap="small"):
        st.button(
            f"Yes, label {len(rows):,} windows",
            key=f"{key}-yes",
            type="primary",
            on_click=_confirm,
            args=(rows, key),
        )
        st.button(
            "Cancel", key=f"{key}-no", on_click=st.session_state.pop, args=(f"{key}-confirm",)
        )


def window_card(
    row: pd.Series,
    label: TypedLabel | str,
    key: str,
    caption_extra: str = "",
    actions: Callable[[pd.DataFrame, str], None] | None = None,
) -> None:
    """Spectrogram (time and frequency axes, the sidebar's band), player, recording + time, and
    label buttons for one window; ``actions(rows, key)`` draws other buttons instead."""
    sr = state.playback_rate(row.get("sample_rate"))
    path, channel, stamp = (
        row["abs_path"],
        row.get("channel"),
        audio_access.file_stamp(row["abs_path"]),
    )
    span = (state.db_path(), path, row["start_s"], row["end_s"], channel, sr, stamp)
    with st.container(border=True):
        try:
            st.image(state.card_png(*span, state.card_band()), width="stretch")
            audio = state.clip(*span)
            if len(audio) and np.abs(audio).max() > 0:
                st.audio(audio, sample_rate=sr)
            else:  # the player scales by the peak: 0/0 (the file ends early, or digital silence)
                st.caption("No sound in this span.")
        except (audio_access.AudioAccessError, OSError, ValueError) as err:
            st.warning(str(err))
        st.caption(
            f"**{row['path']}** @ {row['start_s']:.1f}–{row['end_s']:.1f} s"
            f"{' · site ' + str(row['site']) if pd.notna(row.get('site')) else ''}{caption_extra}"
        )
        if actions is None:
            label_buttons(row.to_frame().T, label, key)
        else:
            actions(row.to_frame().T, key)


def card_grid(
    rows: pd.DataFrame,
    label: TypedLabel | str,
    key: str,
    score_col: str | None = "score",
    actions: Callable[[pd.DataFrame, str], None] | None = None,
) -> None:
    """Window cards, ``CARDS_PER_ROW`` per row."""
    for start in range(0, len(rows), CARDS_PER_ROW):
        cols = st.columns(CARDS_PER_ROW)
        chunk = rows.iloc[start : start + CARDS_PER_ROW]
        for col, (_, row) in zip(cols[: len(chunk)], chunk.iterrows(), strict=True):
            extra = f" · score {row[score_col]:.3f}" if score_col and score_col in row else ""
            with col:
                window_card(row, label, f"{key}-{int(row['window_id'])}", extra, actions)


# --------------------------------------------------------------------------------------------------
# Labels page actions (button callbacks: they run before the page is drawn again)


def _after_table_change(note_key: str, change: label_ops.LabelChange) -> None:
    record(change, note_key)
    st.session_state["lab_gen"] = st.session_state.get("lab_gen", 0) + 1  # drop the selection
    st.session_state["lab_all"] = False


def edit_labels(label_ids: list[int], name_key: str, kind_key: str, key: str) -> None:
    """Rename and/or change the kind of the selected labels."""
    try:
        change = label_ops.edit(
            state.db(),
            label_ids,
            label=st.session_state.get(name_key) or None,
            kind=st.session_state.get(kind_key),
            source=USER_SOURCE,
        )
    except (KeyError, ValueError) as err:
        st.session_state[f"{key}-note"] = ("error", f"Not changed: {err}")
        return
    _after_table_change(f"{key}-note", change)
    st.session_state[name_key] = ""
    st.session_state[kind_key] = None


def delete_labels(label_ids: list[int], key: str) -> None:
    """Delete the selected labels (one commit)."""
    try:
        change = label_ops.remove(state.db(), label_ids)
    except (KeyError, ValueError) as err:
        st.session_state[f"{key}-note"] = ("error", f"Not deleted: {err}")
        return
    _after_table_change(f"{key}-note", change)
