"""Choices that outlive a browser session (explorer/app/prefs.py over index/ui_state.py): the Map
page's projection and colouring, and finished clusterings — the app's own or `chorus cluster`'s —
reopened on the Clusters page without computing. Each AppTest is a new browser session."""

from __future__ import annotations

import json

import pytest
from test_explorer_app import APP, TIMEOUT, make_fixture_db

from explorer.app import prefs
from explorer.cli import main
from index import ui_state


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory):
    return make_fixture_db(tmp_path_factory.mktemp("explorer_prefs"))[0]


def _session(db_path, monkeypatch, page: str | None = None):
    """A new browser session of the app on ``db_path``, on ``page`` if given."""
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CHORUS_DB", str(db_path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    if page:
        at.switch_page(f"pages/{page}.py")
        at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def test_pick_keeps_only_values_among_the_options():
    choices = {"m": (("pca", "umap"), "pca"), "n": ((1000, 5000), 5000), "b": ((True,), True)}
    assert prefs.pick({"m": "umap", "n": 1000}, choices) == {"m": "umap", "n": 1000, "b": True}
    bad = {"m": "tsne", "n": 1000.5, "b": 1, "other": "x"}
    assert prefs.pick(bad, choices) == {"m": "pca", "n": 5000, "b": True}
    entry = {"params": {"method": "kmeans", "k": 4, "pca_dim": None, "min_cluster_size": None}}
    entry |= {"n_clusters": 4, "n_windows": 36, "created_at": "2024-06-10T05:00:00+00:00"}
    assert prefs.describe_clustering(entry) == (
        "k-means, k=4: 4 clusters over 36 windows, 2024-06-10 05:00"
    )
    hdb = {"method": "hdbscan", "k": None, "pca_dim": 8, "min_cluster_size": 5, "seed": 0}
    assert prefs.cluster_params("m", "w1-r1", hdb) == ("m", "w1-r1", "hdbscan", 20, 8, 5, 0)


def test_map_choices_open_the_next_session(fixture_db, monkeypatch):
    at = _session(fixture_db, monkeypatch, "map")
    assert at.radio(key="map_colour").value == "site"  # nothing remembered yet: the defaults
    at.select_slider(key="map_n").set_value(5_000).run()
    at.radio(key="map_colour").set_value("hour").run()
    assert not at.exception, [e.value for e in at.exception]
    saved = ui_state.section(fixture_db, "map")
    assert saved == {"map_method": "pca", "map_n": 5_000, "map_colour": "hour"}
    # leaving the page and coming back keeps them too (Streamlit forgets a page's widgets)
    at.switch_page("pages/archive.py").run()
    at.switch_page("pages/map.py").run()
    assert at.radio(key="map_colour").value == "hour"
    again = _session(fixture_db, monkeypatch, "map")
    assert again.radio(key="map_colour").value == "hour"
    assert again.select_slider(key="map_n").value == 5_000
    # a value this version does not offer falls back to the default instead of failing
    ui_state.update(fixture_db, "map", {"map_colour": "mood", "map_n": "many"})
    third = _session(fixture_db, monkeypatch, "map")
    assert third.radio(key="map_colour").value == "site"
    assert third.select_slider(key="map_n").value == 50_000


def test_a_cli_clustering_opens_in_the_app_without_computing(fixture_db, monkeypatch, capsys):
    import index.cluster as cluster

    assert main(["cluster", "--db", str(fixture_db), "--k", "4"]) == 0
    capsys.readouterr()

    def refuse(*args, **kwargs):
        raise AssertionError("the app computed a finished clustering again")

    monkeypatch.setattr(cluster, "cluster_reduced", refuse)
    at = _session(fixture_db, monkeypatch, "clusters")
    offered = at.selectbox(key="cl_finished")
    assert any("k-means, k=4: 4 clusters over 36 windows" in o for o in offered.options)
    at.button(key="cl_open").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("4 clusters over 36 windows" in m.value for m in at.markdown)
    assert at.number_input(key="cl_k").value == 4  # the form shows what is open
    # the next session reopens it by itself, on the Clusters page and in the map's colours
    again = _session(fixture_db, monkeypatch, "clusters")
    assert any("4 clusters over 36 windows" in m.value for m in again.markdown)
    assert again.number_input(key="cl_k").value == 4
    again.switch_page("pages/map.py").run()
    again.radio(key="map_colour").set_value("cluster").run()
    assert not again.exception, [e.value for e in again.exception]
    assert not any("No clustering yet" in c.value for c in again.caption)
    names = {t["name"] for t in json.loads(again.get("plotly_chart")[0].proto.spec)["data"]}
    assert names == {"0", "1", "2", "3"}


def test_a_clustering_run_in_the_app_is_remembered_for_the_next_session(fixture_db, monkeypatch):
    at = _session(fixture_db, monkeypatch, "clusters")
    at.number_input(key="cl_k").set_value(3)
    at.button(key="FormSubmitter:cluster_form-Run clustering").click().run()
    assert any("3 clusters over 36 windows" in m.value for m in at.markdown)
    assert ui_state.section(fixture_db, "clusters")["spectral"]["k"] == 3
    again = _session(fixture_db, monkeypatch, "clusters")
    assert any("3 clusters over 36 windows" in m.value for m in again.markdown)
    assert any("k-means, k=3" in o for o in again.selectbox(key="cl_finished").options)
