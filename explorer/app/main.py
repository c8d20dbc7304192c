"""Entry point of the Chorus explorer: ``streamlit run explorer/app/main.py -- --db survey.chorus``.

The database path comes from ``--db`` after Streamlit's ``--`` (or the ``CHORUS_DB`` environment
variable, used by tests); each page is a short script under ``pages/``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import streamlit as st

# `streamlit run` puts this file's folder, not the repository, on sys.path.
_REPO = Path(__file__).resolve().parents[2]
if str(_REPO) not in sys.path:
    sys.path.insert(0, str(_REPO))

from explorer.app import prefs, state  # noqa: E402

PAGES = Path(__file__).resolve().parent / "pages"
FAVICON = "🐦"

# An emoji favicon is drawn in the page itself; without one the browser tab shows each page's
# Material icon, which Streamlit fetches from fonts.gstatic.com (the app must work offline).
st.set_page_config(page_title="Chorus explorer", page_icon=FAVICON, layout="wide")
state.init_db_path(sys.argv[1:])
db_path = state.db_path()
if db_path is None:
    st.error("No database given: start the app with `chorus explore --db survey.chorus`.")
    st.stop()
try:
    state.db()
except (FileNotFoundError, RuntimeError) as err:
    st.error(f"Cannot open the database: {err}")
    st.stop()

nav = st.navigation(
    [
        st.Page(PAGES / "archive.py", title="Archive", icon=":material/inventory_2:", default=True),
        st.Page(PAGES / "map.py", title="Map", icon=":material/scatter_plot:"),
        st.Page(PAGES / "search.py", title="Search", icon=":material/search:"),
        st.Page(PAGES / "classify.py", title="Classify", icon=":material/model_training:"),
        st.Page(PAGES / "clusters.py", title="Clusters", icon=":material/bubble_chart:"),
        st.Page(PAGES / "agile.py", title="Agile", icon=":material/autorenew:"),
        st.Page(PAGES / "density.py", title="Density", icon=":material/density_medium:"),
        st.Page(PAGES / "activity.py", title="Activity", icon=":material/calendar_view_month:"),
        st.Page(PAGES / "labels.py", title="Labels", icon=":material/label:"),
    ]
)
st.sidebar.caption(f"Database: `{db_path}`")
state.sidebar_model_picker()
state.sidebar_card_band()
prefs.restore_clustering(state.model())  # the map's cluster colours need it on any page
nav.run()
