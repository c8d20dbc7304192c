"""The Density and Activity pages (explorer/app/pages/density.py, activity.py) through AppTest on
a small real database with planted hoots and a probe trained on them: the density table of
``index.density`` with its validation loop, and the activity heatmaps with their CSV tables."""

from __future__ import annotations

import io

import pandas as pd
import pytest
from test_explorer_app import APP, TIMEOUT, _holds, _label_calls, _labels, make_fixture_db

import index
from explorer.app import survey
from index.density import call_density
from index.probe import train_probe

BY = ("site", "date")


@pytest.fixture(scope="module")
def probed_db(tmp_path_factory):
    """The app's fixture archive with its hoots labelled and a probe for them."""
    db_path, truth = make_fixture_db(tmp_path_factory.mktemp("explorer_density"))
    _label_calls(db_path, truth, "hoot")
    rec = train_probe(index.connect(db_path), "spectral", "hoot")
    return db_path, truth, rec.probe_id


def _session(db_path, monkeypatch, page: str):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("CHORUS_DB", str(db_path))
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.run()
    at.switch_page(f"pages/{page}.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def _button(at, label: str):
    hits = [b for b in at.button if b.label == label]
    assert hits, f"no button {label!r}; have {[b.label for b in at.button]}"
    return hits[0]


def test_validation_order_takes_every_stratum_of_every_group_first():
    todo = pd.DataFrame(
        {
            "site": ["a"] * 5 + ["b"] * 2,
            "stratum": [0, 0, 0, 1, 1, 0, 3],
            "window_id": [10, 11, 12, 13, 14, 20, 21],
        }
    )
    order = survey.validation_order(todo, ["site"])
    assert order["window_id"].tolist() == [10, 13, 20, 21, 11, 14, 12]


def test_density_page_validates_the_sample_and_the_table_follows(probed_db, monkeypatch):
    db_path, truth, probe_id = probed_db
    at = _session(db_path, monkeypatch, "density")
    at.multiselect(key="dn_by").set_value(list(BY)).run()
    at.number_input(key="dn_per").set_value(2).run()
    assert not at.exception, [e.value for e in at.exception]
    db = index.connect(db_path)
    expect = call_density(db, probe_id, BY, per_stratum=2)
    table = at.dataframe[0].value
    assert len(table) == len(expect.table) == 6  # 3 sites x 2 days
    needed = int(expect.table["needed"].sum())
    done = int(expect.table["validated"].sum())
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Validations done"] == f"{done} of {needed}" and metrics["Label"] == "hoot"
    assert len(at.get("download_button")) == 1  # the table as CSV
    _button(at, "Start validating").click().run()
    batch = at.session_state["dn_batch"]
    assert len(batch) == survey.BATCH
    assert set(batch["window_id"]) <= set(expect.todo["window_id"])
    before = len(_labels(db_path))
    # answer the batch by ear (the truth), skipping the last window
    for row in batch.iloc[:-1].itertuples():
        holds = _holds(truth, "hoot", row.path, row.start_s, row.end_s)
        at.button(key=f"dn-{row.window_id}-{'positive' if holds else 'negative'}").click().run()
    at.button(key=f"dn-{int(batch.iloc[-1].window_id)}-skip").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert len(_labels(db_path)) == before + survey.BATCH - 1  # a skip writes nothing
    assert any(f"Batch: {survey.BATCH - 1} of {survey.BATCH}" in m.value for m in at.markdown)
    # the page's table is what `chorus density` now prints
    now = call_density(index.connect(db_path), probe_id, BY, per_stratum=2)
    assert int(now.table["validated"].sum()) == done + survey.BATCH - 1
    shown = at.dataframe[0].value
    assert shown["validated"].tolist() == [
        f"{d} / {n}" for d, n in zip(now.table["validated"], now.table["needed"], strict=True)
    ]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Validations done"] == f"{done + survey.BATCH - 1} of {needed}"
    # undo takes the last validation back, and that window waits again
    last = batch.iloc[-2]
    undo = next(b for b in at.button if b.label.startswith("Undo: Stored 1 ×"))
    undo.click().run()
    assert len(_labels(db_path)) == before + survey.BATCH - 2
    again = call_density(index.connect(db_path), probe_id, BY, per_stratum=2)
    assert int(last.window_id) in set(again.todo["window_id"])
    # the next batch leaves out what is validated and puts the skipped window last
    _button(at, "Next batch").click().run()
    nxt = at.session_state["dn_batch"]
    validated = set(batch["window_id"].iloc[:-2])
    assert not set(nxt["window_id"]) & validated
    assert int(last.window_id) in set(nxt["window_id"])


def test_density_page_without_a_probe_says_what_to_do(tmp_path, monkeypatch):
    db_path, _ = make_fixture_db(tmp_path)
    at = _session(db_path, monkeypatch, "density")
    assert any("No probe for spectral" in i.value for i in at.info)
    at.switch_page("pages/activity.py").run()
    assert not at.exception and any("No probe for spectral" in i.value for i in at.info)


def test_activity_page_draws_site_by_date_and_hour_and_offers_the_tables(probed_db, monkeypatch):
    db_path, _, probe_id = probed_db
    at = _session(db_path, monkeypatch, "activity")
    charts = at.get("plotly_chart")
    assert len(charts) == 2
    import json

    figs = [json.loads(c.proto.spec) for c in charts]
    assert figs[0]["layout"]["xaxis"]["title"]["text"] == "date"
    assert figs[1]["layout"]["xaxis"]["title"]["text"] == "hour"
    assert set(figs[0]["data"][0]["y"]) == {"ridge", "river", "forest"}
    downloads = at.get("download_button")
    assert len(downloads) == 2
    by_date, by_hour = survey.activity_tables(index.connect(db_path), probe_id, 0.5)
    assert int(by_date["windows"].sum()) == int(by_hour["windows"].sum()) == 36
    assert int(by_date["detections"].sum()) == int(by_hour["detections"].sum())
    table = pd.read_csv(io.BytesIO(survey.table_csv(by_hour)), dtype={"hour": str})
    assert list(table.columns[:5]) == ["site", "hour", "windows", "detections", "rate"]
    # a higher threshold finds fewer detections
    at.slider(key=f"act_thr_{probe_id}").set_value(0.999).run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("windows score ≥ 0.999" in m.value for m in at.markdown)
