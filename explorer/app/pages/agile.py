"""Agile: the review loop in one page. Start from a window, the Search page's query or a probe;
label each candidate (positive / negative / unsure / skip); retrain in one click; the next batch
comes by margin sampling, top scores or diversity among the likely positives."""

import streamlit as st

from explorer import plots
from explorer.app import agile, agile_session, backend, state, widgets

START = ("a window of a recording", "the Search page's query", "a stored probe")

st.title("Agile")
model = state.require_model()
db = state.db()
label = st.text_input(
    "Sound to model",
    key="ag_label",
    placeholder="species or sound type",
    help="Labels are stored under this name.",
).strip()
if not label:
    st.info("Name the sound you are looking for to start.")
    st.stop()
agile_session.begin(model, label)
rounds = agile_session.rounds()
counts = agile.label_counts(db, label)
m1, m2, m3, m4 = st.columns(4)
m1.metric("Positive labels", counts["positive"])
m2.metric("Negative labels", counts["negative"])
m3.metric("Unsure labels", counts["unsure"])
ap = rounds[-1].average_precision if rounds else None
m4.metric("CV average precision", backend.fmt_metric(ap), help="of the latest round")

c1, c2 = st.columns([2, 1])
strategy = c1.radio(
    "Next batch by",
    agile.STRATEGIES,
    horizontal=True,
    key="ag_strategy",
    help="margin: closest to the threshold; top: highest scores; diverse: spread over the likely positives",
)
n = c2.number_input("Windows per batch", 3, 48, 9, step=3, key="ag_n")

with st.expander("Start", expanded=agile_session.batch() is None):
    start = st.radio("Start from", START, horizontal=True, key="ag_start")
    recs = state.archive_summary(state.db_path()).recordings
    recs = recs[recs["status"] != "failed"]
    if start == START[0]:
        s1, s2 = st.columns(2)
        path = s1.selectbox("Recording", recs["path"].tolist(), key="ag_rec")
        rid = int(recs.loc[recs["path"] == path, "recording_id"].iloc[0]) if path else None
        wins = agile.recording_windows(db, model, rid) if rid is not None else None
        if wins is not None and len(wins):
            spans = {int(w.window_id): (w.start_s, w.end_s) for w in wins.itertuples()}
            wid = s2.selectbox(
                "Window",
                list(spans),
                format_func=lambda w: f"{spans[w][0]:.1f}–{spans[w][1]:.1f} s",
                key="ag_window",
            )
            st.button(
                "Find similar windows",
                key="ag_go_window",
                type="primary",
                on_click=agile_session.start_from_window,
                args=(model, label, wid, n),
            )
        else:
            st.caption("This recording has no windows of this model.")
    elif start == START[1]:
        queries = state.queries()
        st.caption(f"{len(queries)} example(s) in the Search page's query.")
        st.button(
            "Find windows like the query",
            key="ag_go_search",
            type="primary",
            disabled=not any(q.kind == "positive" for q in queries),
            on_click=agile_session.start_from_search,
            args=(model, label, n),
        )
    else:
        probes = agile.probes_for(db, model, label)
        if probes:
            probe = st.selectbox("Probe", probes, key="ag_probe_pick")
            st.button(
                "Review with this probe",
                key="ag_go_probe",
                type="primary",
                on_click=agile_session.start_from_probe,
                args=(model, label, probe, strategy, n),
            )
        else:
            st.caption(f"No probe for '{label}' on {model} yet: start from a window or the query.")

with st.container(horizontal=True, gap="small"):
    st.button(
        "Retrain",
        key="ag_retrain",
        icon=":material/model_training:",
        type="primary",
        on_click=agile_session.retrain,
        args=(model, label, strategy, n),
    )
    st.button(
        "Next batch",
        key="ag_next",
        icon=":material/skip_next:",
        on_click=agile_session.next_batch,
        args=(model, label, strategy, n),
    )
widgets.feedback(agile_session.NOTE)
widgets.undo_button("ag")

batch = agile_session.batch()
if batch is not None and len(batch):
    done = sum(int(w) in agile_session.marks() for w in batch["window_id"])
    st.subheader(f"Batch: {done} of {len(batch)} windows marked")
    agile_session.key_row(batch, label)
    widgets.card_grid(batch, label, "ag", actions=agile_session.card_actions(label))

if rounds:
    st.subheader("Rounds")
    table = agile.rounds_table(rounds)
    st.plotly_chart(plots.agile_rounds(table), width="stretch", theme=None)
    st.dataframe(table, hide_index=True, width="stretch")
    st.caption(rounds[-1].summary)
