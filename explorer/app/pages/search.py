"""Search: find windows like your examples — uploaded clips or spans picked on a recording's
spectrogram — with negatives, site/date/time filters, and label buttons on every result."""

import pandas as pd
import streamlit as st

from explorer import plots
from explorer.app import audio_access, backend, state, widgets
from explorer.recordings import AUDIO_EXTENSIONS

st.title("Search by example")
model = state.require_model()
db = state.db()
summary = state.archive_summary(state.db_path())
recs = summary.recordings[summary.recordings["status"] != "failed"]

upload_tab, span_tab = st.tabs(["Upload a clip", "Pick a span of a recording"])
with upload_tab:
    upload = st.file_uploader(
        f"Audio clip (at most {audio_access.MAX_UPLOAD_S:.0f} s)",
        type=sorted({e.lstrip(".") for e in AUDIO_EXTENSIONS} | {"mp4", "mkv", "mov"}),
        key="upload",
    )
    kind = st.radio("Use as", ["positive", "negative"], horizontal=True, key="upload_kind")
    if st.button("Add clip to the query", disabled=upload is None, key="add_upload"):
        try:
            state.add_upload_query(upload, kind)
        except Exception as err:  # bad upload: say why, keep the page alive
            st.error(f"Could not use {upload.name}: {err}")

with span_tab:
    choice = st.selectbox("Recording", recs["path"].tolist(), key="span_rec")
    if choice is not None:
        rec = recs[recs["path"] == choice].iloc[0]
        duration = float(rec["duration_s"])
        view_len = min(duration, audio_access.MAX_CLIP_S)
        view_start = 0.0
        if duration > view_len:
            view_start = st.slider("View from (s)", 0.0, duration - view_len, 0.0, key="view_start")
        state.pending_span()
        span = st.slider(
            "Span (s) — or drag a box on the spectrogram",
            view_start,
            view_start + view_len,
            (view_start, min(view_start + 5.0, view_start + view_len)),
            step=state.SPAN_STEP,
            key="span",
        )
        try:
            sr = min(state.playback_rate(rec["sample_rate"]), state.VIEW_SR)
            audio = state.recording_view(
                state.db_path(), rec["abs_path"], view_start, view_start + view_len, sr
            )
            fig = plots.spectrogram_figure(audio, sr, view_start, span=span)
            event = st.plotly_chart(
                fig,
                on_select="rerun",
                selection_mode="box",
                key="span_fig",
                width="stretch",
                theme=None,
            )
            if state.pick_span(event["selection"] if event else None, *fig.layout.xaxis.range):
                st.rerun()  # draw the slider and the shading at the dragged span
        except audio_access.AudioAccessError as err:
            st.warning(str(err))
        st.caption(f"Span used: {span[0]:.2f}–{span[1]:.2f} s")
        c1, c2 = st.columns(2)
        for col, kind in ((c1, "positive"), (c2, "negative")):
            if col.button(f"Add span as {kind}", key=f"add_span_{kind}", width="stretch"):
                try:
                    state.add_span_query(rec["abs_path"], choice, span[0], span[1], kind)
                except Exception as err:
                    st.error(f"Could not embed that span: {err}")

queries = state.queries()
st.subheader(f"Query ({len(queries)} examples)")
for i, q in enumerate(queries):
    c1, c2 = st.columns([6, 1])
    c1.write(
        f"{':material/add_circle:' if q.kind == 'positive' else ':material/remove_circle:'} {q.kind}: {q.source}"
    )
    if c2.button("remove", key=f"rm_query_{i}"):
        queries.pop(i)
        st.rerun()

with st.form("search_form"):
    st.write("Filters")
    f1, f2, f3 = st.columns(3)
    sites = f1.multiselect("Sites", summary.sites, key="f_sites")
    dates = all_dates = ()
    if summary.first is not None:
        all_dates = (summary.first.date(), summary.last.date())
        dates = f2.date_input("Dates", all_dates, key="f_dates")
    hours = f3.slider("Hour of day", 0, 24, (0, 24), key="f_hours")
    g1, g2 = st.columns(2)
    k = g1.number_input("Results", 1, 200, 12, key="f_k")
    per_rec = g2.number_input("At most per recording (0 = no limit)", 0, 50, 0, key="f_per_rec")
    keep_own = st.checkbox(
        "Keep the query's own windows",
        False,
        key="f_keep_own",
        help="Windows overlapping a query span score ~1.0 and are left out by default.",
    )
    go = st.form_submit_button("Search", type="primary", disabled=not queries)

if go:
    where = backend.time_filter(sites, dates, hours, all_dates)
    try:
        st.session_state["hits"] = backend.run_search(
            db, model, queries, int(k), where, int(per_rec) or None, keep_own
        )
    except ValueError as err:
        st.error(str(err))

hits = st.session_state.get("hits")
if hits is not None:
    st.subheader(f"{len(hits)} results")
    if len(hits) == 0:
        st.info("Nothing matched: loosen the filters.")
    label = widgets.label_picker("search_label")
    widgets.card_grid(hits, label, "hit")
    with st.expander("Results as a table"):
        st.dataframe(
            pd.DataFrame(hits).drop(columns=["abs_path"], errors="ignore"), hide_index=True
        )
