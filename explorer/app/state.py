"""Streamlit glue: where the database path lives, cached resources (database, models) and cached
results (summaries, map points, audio clips, spectrograms). Pages call these and draw.

Cached functions take the database path and the table versions they derive from as arguments
(pages pass ``backend.table_version``), so a new label or new windows invalidate only what depends
on them: a label click refreshes the label colouring, never the projection. Pages call
``backend`` or ``index`` directly where there is nothing to cache.
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd
import streamlit as st

from explorer import plots
from explorer.app import audio_access, backend, survey

ENV_DB = "CHORUS_DB"  # database path when no --db is given (tests)
MAX_PLAYBACK_SR = 48000  # Hz: clips are played and drawn at the file's rate, at most this
VIEW_SR = 32000  # Hz, at most, for the span picker's long spectrogram
CARD_SIZE = (320, 120)  # spectrogram card (width, height) px


def init_db_path(argv: list[str]) -> None:
    """Remember the database path given after ``--`` (``--db PATH``) or in ``CHORUS_DB``."""
    if "db_path" in st.session_state:
        return
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--db")
    args, _ = parser.parse_known_args(argv)
    st.session_state["db_path"] = args.db or os.environ.get(ENV_DB)


def db_path() -> str | None:
    return st.session_state.get("db_path")


@st.cache_resource(show_spinner=False)
def _connect(path: str):
    import index

    return index.connect(path, create=False)  # never create a database from the app


def db():
    """The open database of this session (one connection per path, shared across sessions)."""
    return _connect(db_path())


def sidebar_model_picker() -> None:
    """Model selector shared by all pages; the choice lives in ``st.session_state["model"]``.

    The widget has its own key so the choice survives pages that do not draw the sidebar.
    """
    names = backend.model_names(db())
    if not names:
        st.sidebar.warning("No embeddings yet: run `chorus embed` first.")
        return
    current = model()
    st.sidebar.selectbox(
        "Embedding model",
        names,
        index=names.index(current) if current in names else 0,
        key="_model_picker",
        on_change=lambda: st.session_state.update(model=st.session_state["_model_picker"]),
    )


def model() -> str | None:
    """The chosen model, defaulting to the first one with windows."""
    name = st.session_state.get("model")
    if name is None:
        names = backend.model_names(db())
        name = st.session_state["model"] = names[0] if names else None
    return name


def require_model() -> str:
    """The selected model, or stop the page with a hint."""
    name = model()
    if name is None:
        st.info("This database has no embeddings yet: run `chorus embed ARCHIVE --db ...` first.")
        st.stop()
    return name


def require_probes(model: str):
    """The stored probes of ``model`` (``survey.model_probes``), or stop the page with a hint."""
    probes = survey.model_probes(db(), model)
    if probes.empty:
        st.info(f"No probe for {model} yet: train one on the Classify or Agile page.")
        st.stop()
    return probes


def roots() -> list:
    return audio_access.audio_roots(db().meta)


# --------------------------------------------------------------------------------------------------
# Cached results (arguments starting with "_" are not hashed; the path/version arguments key them)


@st.cache_data(show_spinner=False, ttl=30)
def archive_summary(path: str) -> backend.ArchiveSummary:
    return backend.archive_summary(_connect(path))


@st.cache_data(show_spinner="Projecting windows…", max_entries=8)
def map_points(path: str, model: str, version: str, method: str, n: int) -> pd.DataFrame:
    """Sampled windows with 2-D coordinates; only new table versions recompute it."""
    return backend.map_points(_connect(path), model, method, n)


def playback_rate(sample_rate) -> int:
    """Rate (Hz) a file is read at for listening: its own, capped at ``MAX_PLAYBACK_SR``."""
    try:
        sr = int(sample_rate)
    except (TypeError, ValueError):
        return MAX_PLAYBACK_SR
    return min(sr, MAX_PLAYBACK_SR) if sr > 0 else MAX_PLAYBACK_SR


@st.cache_data(show_spinner=False, max_entries=4096)
def clip(
    path: str, abs_path: str, start_s: float, end_s: float, channel, sr: int, stamp=None
) -> np.ndarray:
    """Audio of a window read from its original file (``(n,)`` at ``sr``); ``stamp`` (the file's
    size and mtime) keys it too, so a replaced file is read again."""
    channel = -1 if channel is None or channel != channel else int(channel)  # NaN: mix
    return audio_access.read_span(abs_path, roots(), start_s, end_s, sr, channel)


@st.cache_data(show_spinner=False, max_entries=4096)
def card_png(
    path: str,
    abs_path: str,
    start_s: float,
    end_s: float,
    channel,
    sr: int,
    stamp=None,
    band_khz: tuple[float, float] | None = None,
) -> bytes:
    """A card's spectrogram with time and frequency axes, drawn over ``band_khz`` (kHz)."""
    audio = clip(path, abs_path, start_s, end_s, channel, sr, stamp)
    band = None if band_khz is None else (band_khz[0] * 1000.0, band_khz[1] * 1000.0)
    if band is not None and band[0] >= sr / 2:  # the sidebar's band is above this recording's
        band = None  # Nyquist (it spans the archive's highest rate): its whole range instead
    return plots.spectrogram_card_png(audio, sr, float(start_s), band, size=CARD_SIZE)


