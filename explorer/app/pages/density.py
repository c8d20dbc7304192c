"""Density: call density per site and time bin with an interval, from a probe's scores and a
stratified sample of windows validated by ear (``index.density``, as `chorus density`). Validate
the sample here — positive / negative / unsure / skip on each card — and the table follows."""

import streamlit as st

from explorer.app import backend, state, survey, survey_state, widgets
from index.activity import GROUP_KEYS
from index.density import PER_STRATUM

st.title("Call density")
model = state.require_model()
db = state.db()
probes = state.require_probes(model)

c1, c2, c3 = st.columns([2, 2, 1])
probe_id = c1.selectbox(
    "Probe",
    probes["probe_id"].tolist(),
    format_func=survey.probe_names(probes).get,
    key="dn_probe",
)
by = tuple(c2.multiselect("Group by", GROUP_KEYS, list(survey.GROUP_BY), key="dn_by"))
per_stratum = c3.number_input("Validations per stratum", 1, 50, PER_STRATUM, key="dn_per")
if not by:
    st.info("Choose at least one grouping (site, date, week, month or hour).")
    st.stop()

path, version = state.db_path(), backend.table_version(db, model)
result = survey_state.density(path, version, state.labels_version(), probe_id, by, per_stratum)
survey_state.begin(probe_id, by, per_stratum)
done, needed = int(result.table["validated"].sum()), int(result.table["needed"].sum())
m1, m2, m3 = st.columns(3)
m1.metric("Label", result.label)
m2.metric("Validations done", f"{done} of {needed}")
m3.metric(
    "Groups with a density", f"{int(result.table['density'].notna().sum())} of {len(result.table)}"
)
st.dataframe(survey.density_display(result.table, result.level), hide_index=True, width="stretch")
st.download_button(
    "Table (CSV)",
    survey.table_csv(result.table),
    f"{result.label}_density_{'_'.join(by)}.csv",
    "text/csv",
    key="dn_dl",
)
st.caption(
    "Density: the fraction of windows holding the call. Each group's windows are split by score "
    "into strata and a few of each are validated; the density has a value once every stratum "
    f"has a validation, and the {result.level:.0%} interval narrows as validations come in."
)

st.subheader("Validate")
v1, v2 = st.columns([1, 3])
n = v1.number_input("Windows per batch", 3, 48, survey.BATCH, step=3, key="dn_n")
with v2.container(horizontal=True, gap="small"):
    st.button(
        "Next batch" if survey_state.batch() is not None else "Start validating",
        key="dn_next",
        icon=":material/skip_next:",
        type="primary",
        disabled=result.todo.empty,
        on_click=survey_state.next_batch,
        args=(model, result, by, n),
    )
widgets.feedback(survey_state.NOTE)
widgets.undo_button("dn")

batch = survey_state.batch()
if batch is not None and len(batch):
    todo_ids = set(result.todo["window_id"].astype(int))
    validated = survey.validated_in_batch(batch, result.todo)
    st.write(f"Batch: {int(validated.sum())} of {len(batch)} windows answered.")
    actions = survey_state.card_actions(result.label, todo_ids)
    widgets.card_grid(batch, result.label, "dn", actions=actions)
elif result.todo.empty:
    st.success("Every window of the sample is validated.")
