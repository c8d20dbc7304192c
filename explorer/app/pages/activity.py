"""Activity: a probe's detections per site × date and site × hour of day, as heatmaps and as
tables to download (``index.activity``, as `chorus activity`). Cells are empty where nothing was
recorded; windows of undated recordings form their own ``undated`` column."""

import streamlit as st

from explorer import activity_plots
from explorer.app import backend, state, survey, survey_state

st.title("Activity")
model = state.require_model()
db = state.db()
probes = state.require_probes(model)

c1, c2, c3 = st.columns([2, 2, 2])
by_id = probes.set_index("probe_id")
probe_id = c1.selectbox(
    "Probe",
    probes["probe_id"].tolist(),
    format_func=survey.probe_names(probes).get,
    key="act_probe",
)
threshold = c2.slider(
    "Detection threshold",
    0.0,
    1.0,
    round(float(by_id.loc[probe_id, "threshold"]), 3),
    0.001,
    format="%.3f",
    key=f"act_thr_{probe_id}",
    help="A window scoring at or above it is a detection; the probe's own threshold first.",
)
value = c3.radio("Colour by", activity_plots.VALUES, horizontal=True, key="act_value")

path, version = state.db_path(), backend.table_version(db, model)
by_date, by_hour = survey_state.activity(path, version, probe_id, threshold)
label = by_date["label"].iloc[0] if len(by_date) else ""
n_det, n_win = int(by_date["detections"].sum()), int(by_date["windows"].sum())
st.write(f"**{n_det:,}** of {n_win:,} windows score ≥ {threshold:.3f} for '{label}'.")

for table, cols, title in (
    (by_date, "date", "Site × date"),
    (by_hour, "hour", "Site × hour of day"),
):
    st.subheader(title)
    height = 120 + 40 * table["site"].nunique()
    fig = activity_plots.activity_heatmap(table, "site", cols, value, height=height)
    st.plotly_chart(fig, width="stretch", theme=None, key=f"act_map_{cols}")
    d1, d2 = st.columns([1, 3])
    d1.download_button(
        f"Table (CSV): site × {cols}",
        survey.table_csv(table),
        f"{label}_activity_site_{cols}.csv",
        "text/csv",
        key=f"act_dl_{cols}",
    )
    with d2.expander("Table"):
        st.dataframe(table, hide_index=True, width="stretch")
