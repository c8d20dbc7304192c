"""Reusable pieces of the pages: window cards (spectrogram, audio, label buttons), the label picker,
and the selected-windows table with bulk labelling."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import streamlit as st

from explorer.app import audio_access, backend, state

KINDS = ("positive", "negative", "unsure")
KIND_ICONS = {
    "positive": ":material/check:",
    "negative": ":material/close:",
    "unsure": ":material/help:",
}
CARDS_PER_ROW = 3
USER_SOURCE = "user:app"


@dataclass(frozen=True)
class TypedLabel:
    """The label in a picker's text box, read when a button is clicked: text typed and a click
    made before the page reran arrive together, and the text of the last run would be stale."""

    key: str
    shown: str  # the text as of this run (button tooltips)

    def __str__(self) -> str:
        return self.shown


def label_picker(key: str) -> TypedLabel:
    """Text box for the label that buttons write, pre-filled with the last one used."""
    known = backend.label_names(state.db())
    default = st.session_state.get("last_label") or (known[0] if known else "")
    value = st.text_input(
        "Label to write",
        value=default,
        key=key,
        help="Species or sound type; buttons store it as positive, negative or unsure.",
    )
    return TypedLabel(key, value.strip())


def _write_label(rows: pd.DataFrame, label, kind: str, note_key: str) -> None:
    """Button callback: store labels at once (before the rerun draws the page again)."""
    if isinstance(label, TypedLabel):
        label = str(st.session_state.get(label.key, "")).strip()
    if not label:
        st.session_state[note_key] = ("error", "Type a label first.")
        return
    n = backend.add_labels(state.db(), rows, label, kind, USER_SOURCE)
    st.session_state["last_label"] = label
    st.session_state[note_key] = ("success", f"Stored {n} × {kind} '{label}'.")


def feedback(note_key: str) -> None:
    """Show (once) what the last label button did."""
    note = st.session_state.pop(note_key, None)
    if note:
        getattr(st, note[0])(note[1])


def label_buttons(
    rows: pd.DataFrame, label: TypedLabel | str, key: str, bulk: bool = False
) -> None:
    """Positive / negative / unsure buttons writing ``label`` for ``rows`` to the labels table."""
    with st.container(horizontal=True, gap="small"):
        for kind in KINDS:
            st.button(
                f"{kind} ({len(rows)})" if bulk else kind,
                key=f"{key}-{kind}",
                icon=KIND_ICONS[kind],
                help=f"Store '{str(label) or '…'}' as {kind} for {'these windows' if bulk else 'this window'}",
                on_click=_write_label,
                args=(rows, label, kind, f"{key}-note"),
                type="secondary" if bulk else "tertiary",
            )
    feedback(f"{key}-note")


def window_card(row: pd.Series, label: TypedLabel | str, key: str, caption_extra: str = "") -> None:
    """Spectrogram, player, recording + time, and label buttons for one window."""
    sr = state.playback_rate(row.get("sample_rate"))
    path, channel, stamp = (
        row["abs_path"],
        row.get("channel"),
        audio_access.file_stamp(row["abs_path"]),
    )
    span = (state.db_path(), path, row["start_s"], row["end_s"], channel, sr, stamp)
    with st.container(border=True):
        try:
            st.image(state.card_png(*span), width="stretch")
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
        label_buttons(row.to_frame().T, label, key)


def card_grid(
    rows: pd.DataFrame, label: TypedLabel | str, key: str, score_col: str | None = "score"
) -> None:
    """Window cards, ``CARDS_PER_ROW`` per row."""
    for start in range(0, len(rows), CARDS_PER_ROW):
        cols = st.columns(CARDS_PER_ROW)
        chunk = rows.iloc[start : start + CARDS_PER_ROW]
        for col, (_, row) in zip(cols[: len(chunk)], chunk.iterrows(), strict=True):
            extra = f" · score {row[score_col]:.3f}" if score_col and score_col in row else ""
            with col:
                window_card(row, label, f"{key}-{int(row['window_id'])}", extra)
