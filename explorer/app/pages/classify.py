"""Classify: train a linear probe on the labels, read its cross-validated precision/recall, score
the archive, review the top / uncertain / diverse windows, and download the detections."""

import streamlit as st

from explorer import plots
from explorer.app import backend, state, widgets
from index.probe_eval import describe_cv

QUEUE_SIZE = 9  # windows per review queue

st.title("Classify")
model = state.require_model()
path, version = state.db_path(), backend.table_version(state.db(), model)
names = backend.label_names(state.db())
if not names:
    st.info("No labels yet: label windows on the Search, Map or Clusters pages first.")
    st.stop()

with st.form("train_form"):
    c1, c2, c3 = st.columns(3)
    label = c1.selectbox("Label", names, key="cls_label")
    weak = c2.number_input(
        "Weak-negative weight",
        0.0,
        1.0,
        0.05,
        step=0.01,
        key="cls_weak",
        help="Random unlabelled windows join the negatives with this weight.",
    )
    target = c3.slider("Target precision", 0.5, 0.99, 0.9, key="cls_precision")
    if st.form_submit_button("Train probe", type="primary"):
        try:
            st.session_state["probe_id"] = backend.train_probe(
                state.db(), model, label, weak, target
            )
        except ValueError as err:
            # the message instead of a probe: an older probe below would read as this one's
            st.session_state.pop("probe_id", None)
            st.error(f"Cannot train a probe for '{label}': {err}")
            st.stop()

probe_id = state.current_probe(model)
if probe_id is None:
    st.info(f"Train a probe on {model} to see its cross-validated metrics.")
    st.stop()

info = state.probe_info(path, probe_id)
m = info["metrics"]
st.subheader(f"Probe {probe_id}: '{info['label']}' on {info['model']}")
k1, k2, k3, k4 = st.columns(4)
k1.metric("Average precision (CV)", backend.fmt_metric(m.get("average_precision")))
k2.metric("ROC-AUC (CV)", backend.fmt_metric(m.get("roc_auc")))
k3.metric("Precision @ threshold", backend.fmt_metric(m.get("precision")))
k4.metric("Recall @ threshold", backend.fmt_metric(m.get("recall")))
st.caption(
    f"{m.get('n_pos', 0)} positive and {m.get('n_neg', 0)} negative windows; threshold "
    f"{info['threshold']:.3f}. Cross-validation is grouped by recording"
    + (f": {describe_cv(m)}." if describe_cv(m) else ".")
)
if m.get("cv_error"):
    st.warning(f"No cross-validated metrics: {m['cv_error']}. Label windows in more recordings.")
for note in backend.metric_notes(info["label"], m):
    st.warning(note)
curve = m.get("pr_curve")
if curve:
    st.plotly_chart(
        plots.pr_curve(
            curve["precision"],
            curve["recall"],
            m.get("average_precision"),
            (m["recall"], m["precision"]),
            info["label"],
        ),
        width="stretch",
        theme=None,
    )

st.subheader("Score the archive")
scores = state.archive_scores(path, model, version, probe_id)
threshold = st.slider(
    "Detection threshold",
    0.0,
    1.0,
    round(float(info["threshold"]), 3),
    0.001,
    format="%.3f",
    key=f"thr_{probe_id}",
)
n_det = int((scores["score"] >= threshold).sum())
st.write(f"{n_det:,} of {len(scores):,} windows score ≥ {threshold:.3f}.")
st.plotly_chart(plots.score_histogram(scores["score"], threshold), width="stretch", theme=None)

st.subheader("Review")
top, unsure, diverse = st.tabs(["Top scores", "Most uncertain", "Diverse"])
labels = state.labels_version()  # a label written from a queue takes its window out
for tab, queue in ((top, "top"), (unsure, "uncertain"), (diverse, "diverse")):
    with tab:
        rows = state.review_queue(path, model, version, labels, probe_id, queue, QUEUE_SIZE)
        widgets.card_grid(rows, info["label"], f"rev_{queue}")

st.subheader("Export detections")
d1, d2 = st.columns(2)
d1.download_button(
    "Detections (CSV)",
    state.detection_files(path, version, probe_id, threshold, "csv"),
    f"{info['label']}_detections.csv",
    "text/csv",
    key="dl_csv",
)
d2.download_button(
    "Detections (Raven tables, zip)",
    state.detection_files(path, version, probe_id, threshold, "raven"),
    f"{info['label']}_detections_raven.zip",
    "application/zip",
    key="dl_raven",
)
