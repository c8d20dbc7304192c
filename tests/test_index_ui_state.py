"""The explorer's remembered choices (index/ui_state.py) and the listing of finished clusterings
(index.cluster.finished_clusterings) that lets a new session reopen them without computing."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from agile_synth import MODEL, make_synth_db

from index import ui_state
from index.cluster import cluster_windows, finished_clusterings


@pytest.fixture
def synth(tmp_path):
    return make_synth_db(tmp_path, n_recordings=2, windows_per_recording=12, dim=8)


def test_choices_are_remembered_merged_and_written_whole(synth):
    db = synth.db
    assert ui_state.load(db) == {} and ui_state.section(db, "map") == {}
    assert ui_state.update(db, "map", {"map_method": "umap", "map_n": 5000})
    assert not ui_state.update(db, "map", {"map_n": 5000})  # unchanged: not written again
    assert ui_state.update(db, "map", {"map_colour": "label"})
    assert ui_state.update(db, "clusters", {MODEL: {"method": "kmeans", "k": (3,)}})
    # another session (another connection) reads the same choices
    assert ui_state.section(str(db.path), "map") == {
        "map_method": "umap",
        "map_n": 5000,
        "map_colour": "label",
    }
    assert ui_state.section(db, "clusters")[MODEL]["k"] == [3]
    assert not ui_state.update(db, "clusters", {MODEL: {"method": "kmeans", "k": (3,)}})
    leftovers = [p.name for p in db.path.iterdir() if p.name.startswith(".")]
    assert not leftovers  # atomic: no temporary file left behind
    with pytest.raises(TypeError):
        ui_state.update(db, "map", {"map_n": object()})


@pytest.mark.parametrize(
    "content", ["{not json", "[1, 2]", json.dumps({"sections": [1]}), json.dumps({"x": 1})]
)
def test_a_damaged_or_foreign_file_reads_as_nothing_remembered(synth, content):
    ui_state.state_path(synth.db).write_text(content)
    assert ui_state.load(synth.db) == {}
    assert ui_state.update(synth.db, "map", {"map_n": 1000})  # and is replaced by a good one
    assert ui_state.section(synth.db, "map") == {"map_n": 1000}


def test_finished_clusterings_are_listed_for_the_current_tables_only(synth, monkeypatch):
    db = synth.db
    assert finished_clusterings(db, MODEL) == []
    cluster_windows(db, MODEL, k=3)
    cluster_windows(db, MODEL, method="kmeans", k=4, seed=2)
    found = finished_clusterings(db, MODEL)
    assert sorted((e["params"]["k"], e["params"]["seed"]) for e in found) == [(3, 0), (4, 2)]
    entry = next(e for e in found if e["params"]["k"] == 4)
    assert entry["n_windows"] == 24 and entry["n_clusters"] == 4
    assert set(entry["params"]) == {"method", "k", "pca_dim", "min_cluster_size", "seed"}
    # what is listed opens without computing again
    import index.cluster as cluster

    def refuse(*args, **kwargs):
        raise AssertionError("recomputed a listed clustering")

    with monkeypatch.context() as m:
        m.setattr(cluster, "cluster_reduced", refuse)
        again = cluster_windows(db, MODEL, **entry["params"])
    assert again.assignments["cluster"].nunique() == 4
    # new windows: the old clusterings no longer describe the table, so none is offered
    rid = int(synth.windows["recording_id"].iloc[0])
    rows = pd.DataFrame(
        {"recording_id": [rid], "start_s": [60.0], "end_s": [65.0], "vector": [np.ones(8)]}
    )
    db.add_embeddings(MODEL, rows)
    assert finished_clusterings(db, MODEL) == []


def test_a_clustering_cached_before_the_listing_is_listed_once_read(synth):
    from index.cache import cache_dir

    cluster_windows(synth.db, MODEL, k=3)
    for sidecar in cache_dir(synth.db).glob("*.params.json"):
        sidecar.unlink()  # as written by an older Chorus
    assert finished_clusterings(synth.db, MODEL) == []
    cluster_windows(synth.db, MODEL, k=3)
    assert [e["params"]["k"] for e in finished_clusterings(synth.db, MODEL)] == [3]
