"""Archive: what is in the database — recordings, hours, sites, dates, windows per model, failures."""

import streamlit as st

from explorer.app import state

st.title("Archive")
s = state.archive_summary(state.db_path())

c1, c2, c3, c4 = st.columns(4)
c1.metric("Recordings", f"{s.n_recordings:,}", help="readable recordings, as `chorus info`")
c2.metric("Hours", f"{s.hours:,.1f}")
c3.metric("Sites", len(s.sites))
c4.metric("Failed files", s.n_failed)
st.write(f"Dates: {s.dates}.")
if s.sites:
    st.write("Sites: " + ", ".join(f"`{x}`" for x in s.sites))

st.subheader("Windows per model")
if s.windows:
    st.dataframe([{"model": m, "windows": n} for m, n in s.windows.items()], hide_index=True)
else:
    st.info("No embeddings yet: run `chorus embed ARCHIVE --db ...`.")

failed = s.recordings[s.recordings["status"] == "failed"] if s.n_failed else None
if failed is not None:
    st.subheader("Files that could not be decoded")
    st.dataframe(failed[["path", "error"]], hide_index=True, width="stretch")

partial = s.recordings[s.recordings["status"] == "partial"]
if len(partial):
    st.subheader("Damaged files, embedded as far as they decode")
    st.dataframe(
        partial[["path", "duration_s", "error"]].rename(columns={"error": "damage"}),
        hide_index=True,
        width="stretch",
    )

st.subheader("Recordings")
cols = [
    c
    for c in ("path", "site", "start_time", "duration_s", "sample_rate", "channels", "status")
    if c in s.recordings.columns
]
st.dataframe(s.recordings[cols], hide_index=True, width="stretch")
