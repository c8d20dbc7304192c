"""The Streamlit explorer driven through ``streamlit.testing.v1.AppTest`` on a small real database:
synthetic recordings at three sites with planted calls, embedded with the training-free spectral
model. Every page renders without an exception, and the key flows work through the widgets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf

import index
from explorer.ingest import embed_archive

APP = str(Path(__file__).resolve().parents[1] / "explorer" / "app" / "main.py")
SR = 16000  # Hz
DURATION_S = 30.0  # s per recording: six 5 s windows
SITES = ("ridge", "river", "forest")
CALL_SLOTS = {"sweep": (1, 4), "hoot": (2,)}  # 5 s window index -> planted call type
TIMEOUT = 60  # s per AppTest run (2 shared cores)


def _sweep(sr: int) -> np.ndarray:
    t = np.arange(int(0.4 * sr)) / sr
    f = 6000.0 - 7500.0 * t  # Hz, 6 -> 3 kHz downward sweep
    return np.sin(2 * np.pi * np.cumsum(f) / sr) * np.hanning(t.size)


def _hoot(sr: int) -> np.ndarray:
    t = np.arange(int(0.7 * sr)) / sr
    x = sum(np.sin(2 * np.pi * 480.0 * h * t) / h for h in (1, 2, 3))
    return x * np.hanning(t.size)


def make_fixture_archive(root: Path, seed: int = 0) -> pd.DataFrame:
    """Write 6 recordings (3 sites x 2 days) plus one undecodable file; return the planted calls."""
    rng = np.random.default_rng(seed)
    rows = []
    for s, site in enumerate(SITES):
        for day in range(2):
            rel = f"{site}/{site}_2024061{day}_0{5 + s}0000.wav"
            x = 0.02 * rng.standard_normal(int(DURATION_S * SR))
            for call, slots in CALL_SLOTS.items():
                wave = _sweep(SR) if call == "sweep" else _hoot(SR)
                for slot in slots:
                    start = slot * 5.0 + rng.uniform(1.0, 3.0)
                    i = int(start * SR)
                    x[i : i + wave.size] += 0.3 * wave
                    rows.append((rel, site, call, start, start + wave.size / SR))
            (root / site).mkdir(parents=True, exist_ok=True)
            sf.write(root / rel, x.astype(np.float32), SR, subtype="PCM_16")
    (root / "ridge" / "broken_20240612_050000.wav").write_bytes(b"RIFF\x00\x00garbage" * 10)
    return pd.DataFrame(rows, columns=["file", "site", "call", "start_s", "end_s"])


def make_fixture_db(tmp: Path) -> tuple[Path, pd.DataFrame]:
    """Fixture archive embedded with the spectral model into ``tmp/survey.chorus``."""
    truth = make_fixture_archive(tmp / "archive")
    db_path = tmp / "survey.chorus"
    embed_archive(tmp / "archive", db_path, model="spectral", progress=False)
    return db_path, truth


@pytest.fixture(scope="module")
def fixture_db(tmp_path_factory):
    return make_fixture_db(tmp_path_factory.mktemp("explorer_app"))


@pytest.fixture
def app(fixture_db, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from index import ui_state

    # each test starts as a first session: no map colouring or clustering remembered from another
    ui_state.state_path(fixture_db[0]).unlink(missing_ok=True)
    monkeypatch.setenv("CHORUS_DB", str(fixture_db[0]))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _page(at, name: str):
    at.switch_page(f"pages/{name}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _button(at, label: str):
    hits = [b for b in at.button if b.label == label]
    assert hits, f"no button {label!r}; have {[b.label for b in at.button]}"
    return hits[0]


def test_fixture_database_has_windows_and_a_failed_file(fixture_db):
    db = index.connect(fixture_db[0])
    assert db.windows("spectral").count_rows() == 6 * 6
    rec = db.recordings()
    assert (rec["status"] == "failed").sum() == 1


def test_archive_page_counts(app):
    metrics = {m.label: m.value for m in app.metric}
    assert metrics["Recordings"] == "6"  # readable ones, as `chorus info` counts them
    assert metrics["Sites"] == "3"
    assert metrics["Failed files"] == "1"
    assert metrics["Hours"] == f"{6 * DURATION_S / 3600:.1f}"
    failed = [df.value for df in app.dataframe if "error" in df.value.columns]
    assert failed and "broken" in failed[0]["path"].iloc[0]
    assert any("(all 6 recordings dated)" in m.value for m in app.markdown)


def test_search_by_span_returns_results_and_label_click_stores_label(app, fixture_db):
    db_path, truth = fixture_db
    at = _page(app, "search")
    call = truth[(truth["call"] == "sweep") & (truth["site"] == "ridge")].iloc[0]
    at.selectbox(key="span_rec").set_value(call["file"]).run()
    slot = int(call["start_s"] // 5)
    at.slider(key="span").set_value((slot * 5.0, slot * 5.0 + 5.0)).run()
    _button(at, "Add span as positive").click().run()
    assert not at.exception
    assert "1 examples" in at.subheader[0].value or any(
        "1 examples" in s.value for s in at.subheader
    )
    at.number_input(key="f_k").set_value(6)
    at.button(key="FormSubmitter:search_form-Search").click().run()
    assert not at.exception, [e.value for e in at.exception]
    hits = at.session_state["hits"]
    assert len(hits) == 6
    assert hits["score"].is_monotonic_decreasing
    # the query window itself is left out (it scored ~1.0); the top hits hold planted sweeps
    own = (hits["path"] == call["file"]) & (hits["start_s"] == slot * 5.0)
    assert not own.any()
    sweeps = truth[truth["call"] == "sweep"]
    holds = [
        (
            (sweeps["file"] == h.path)
            & (sweeps["start_s"] >= h.start_s)
            & (sweeps["end_s"] <= h.end_s)
        ).any()
        for h in hits.itertuples()
    ]
    assert sum(holds) >= 4
    # label the second hit as a positive "sweep": typed and clicked in one go, as a browser
    # sends them (the button must read the new text, not the last run's)
    at.text_input(key="search_label").set_value("sweep")
    wid = int(hits.iloc[1]["window_id"])
    at.button(key=f"hit-{wid}-positive").click().run()
    assert not at.exception
    assert any("Stored 1 × positive 'sweep'" in s.value for s in at.success)
    labels = _labels(db_path)
    row = labels[labels["label"] == "sweep"].iloc[-1]
    assert row["kind"] == "positive"
    assert row["start_s"] == hits.iloc[1]["start_s"] and row["end_s"] == hits.iloc[1]["end_s"]
    # asked for, the query's own window comes first
    at.checkbox(key="f_keep_own").check()
    at.button(key="FormSubmitter:search_form-Search").click().run()
    top = at.session_state["hits"].iloc[0]
    assert top["path"] == call["file"] and top["start_s"] == slot * 5.0


def _wav_bytes(x: np.ndarray, sr: int = SR) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, x.astype(np.float32), sr, format="WAV", subtype="PCM_16")
    return buf.getvalue()


def test_search_with_uploaded_clip_and_a_negative(app):
    at = _page(app, "search")
    rng = np.random.default_rng(5)
    clip = 0.02 * rng.standard_normal(4 * SR)
    hoot = _hoot(SR)
    clip[SR : SR + hoot.size] += 0.3 * hoot
    at.file_uploader(key="upload").upload("my_hoot.wav", _wav_bytes(clip), "audio/wav").run()
    _button(at, "Add clip to the query").click().run()
    assert not at.exception, [e.value for e in at.exception]
    noise = _wav_bytes(0.02 * rng.standard_normal(4 * SR))
    at.file_uploader(key="upload").upload("noise.wav", noise, "audio/wav").run()
    at.radio(key="upload_kind").set_value("negative").run()
    _button(at, "Add clip to the query").click().run()
    kinds = [q.kind for q in at.session_state["queries"]]
    assert kinds[-2:] == ["positive", "negative"]
    at.session_state["queries"] = at.session_state["queries"][-2:]
    at.number_input(key="f_k").set_value(6)
    at.button(key="FormSubmitter:search_form-Search").click().run()
    assert not at.exception, [e.value for e in at.exception]
    hits = at.session_state["hits"]
    # every recording holds one hoot window (slot 2: 10-15 s); the clip finds them
    assert (hits["start_s"] == 10.0).sum() >= 5


def test_upload_that_is_not_audio_or_too_long_is_refused(app):
    at = _page(app, "search")
    n_before = len(at.session_state["queries"]) if "queries" in at.session_state else 0
    at.file_uploader(key="upload").upload("fake.wav", b"RIFF not really audio", "audio/wav").run()
    _button(at, "Add clip to the query").click().run()
    assert not at.exception
    assert any("Could not use fake.wav" in e.value for e in at.error)
    long_clip = _wav_bytes(np.zeros(int(130 * 8000)), sr=8000)  # 2 MB, 130 s
    at.file_uploader(key="upload").upload("long.wav", long_clip, "audio/wav").run()
    _button(at, "Add clip to the query").click().run()
    assert any("upload at most" in e.value for e in at.error)
    from streamlit import config

    old_limit = config.get_option("server.maxUploadSize")
    config.set_option("server.maxUploadSize", 1)  # MB, as `chorus explore --max-upload-mb 1`
    try:
        _button(at, "Add clip to the query").click().run()
    finally:
        config.set_option("server.maxUploadSize", old_limit)
    assert any("the limit is 1 MB" in e.value for e in at.error)
    n_after = len(at.session_state["queries"]) if "queries" in at.session_state else 0
    assert n_after == n_before


def test_search_filters_by_site_and_hour(app):
    at = _page(app, "search")
    if not at.session_state["queries"]:
        _button(at, "Add span as positive").click().run()
    at.multiselect(key="f_sites").set_value(["river"])
    at.number_input(key="f_k").set_value(50)
    at.button(key="FormSubmitter:search_form-Search").click().run()
    assert not at.exception, [e.value for e in at.exception]
    hits = at.session_state["hits"]
    assert len(hits) == 12 and set(hits["site"]) == {"river"}  # river: 2 recordings x 6 windows
    at.multiselect(key="f_sites").set_value([])
    at.slider(key="f_hours").set_value((5, 6))  # ridge recordings start at 05:00
    at.button(key="FormSubmitter:search_form-Search").click().run()
    hits = at.session_state["hits"]
    assert len(hits) == 12 and set(hits["site"]) == {"ridge"}


def _labels(db_path) -> pd.DataFrame:
    from index import labels as label_api

    return label_api.list_labels(index.connect(db_path))


def _map_points(at) -> int:
    """Number of points in the map figure the page sent to the browser."""
    import json

    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    return sum(_n_points(t) for t in spec["data"])


def _n_points(trace: dict) -> int:
    x = trace["x"]
    if isinstance(x, dict):  # plotly's typed-array encoding
        import base64

        return len(base64.b64decode(x["bdata"])) // np.dtype(x["dtype"]).itemsize
    return len(x)


def test_map_page_draws_every_colouring(app):
    at = _page(app, "map")
    assert _map_points(at) == 36
    # the chart must keep its id across reruns, or Streamlit drops the user's lasso selection
    first = at.get("plotly_chart")[0].proto
    at.run()
    again = at.get("plotly_chart")[0].proto
    assert (again.id, again.spec) == (first.id, first.spec)
    for colour in ("hour", "cluster", "label", "score", "site"):
        at.radio(key="map_colour").set_value(colour).run()
        assert not at.exception, (colour, [e.value for e in at.exception])
        assert _map_points(at) == 36
    notes = [c.value for c in at.caption]
    assert any("36 windows shown" in n for n in notes)


@pytest.mark.slow
def test_map_page_umap(app):
    at = _page(app, "map")
    at.radio(key="map_method").set_value("umap").run(timeout=240)
    assert not at.exception, [e.value for e in at.exception]
    assert _map_points(at) == 36


def test_clusters_page_runs_clustering_and_shows_exemplars(app):
    at = _page(app, "clusters")
    at.number_input(key="cl_k").set_value(3)
    at.button(key="FormSubmitter:cluster_form-Run clustering").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("3 clusters over 36 windows" in m.value for m in at.markdown)
    assert len(at.get("imgs")) >= 1 or at.get("image")


def test_clusters_more_than_windows_is_an_error_message_that_does_not_stick(app):
    at = _page(app, "clusters")
    at.number_input(key="cl_k").set_value(50)  # the fixture has 36 windows
    at.button(key="FormSubmitter:cluster_form-Run clustering").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("k must be between 1 and the number of windows (36)" in e.value for e in at.error)
    at.run()
    assert not at.exception and any("Run a clustering" in i.value for i in at.info)
    at = _page(at, "map")
    at.radio(key="map_colour").set_value("cluster").run()
    assert not at.exception


def test_map_and_clusters_of_a_tiny_archive(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    (tmp_path / "a").mkdir()
    sf.write(tmp_path / "a" / "one.wav", np.zeros(int(9.0 * SR), np.float32) + 0.01, SR)
    embed_archive(tmp_path / "a", tmp_path / "t.chorus", model="spectral", progress=False)
    monkeypatch.setenv("CHORUS_DB", str(tmp_path / "t.chorus"))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at = _page(at, "map")  # two windows: too few for a map, said on the page
    assert any("need at least 3 windows" in i.value for i in at.info)


def _label_calls(db_path, truth: pd.DataFrame, call: str, kind: str = "positive") -> None:
    """Store the planted calls of one type as labels (what a user would have clicked)."""
    from index.labels import add_labels

    db = index.connect(db_path)
    rec = db.recordings().set_index("path")["recording_id"]
    rows = truth[truth["call"] == call]
    add_labels(
        db,
        pd.DataFrame(
            {
                "recording_id": rec.loc[rows["file"]].to_numpy(),
                "start_s": rows["start_s"].to_numpy(),
                "end_s": rows["end_s"].to_numpy(),
                "label": call,
                "kind": kind,
            }
        ),
        source="test",
    )


def test_classify_page_trains_probe_reports_metrics_and_exports(app, fixture_db):
    db_path, truth = fixture_db
    _label_calls(db_path, truth, "hoot")
    at = _page(app, "classify")
    at.selectbox(key="cls_label").set_value("hoot")
    at.button(key="FormSubmitter:train_form-Train probe").click().run()
    assert not at.exception, [e.value for e in at.exception]
    probe_id = at.session_state["probe_id"]
    metrics = {m.label: m.value for m in at.metric}
    ap = float(metrics["Average precision (CV)"])
    assert 0.5 < ap <= 1.0  # hoots are easy to tell from noise and sweeps
    assert any(f"Probe {probe_id}: 'hoot'" in s.value for s in at.subheader)
    # six recordings hold one hoot window each: the top of the archive should be those
    assert any("windows score ≥" in m.value for m in at.markdown)
    downloads = at.get("download_button")
    assert len(downloads) == 2
    # the review queue's label buttons write labels
    before = len(_labels(db_path))
    card = next(
        b
        for b in at.button
        if b.key and b.key.startswith("rev_top-") and b.key.endswith("-negative")
    )
    card.click().run()
    assert not at.exception
    assert len(_labels(db_path)) == before + 1
    # the map colours by the new probe's scores and by the stored labels
    at.switch_page("pages/map.py").run()
    at.radio(key="map_colour").set_value("score").run()
    assert not at.exception
    assert not any("No probe for" in c.value for c in at.caption)
    at.radio(key="map_colour").set_value("label").run()
    import json

    names = [t["name"] for t in json.loads(at.get("plotly_chart")[0].proto.spec)["data"]]
    assert "hoot" in names


def test_classify_page_shows_why_instead_of_a_probe_when_examples_are_too_few(app, fixture_db):
    db_path, truth = fixture_db
    one = truth[truth["call"] == "sweep"].iloc[:1].assign(call="chirp")
    _label_calls(db_path, one, "chirp")
    at = _page(app, "classify")
    at.selectbox(key="cls_label").set_value("chirp")
    at.button(key="FormSubmitter:train_form-Train probe").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert "too few examples to train 'chirp'" in at.error[0].value
    assert "label 1 more positive window(s)" in at.error[0].value
    assert "probe_id" not in at.session_state and not at.metric  # no probe shown


def test_app_without_a_database_says_so(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    missing = tmp_path / "missing.chorus"
    monkeypatch.setenv("CHORUS_DB", str(missing))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert not at.exception
    assert "Cannot open the database" in at.error[0].value
    assert not missing.exists()  # the app never creates a database
    monkeypatch.delenv("CHORUS_DB")
    at = AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    assert "No database given" in at.error[0].value


def test_windows_by_id_keeps_order_and_joins_recordings(fixture_db):
    from explorer.app import backend

    db = index.connect(fixture_db[0])
    ids, _ = db.vectors("spectral")
    pick = [int(ids[7]), int(ids[2]), int(ids[30])]
    rows = backend.windows_by_id(db, "spectral", pick)
    assert rows["window_id"].tolist() == pick
    assert rows["abs_path"].map(lambda p: Path(p).is_file()).all()
    assert rows["sample_rate"].eq(SR).all() and rows["hour"].between(5, 8).all()
    assert backend.windows_by_id(db, "spectral", []).empty


def _select_on_map(at, window_ids) -> None:
    """What a box/lasso over these points sends back (Streamlit's plotly selection state)."""
    points = [{"x": 0.0, "y": 0.0, "customdata": [int(w)]} for w in window_ids]
    at.session_state["map_chart"] = {
        "selection": {"points": points, "point_indices": [], "box": [], "lasso": []}
    }
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def test_map_bulk_label_is_empty_asks_above_a_count_and_undoes_in_one_click(app, fixture_db):
    from explorer.app import widgets

    db_path, _ = fixture_db
    from index.labels import add_label

    add_label(index.connect(db_path), 1, 0.0, 1.0, "owl", source="test")
    before = len(_labels(db_path))
    ids, _ = index.connect(db_path).vectors("spectral")
    at = _page(app, "map")
    _select_on_map(at, ids[: widgets.CONFIRM_ABOVE + 4])
    box = at.text_input(key="map_label")
    assert box.value == ""  # never pre-filled with a label in use ("owl")
    _button(at, f"positive ({widgets.CONFIRM_ABOVE + 4})").click().run()
    assert any("Type a label first" in e.value for e in at.error)
    assert len(_labels(db_path)) == before
    at.text_input(key="map_label").set_value("wind")
    _button(at, f"positive ({widgets.CONFIRM_ABOVE + 4})").click().run()
    assert len(_labels(db_path)) == before  # above the count: nothing yet, a question instead
    assert any(f"on {widgets.CONFIRM_ABOVE + 4} windows?" in w.value for w in at.warning)
    _button(at, "Cancel").click().run()
    assert not at.warning and len(_labels(db_path)) == before
    _button(at, f"positive ({widgets.CONFIRM_ABOVE + 4})").click().run()
    _button(at, f"Yes, label {widgets.CONFIRM_ABOVE + 4} windows").click().run()
    assert not at.exception
    assert len(_labels(db_path)) == before + widgets.CONFIRM_ABOVE + 4
    undo = _button(at, f"Undo: Stored {widgets.CONFIRM_ABOVE + 4} × positive 'wind'")
    undo.click().run()
    assert len(_labels(db_path)) == before
    assert any("Undone" in s.value for s in at.success)
    # a small selection is written at once
    _select_on_map(at, ids[:3])
    at.text_input(key="map_label").set_value("wind")
    _button(at, "negative (3)").click().run()
    assert len(_labels(db_path)) == before + 3
    _button(at, "Undo: Stored 3 × negative 'wind'").click().run()
    assert len(_labels(db_path)) == before


def test_clusters_bulk_label_asks_first_and_undoes(app, fixture_db, monkeypatch):
    from explorer.app import widgets

    monkeypatch.setattr(widgets, "CONFIRM_ABOVE", 2)
    db_path, _ = fixture_db
    before = len(_labels(db_path))
    at = _page(app, "clusters")
    at.number_input(key="cl_k").set_value(3)
    at.button(key="FormSubmitter:cluster_form-Run clustering").click().run()
    assert at.text_input(key="cl_label").value == ""
    at.text_input(key="cl_label").set_value("rain")
    bulk = next(b for b in at.button if b.key and b.key.endswith("-unsure") and "cl_bulk" in b.key)
    n = int(bulk.label.split("(")[1].rstrip(")"))
    bulk.click().run()
    assert len(_labels(db_path)) == before
    _button(at, f"Yes, label {n} windows").click().run()
    assert len(_labels(db_path)) == before + n
    _button(at, f"Undo: Stored {n} × unsure 'rain'").click().run()
    assert len(_labels(db_path)) == before


def _select_rows(at, rows: list[int]) -> None:
    key = f"lab_table_{at.session_state['lab_gen'] if 'lab_gen' in at.session_state else 0}"
    at.session_state[key] = {"selection": {"rows": rows, "columns": [], "cells": []}}
    at.run()
    assert not at.exception, [e.value for e in at.exception]


def test_labels_page_filters_edits_deletes_several_and_undoes(app, fixture_db):
    from index.labels import add_label

    db_path, _ = fixture_db
    db = index.connect(db_path)
    rec = db.recordings()
    ridge = rec[rec["path"].str.startswith("ridge/") & (rec["status"] != "failed")]
    ids = [
        add_label(db, int(r), 0.0, 2.0, "frog", source="user:lab") for r in ridge["recording_id"]
    ]
    add_label(db, int(ridge["recording_id"].iloc[0]), 10.0, 12.0, "frog", "negative", source="x")
    total = len(_labels(db_path))
    at = _page(app, "labels")
    table = at.dataframe[0].value
    assert len(table) == total
    at.multiselect(key="lab_f_label").set_value(["frog"]).run()
    at.multiselect(key="lab_f_kind").set_value(["positive"]).run()
    at.multiselect(key="lab_f_source").set_value(["user:lab"]).run()
    path = ridge["path"].iloc[1]
    at.multiselect(key="lab_f_rec").set_value([path]).run()
    shown = at.dataframe[0].value
    assert shown["label_id"].tolist() == [ids[1]]
    at.multiselect(key="lab_f_rec").set_value([]).run()
    assert sorted(at.dataframe[0].value["label_id"]) == sorted(ids)
    # edit two at once: kind -> unsure
    _select_rows(at, [0, 1])
    at.selectbox(key="lab_new_kind").set_value("unsure").run()
    _button(at, "Apply to 2 selected").click().run()
    assert not at.exception, [e.value for e in at.exception]
    labs = _labels(db_path)
    frogs = labs[(labs["label"] == "frog") & (labs["start_s"] == 0.0)]
    assert len(ids) == 2 and frogs["kind"].tolist() == ["unsure", "unsure"]
    _button(at, "Undo: Edited 2 label(s) → unsure").click().run()
    labs = _labels(db_path)
    assert sorted(labs[labs["label"] == "frog"]["label_id"])[: len(ids)] == sorted(ids)
    # delete every shown label at once, then undo
    at.multiselect(key="lab_f_kind").set_value([]).run()
    at.multiselect(key="lab_f_source").set_value([]).run()
    at.checkbox(key="lab_all").check().run()
    _button(at, f"Delete {len(ids) + 1} selected").click().run()
    assert len(_labels(db_path)) == total - len(ids) - 1
    assert any(f"Deleted {len(ids) + 1} label(s)" in s.value for s in at.success)
    _button(at, f"Undo: Deleted {len(ids) + 1} label(s)").click().run()
    assert len(_labels(db_path)) == total
    # rename one
    at.multiselect(key="lab_f_label").set_value(["frog"]).run()
    _select_rows(at, [0])
    at.text_input(key="lab_new_name").set_value("toad").run()
    _button(at, "Apply to 1 selected").click().run()
    assert "toad" in set(_labels(db_path)["label"])


def _holds(truth: pd.DataFrame, call: str, path: str, start_s: float, end_s: float) -> bool:
    rows = truth[(truth["call"] == call) & (truth["file"] == path)]
    return bool(((rows["start_s"] >= start_s) & (rows["end_s"] <= end_s)).any())


def test_agile_page_search_label_retrain_next_batch(app, fixture_db):
    db_path, truth = fixture_db
    at = _page(app, "agile")
    assert any("Name the sound" in i.value for i in at.info)
    at.text_input(key="ag_label").set_value("hootagile").run()
    call = truth[truth["call"] == "hoot"].iloc[0]
    at.selectbox(key="ag_rec").set_value(call["file"]).run()
    db = index.connect(db_path)
    rid = int(db.recordings().set_index("path").loc[call["file"], "recording_id"])
    snap = db.snapshot("spectral")
    wid = int(snap.window_id[(snap.recording_id == rid) & (snap.start_s == 10.0)][0])
    at.selectbox(key="ag_window").set_value(wid).run()
    _button(at, "Find similar windows").click().run()
    assert not at.exception, [e.value for e in at.exception]
    batch = at.session_state["ag_batch"]
    assert len(batch) == 9 and wid not in batch["window_id"].tolist()
    assert any("Batch: 0 of 9 windows marked" in s.value for s in at.subheader)
    before = len(_labels(db_path))
    for row in batch.iloc[:-1].itertuples():
        holds = _holds(truth, "hoot", row.path, row.start_s, row.end_s)
        at.button(key=f"ag-{row.window_id}-{'positive' if holds else 'negative'}").click().run()
    last = batch.iloc[-1]
    assert at.button(key="ag-key-skip").proto.shortcut.upper() == "S"  # the key row
    assert any(f"Keys mark window {len(batch)}:" in c.value for c in at.caption)
    at.button(key="ag-key-skip").click().run()  # a skip writes nothing
    assert at.session_state["ag_marks"][int(last.window_id)] == "skip"
    assert at.button(key="ag-key-positive").disabled  # every window marked
    assert not at.exception, [e.value for e in at.exception]
    labs = _labels(db_path)
    assert len(labs) == before + 8
    mine = labs[labs["label"] == "hootagile"]
    assert (mine["kind"] == "positive").sum() >= 2 and (mine["kind"] == "negative").sum() >= 2
    assert {m.label: m.value for m in at.metric}["Positive labels"] == str(
        (mine["kind"] == "positive").sum()
    )
    _button(at, "Retrain").click().run()
    assert not at.exception, [e.value for e in at.exception]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["CV average precision"] != "–"
    assert any("Round 1:" in s.value for s in at.success)
    assert at.get("plotly_chart") and any("Rounds" in s.value for s in at.subheader)
    second = at.session_state["ag_batch"]
    assert not set(second["window_id"]) & set(batch["window_id"].iloc[:-1])  # labelled: gone
    assert at.session_state["ag_probe"] == at.session_state["probe_id"]
    at.radio(key="ag_strategy").set_value("diverse").run()
    _button(at, "Next batch").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(at.session_state["ag_batch"]) > 0
    # a stored probe is a start too
    at.radio(key="ag_start").set_value("a stored probe").run()
    _button(at, "Review with this probe").click().run()
    assert not at.exception and at.session_state["ag_probe"] is not None


def test_a_box_dragged_on_the_spectrogram_is_the_span_shown_and_used(app):
    import json

    at = _page(app, "search")
    rec = at.selectbox(key="span_rec").value
    at.session_state["span_fig"] = {
        "selection": {"points": [], "point_indices": [], "box": [{"x": [2.06, 8.25]}], "lasso": []}
    }
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert at.slider(key="span").value == pytest.approx((2.05, 8.25))
    assert any("Span used: 2.05–8.25 s" in c.value for c in at.caption)
    shapes = json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]["shapes"]
    assert (shapes[0]["x0"], shapes[0]["x1"]) == pytest.approx((2.05, 8.25))  # the shading
    _button(at, "Add span as positive").click().run()
    assert not at.exception, [e.value for e in at.exception]
    query = at.session_state["queries"][-1]
    assert query.span[1:] == pytest.approx((2.05, 8.25)) and rec in query.source
    # the slider still moves on its own afterwards (the old box is not applied again)
    at.slider(key="span").set_value((1.0, 3.0)).run()
    assert at.slider(key="span").value == pytest.approx((1.0, 3.0))


def test_the_favicon_is_local_so_the_app_needs_no_other_host(fixture_db, monkeypatch):
    """Without a page icon, Streamlit's browser code shows each page's Material icon as the
    favicon, fetched from fonts.gstatic.com: an offline app must set its own."""
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    seen = {}
    real = st.set_page_config

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(st, "set_page_config", spy)
    monkeypatch.setenv("CHORUS_DB", str(fixture_db[0]))
    AppTest.from_file(APP, default_timeout=TIMEOUT).run()
    icon = seen.get("page_icon")
    assert isinstance(icon, str) and icon and not icon.startswith((":material", "http"))
