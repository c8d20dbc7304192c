"""Map: every window as a point (PCA or UMAP of a sample), coloured by site, hour, cluster, label or
probe score. Draw a box or lasso around points to list them, listen, see spectrograms, label them.
The projection, point count and colouring are remembered for the next session (``prefs``)."""

import streamlit as st

from explorer import plots
from explorer.app import backend, prefs, state, widgets

MAX_CARDS = 12  # selected windows shown as cards (all of them go in the table and the bulk label)
MAX_SELECTED = 5000  # windows taken from one selection (a lasso over a 50 k map can hold them all)

METHODS = ("pca", "umap")
POINTS = (1_000, 5_000, 20_000, 50_000)
COLOURS = ("site", "hour", "cluster", "label", "score")
# a new session opens with this database's last choices (widget key -> options, default)
CHOICES = {
    "map_method": (METHODS, "pca"),
    "map_n": (POINTS, 50_000),
    "map_colour": (COLOURS, "site"),
}

st.title("Map")
model = state.require_model()
prefs.restore("map", CHOICES)
c1, c2, c3 = st.columns([1, 1, 2])
method = c1.radio("Projection", METHODS, horizontal=True, key="map_method")
n = c2.select_slider("Points", POINTS, key="map_n")
colour = c3.radio("Colour by", COLOURS, horizontal=True, key="map_colour")
prefs.remember("map", list(CHOICES))

version = backend.table_version(state.db(), model)
try:
    fig, note, n_points = state.map_figure(model, version, method, n, colour)
except ValueError as err:  # e.g. fewer windows than a map needs
    st.info(f"No map for {model}: {err}.")
    st.stop()
if note:
    st.caption(note)
event = st.plotly_chart(
    fig,
    on_select="rerun",
    selection_mode=("box", "lasso"),
    key="map_chart",
    width="stretch",
    theme=None,
)
st.caption(f"{n_points:,} windows shown. Box- or lasso-select points to listen and label them.")

ids = plots.selected_window_ids(event["selection"] if event else None)
if len(ids) > MAX_SELECTED:
    st.warning(f"{len(ids):,} points selected; using the first {MAX_SELECTED:,}.")
    ids = ids[:MAX_SELECTED]
if ids:
    rows = state.selected_rows(state.db_path(), model, version, tuple(ids))
    st.subheader(f"{len(rows)} selected windows")
    label = widgets.label_picker("map_label")
    st.write("Label all selected windows:")
    widgets.label_buttons(rows, label, "map_bulk", bulk=True)
    st.dataframe(
        rows[["window_id", "path", "site", "start_s", "end_s", "hour"]],
        hide_index=True,
        width="stretch",
        height=200,
    )
    if len(rows) > MAX_CARDS:
        st.caption(f"Listening to the first {MAX_CARDS} of {len(rows)}.")
    widgets.card_grid(rows.head(MAX_CARDS), label, "map_card", score_col=None)