def sidebar_card_band() -> None:
    """Frequency range of every card's spectrogram (kHz), chosen once in the sidebar."""
    rates = archive_summary(db_path()).recordings.get("sample_rate")
    top = MAX_PLAYBACK_SR / 2000.0
    if rates is not None and rates.notna().any():
        top = min(top, float(rates.max()) / 2000.0)
    st.sidebar.slider(
        "Card frequency range (kHz)",
        0.0,
        top,
        (0.0, top),
        step=0.5,
        key="card_khz",
        help="The band drawn on the window cards' spectrograms.",
    )


def card_band() -> tuple[float, float] | None:
    """The sidebar's card frequency range (kHz), or None before the sidebar is drawn."""
    band = st.session_state.get("card_khz")
    return (float(band[0]), float(band[1])) if band and band[1] > band[0] else None


# --------------------------------------------------------------------------------------------------
# Search session: the list of query examples and the last hits


def queries() -> list[backend.Query]:
    return st.session_state.setdefault("queries", [])


def add_query(kind: str, source: str, vector: np.ndarray, span=None) -> None:
    queries().append(backend.Query(kind, source, np.asarray(vector, np.float32), span))
    st.session_state.pop("hits", None)


def add_upload_query(upload, kind: str) -> None:
    """Embed an uploaded clip (size- and length-checked) and add it to the queries."""
    import tempfile
    from pathlib import Path

    from embedder.audio import probe
    from explorer.ingest import embed_span

    data = upload.getvalue()
    limit = min(backend.MAX_UPLOAD_BYTES, int(st.get_option("server.maxUploadSize")) * 2**20)
    if len(data) > limit:
        raise audio_access.AudioAccessError(
            f"{upload.name} is {len(data) / 2**20:.1f} MB; the limit is {limit / 2**20:.0f} MB"
        )
    suffix = Path(upload.name).suffix[:8]
    with tempfile.TemporaryDirectory(prefix="chorus-upload-") as tmp:
        path = Path(tmp) / f"query{suffix}"
        path.write_bytes(data)
        info = probe(path)
        if info.duration_s > audio_access.MAX_UPLOAD_S:
            raise audio_access.AudioAccessError(
                f"{upload.name} lasts {info.duration_s:.0f} s; upload at most "
                f"{audio_access.MAX_UPLOAD_S:.0f} s (cut the call you want to find)"
            )
        vec = embed_span(db(), require_model(), path)
    add_query(kind, f"upload: {upload.name}", vec)


def add_span_query(abs_path: str, rel_path: str, start_s: float, end_s: float, kind: str) -> None:
    """Embed a span of a registered recording and add it to the queries."""
    from explorer.ingest import embed_span

    p = audio_access.safe_path(abs_path, roots())
    vec = embed_span(db(), require_model(), p, start_s, end_s)
    recs = db().recordings()
    rid = recs.loc[recs["abs_path"] == abs_path, "recording_id"]
    span = (int(rid.iloc[0]), float(start_s), float(end_s)) if len(rid) else None
    add_query(kind, f"{rel_path} @ {start_s:.1f}–{end_s:.1f} s", vec, span)


SPAN_STEP = 0.05  # s: the span slider's step; a dragged box is rounded to it


def pick_span(selection: dict | None, lo: float, hi: float) -> bool:
    """Take a box dragged on the span picker's spectrogram as the span slider's next value.

    The slider exists by now, so its value is set at the start of the next run
    (``pending_span``): the caller reruns when this returns True. What is shaded and shown on the
    slider is then exactly the span the query uses.
    """
    picked = plots.selected_span(selection)
    if picked is None or picked == st.session_state.get("span_picked"):
        return False
    st.session_state["span_picked"] = picked  # the chart keeps reporting it: apply it once
    a, b = (round(min(max(x, lo), hi) / SPAN_STEP) * SPAN_STEP for x in picked)
    if b - a < SPAN_STEP:
        return False
    st.session_state["span_pending"] = (round(a, 3), round(b, 3))
    return True


def pending_span() -> None:
    """Move a dragged span into the slider's state (before the slider is drawn)."""
    span = st.session_state.pop("span_pending", None)
    if span is not None:
        st.session_state["span"] = span


@st.cache_data(show_spinner=False, max_entries=64)
def recording_view(path: str, abs_path: str, start_s: float, end_s: float, sr: int) -> np.ndarray:
    """Audio of a stretch of a recording for the span picker (mono, at ``sr``)."""
    return audio_access.read_span(abs_path, roots(), start_s, end_s, sr)


# --------------------------------------------------------------------------------------------------
# Clusters, labels and probe scores (overlays on the map; each keyed by its own version)


