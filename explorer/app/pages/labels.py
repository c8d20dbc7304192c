"""Labels: every stored label, filtered by name, kind, source and recording; rename or change
the kind of several at once, delete several at once, and undo the last change in one click."""

import streamlit as st

from explorer.app import label_ops, state, widgets
from index.raven import KINDS

COLUMNS = ["label_id", "label", "kind", "path", "start_s", "end_s", "low_hz", "high_hz"]
COLUMNS += ["source", "created_at"]

st.title("Labels")
labels = state.all_labels(state.db_path(), state.labels_version())
if labels.empty:
    st.info("No labels yet: label windows on the Search, Map, Clusters or Agile pages.")
    widgets.feedback("lab-note")
    widgets.undo_button("lab")
    st.stop()

f1, f2, f3, f4 = st.columns(4)
chosen = {
    "label": f1.multiselect("Label", sorted(labels["label"].unique()), key="lab_f_label"),
    "kind": f2.multiselect("Kind", list(KINDS), key="lab_f_kind"),
    "source": f3.multiselect("Source", sorted(labels["source"].unique()), key="lab_f_source"),
    "path": f4.multiselect("Recording", sorted(labels["path"].dropna().unique()), key="lab_f_rec"),
}
shown = label_ops.filter_labels(labels, **chosen).reset_index(drop=True)
everything = st.checkbox(f"Select all {len(shown):,} shown", key="lab_all")
table_key = f"lab_table_{st.session_state.get('lab_gen', 0)}"  # a new table after each change
event = st.dataframe(
    shown[COLUMNS],
    on_select="rerun",
    selection_mode="multi-row",
    key=table_key,
    hide_index=True,
    width="stretch",
    height=360,
)
rows = list(range(len(shown))) if everything else list(event["selection"]["rows"])
picked = shown.iloc[rows]["label_id"].astype(int).tolist()
st.caption(f"{len(shown):,} of {len(labels):,} labels shown; {len(picked):,} selected.")

with st.container(border=True):
    c1, c2 = st.columns(2)
    new_name = c1.text_input("New name", key="lab_new_name", placeholder="keep the name")
    new_kind = c2.selectbox("New kind", KINDS, index=None, key="lab_new_kind", placeholder="keep")
    with st.container(horizontal=True, gap="small"):
        st.button(
            f"Apply to {len(picked):,} selected",
            key="lab_apply",
            icon=":material/edit:",
            disabled=not picked or not (new_name.strip() or new_kind),
            on_click=widgets.edit_labels,
            args=(picked, "lab_new_name", "lab_new_kind", "lab"),
        )
        st.button(
            f"Delete {len(picked):,} selected",
            key="lab_delete",
            icon=":material/delete:",
            disabled=not picked,
            on_click=widgets.delete_labels,
            args=(picked, "lab"),
        )
    widgets.feedback("lab-note")
widgets.undo_button("lab")
