"""Choices that outlive a browser session: the Map page's projection and colouring, and the last
clustering of each model, kept in the database folder (``index.ui_state``) so that a new session
of ``chorus explore`` opens where the last one left off.

Widgets are seeded, not given defaults: before a page draws them, a key that is missing from the
session (a new session, or a page visited again, since Streamlit forgets the widgets of a page
left) takes the remembered value when it is still one of the options, else the page's default.
The pure helpers (``pick``, ``describe_clustering``, ``cluster_params``) take plain values and
are tested without Streamlit.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import streamlit as st

from explorer.app import backend, state

CLUSTERS = "clusters"  # ui_state section: model -> params of its last clustering
DEFAULT_K = 20  # the Clusters page's k when a remembered clustering has none (HDBSCAN)
# the Clusters form's choices, by the parameter names of a remembered clustering
CLUSTER_FORM = {"method": (("kmeans", "hdbscan"), "kmeans"), "k": (range(2, 501), DEFAULT_K)}
_SAVED = "_prefs_saved"  # session copy of what was last written, so reruns do not rewrite it
_log = logging.getLogger(__name__)

Choices = dict[str, tuple[Sequence[Any], Any]]  # widget key -> (options, default)


def pick(saved: dict[str, Any], choices: Choices) -> dict[str, Any]:
    """The value of each widget key: the remembered one if it is among the options, else the
    default (a file from another version or another person may hold anything)."""
    out = {}
    for key, (options, default) in choices.items():
        value = saved.get(key, default)
        out[key] = value if _among(value, options) else default
    return out


def _among(value: Any, options: Sequence[Any]) -> bool:
    try:
        return any(value == o and type(value) is type(o) for o in options)
    except (TypeError, ValueError):
        return False


def restore(section: str, choices: Choices) -> None:
    """Seed the missing widget keys of ``choices`` from the database's remembered section."""
    if all(k in st.session_state for k in choices):
        return
    from index import ui_state

    _seed(pick(ui_state.section(state.db(), section), choices))


def _seed(values: dict[str, Any]) -> None:
    for key, value in values.items():
        st.session_state.setdefault(key, value)


def remember(section: str, keys: Sequence[str]) -> None:
    """Write the current values of widget ``keys`` to the database's section when they changed."""
    values = {k: st.session_state.get(k) for k in keys}
    _save(section, values, section)


def _save(section: str, values: dict[str, Any], tag: str) -> None:
    """Merge ``values`` into ``section`` of the file unless this session last wrote them (``tag``
    names what was written, so reruns that change nothing do not touch the disk)."""
    from index import ui_state

    saved = st.session_state.setdefault(_SAVED, {})
    if saved.get(tag) == values:
        return
    try:
        ui_state.update(state.db(), section, values)
    except OSError as err:  # a read-only database: the choices only last this session
        _log.warning("cannot remember the explorer's choices in %s: %s", state.db_path(), err)
    saved[tag] = values


# --------------------------------------------------------------------------------------------------
# Clusterings


def cluster_params(model: str, version: str, params: dict[str, Any]) -> tuple:
    """The session's ``cluster_params`` (the arguments of ``state.clusters`` after the path) for
    ``index.cluster.cluster_windows`` keyword arguments ``params``."""
    k = params.get("k")
    return (
        model,
        version,
        str(params.get("method", "kmeans")),
        int(k) if k is not None else DEFAULT_K,
        params.get("pca_dim"),
        params.get("min_cluster_size"),
        int(params.get("seed") or 0),
    )


def describe_clustering(entry: dict[str, Any]) -> str:
    """One line for a finished clustering (``index.cluster.finished_clusterings``)."""
    p = entry["params"]
    what = f"k-means, k={p['k']}" if p["method"] == "kmeans" else "HDBSCAN"
    extra = [
        f"{name} {p[key]}"
        for key, name in (("min_cluster_size", "min size"), ("pca_dim", "PCA"), ("seed", "seed"))
        if p.get(key)
    ]
    when = str(entry.get("created_at", ""))[:16].replace("T", " ")
    return (
        f"{what}{' (' + ', '.join(extra) + ')' if extra else ''}: {entry.get('n_clusters', '?')} "
        f"clusters over {int(entry.get('n_windows') or 0):,} windows{', ' + when if when else ''}"
    )


def finished(model: str) -> list[dict]:
    """Finished clusterings of ``model`` for its current tables, newest first."""
    from index.cluster import finished_clusterings

    return finished_clusterings(state.db(), model)


def open_clustering(model: str, params: dict[str, Any]) -> None:
    """Button callback: show a finished clustering (read from the cache, not computed); the
    form takes its settings."""
    version = backend.table_version(state.db(), model)
    st.session_state["cluster_params"] = cluster_params(model, version, params)
    st.session_state["cl_method"] = params["method"]
    if params.get("k") is not None:
        st.session_state["cl_k"] = int(params["k"])


def restore_clustering(model: str | None) -> None:
    """Once per session and model: reopen the model's last clustering if it is still finished
    (same windows and recordings), so the Clusters page and the map's cluster colours show it."""
    if model is None or st.session_state.get("_cl_restored") == model:
        return
    st.session_state["_cl_restored"] = model
    current = st.session_state.get("cluster_params")
    if current and current[0] == model:
        return
    from index import ui_state

    last = ui_state.section(state.db(), CLUSTERS).get(model)
    if not isinstance(last, dict):
        return
    for entry in finished(model):
        if all(entry["params"].get(k) == last.get(k) for k in entry["params"]):
            open_clustering(model, entry["params"])
            return


def remember_clustering(model: str, params: dict[str, Any]) -> None:
    """Remember ``params`` (``ClusterResult.params``) as the model's last clustering."""
    _save(CLUSTERS, {model: dict(params)}, f"{CLUSTERS}:{model}")


def restore_cluster_form(model: str) -> None:
    """Seed the Clusters form (method, k) with the model's last clustering, or the defaults."""
    if all(k in st.session_state for k in ("cl_method", "cl_k")):
        return
    from index import ui_state

    last = ui_state.section(state.db(), CLUSTERS).get(model)
    values = pick(last if isinstance(last, dict) else {}, CLUSTER_FORM)
    _seed({"cl_method": values["method"], "cl_k": values["k"]})
