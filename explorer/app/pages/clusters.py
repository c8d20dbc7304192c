"""Clusters: group unlabelled windows, see how clusters spread over sites and hours, listen to each
cluster's exemplars and label a whole cluster at once. Finished clusterings (from this app or
``chorus cluster``) open without computing; the last one is reopened in a new session."""

import streamlit as st

from explorer import plots
from explorer.app import backend, prefs, state, widgets

st.title("Clusters")
model = state.require_model()
version = backend.table_version(state.db(), model)

prefs.restore_cluster_form(model)  # the model's last clustering, from any earlier session
with st.form("cluster_form"):
    c1, c2 = st.columns(2)
    method = c1.radio("Method", ["kmeans", "hdbscan"], horizontal=True, key="cl_method")
    k = c2.number_input("Clusters (k-means)", 2, 500, key="cl_k")
    if st.form_submit_button("Run clustering", type="primary"):
        params = {"method": method, "k": int(k)}
        st.session_state["cluster_params"] = prefs.cluster_params(model, version, params)

finished = prefs.finished(model)
if finished:
    with st.expander(f"Finished clusterings of {model} ({len(finished)})"):
        st.caption("Computed earlier, here or by `chorus cluster`: they open without computing.")
        pick = st.selectbox(
            "Clustering",
            range(len(finished)),
            format_func=lambda i: prefs.describe_clustering(finished[i]),
            key="cl_finished",
        )
        st.button(
            "Open",
            key="cl_open",
            on_click=prefs.open_clustering,
            args=(model, finished[pick]["params"]),
        )

try:
    res = state.current_clusters()
except ValueError as err:  # e.g. more clusters than windows: say so, and forget those settings
    st.session_state.pop("cluster_params", None)
    st.error(f"Cannot cluster {model}: {err}")
    st.stop()
if res is None:
    st.info("Run a clustering to browse it" + (", or open a finished one." if finished else "."))
    st.stop()
prefs.remember_clustering(model, res.params)

sizes = res.assignments["cluster"].value_counts()
st.write(f"{len(sizes)} clusters over {len(res.assignments):,} windows ({res.params['method']}).")
by = st.radio("Counts by", ["site", "hour"], horizontal=True, key="cl_by")
st.plotly_chart(plots.cluster_counts(res.assignments, by=by), width="stretch", theme=None)

options = [int(c) for c in sizes.index]
cluster = st.selectbox(
    "Cluster", options, format_func=lambda c: f"{c} ({sizes[c]:,} windows)", key="cl_pick"
)
members = res.assignments[res.assignments["cluster"] == cluster]
exemplar_ids = res.exemplars.loc[res.exemplars["cluster"] == cluster, "window_id"].tolist()
label = widgets.label_picker("cl_label")
st.write(f"Label all {len(members):,} windows of cluster {cluster}:")
widgets.label_buttons(members, label, f"cl_bulk_{cluster}", bulk=True)
st.subheader("Exemplars (closest to the cluster centre)")
rows = state.selected_rows(state.db_path(), model, version, tuple(int(i) for i in exemplar_ids))
widgets.card_grid(rows, label, f"cl_card_{cluster}", score_col=None)