@st.cache_data(show_spinner="Clustering…", max_entries=8)
def clusters(
    path: str,
    model: str,
    version: str,
    method: str,
    k: int,
    pca_dim: int | None = None,
    min_cluster_size: int | None = None,
    seed: int = 0,
):
    from index.cluster import cluster_windows

    return cluster_windows(_connect(path), model, method, int(k), pca_dim, min_cluster_size, seed)


def current_clusters():
    """The clustering last run on the Clusters page for the current model, or None."""
    params = st.session_state.get("cluster_params")
    if not params or params[0] != model():
        return None
    return clusters(db_path(), *params)


def labels_version() -> int:
    """Version of the labels table: label overlays and review queues are keyed by it."""
    from index.labels import labels_table

    return int(labels_table(db()).version)


@st.cache_data(show_spinner=False, max_entries=8)
def all_labels(path: str, labels_version: int) -> pd.DataFrame:
    """Every label with its recording's path (the Labels page); keyed by the labels version."""
    from index.labels import list_labels

    return list_labels(_connect(path))


def _overlay_key(colour: str):
    """What the colouring depends on besides the windows: labels, clustering or probe."""
    if colour == "label":
        return ("labels", labels_version())
    if colour == "cluster":
        return ("clusters", st.session_state.get("cluster_params"))
    if colour == "score":
        return ("probe", current_probe(model()))
    return None


# cache_resource, not cache_data: every rerun must get the very same figure object. An unpickled
# copy serialises with another key order, which gives the chart a new element id and drops the
# user's box/lasso selection on the rerun that delivers it.
@st.cache_resource(show_spinner="Drawing the map…", max_entries=16)
def _map_figure(path, model, version, method, n, colour, overlay_key):
    points = map_points(path, model, version, method, n)
    db_ = _connect(path)
    note = None
    if colour == "label":
        points = points.assign(label=backend.window_labels(db_, model, points)["label"].to_numpy())
    elif colour == "cluster":
        params = overlay_key[1]
        try:
            res = clusters(path, *params) if params and params[0] == model else None
        except ValueError:  # settings the Clusters page refused
            res = None
        if res is not None:
            cl = res.assignments.set_index("window_id")["cluster"]
            points = points.assign(cluster=points["window_id"].map(cl))
        else:
            note, colour = "No clustering yet: run one on the Clusters page.", None
    elif colour == "score":
        probe_id = overlay_key[1]
        if probe_id is not None:
            _, vecs = db_.vectors(model, points["window_id"].to_numpy())
            points = points.assign(score=backend.probe_scores(db_, model, probe_id, vecs))
        else:
            note, colour = f"No probe for {model} yet: train one on the Classify page.", None
    fig = plots.scatter_map(points, color=colour)
    return fig, note, len(points)


def map_figure(model: str, version: str, method: str, n: int, colour: str):
    """(figure, note, n_points) of the map; a label write redraws only a label-coloured map."""
    return _map_figure(db_path(), model, version, method, n, colour, _overlay_key(colour))


@st.cache_data(show_spinner=False, max_entries=32)
def selected_rows(path: str, model: str, version: str, ids: tuple) -> pd.DataFrame:
    """Windows picked on the map, with their recordings (read once per selection and version)."""
    return backend.windows_by_id(_connect(path), model, list(ids))


# --------------------------------------------------------------------------------------------------
# Probes


@st.cache_data(show_spinner=False, max_entries=32)
def probe_info(path: str, probe_id: int) -> dict:
    return backend.probe_info(_connect(path), probe_id)


def current_probe(model: str | None) -> int | None:
    """The session's probe if it was trained on ``model``: another model's windows do not fit it."""
    probe_id = st.session_state.get("probe_id")
    if probe_id is None or model is None or probe_info(db_path(), int(probe_id))["model"] != model:
        return None
    return int(probe_id)


@st.cache_data(show_spinner="Scoring the archive…", max_entries=8)
def archive_scores(path: str, model: str, version: str, probe_id: int) -> pd.DataFrame:
    return backend.archive_scores(_connect(path), model, probe_id)


@st.cache_data(show_spinner="Choosing windows to review…", max_entries=32)
def review_queue(path, model, version, labels_version, probe_id, strategy, n) -> pd.DataFrame:
    """Review queue; keyed by the labels version too, so labelled windows leave it."""
    return backend.review_queue(_connect(path), model, probe_id, strategy, n)


@st.cache_data(show_spinner="Collecting detections…", max_entries=16)
def _detections(path: str, version: str, probe_id: int, threshold: float) -> pd.DataFrame:
    from index.classify import classify

    # not stored: the app only offers them for download
    return classify(_connect(path), probe_id, threshold=threshold, store=False)


@st.cache_data(show_spinner="Packing the Raven tables…", max_entries=8)
def detection_files(path: str, version: str, probe_id: int, threshold: float, fmt: str) -> bytes:
    """Download bytes ("csv" or "raven" zip), built once per threshold, not on every rerun."""
    det = _detections(path, version, probe_id, threshold)
    return backend.detections_csv(det) if fmt == "csv" else backend.detections_raven(det)
