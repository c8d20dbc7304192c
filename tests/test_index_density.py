"""Call density (index.density): strata, the validation sample, intervals, and their coverage."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from agile_synth import MODEL, make_synth_db

from index.density import (
    assign_strata,
    call_density,
    estimate_density,
    plan_validation,
    sample_keys,
    stratified_interval,
)
from index.labels import add_label, add_labels
from index.probe import train_probe


def test_strata_split_by_rank_even_with_ties():
    s = assign_strata(np.zeros(16))  # all tied: ranks still fill every stratum
    assert np.bincount(s).tolist() == [8, 4, 2, 2]
    s = assign_strata(np.arange(8)[::-1].astype(float))
    assert s.tolist() == [3, 2, 1, 1, 0, 0, 0, 0]  # the highest scores in the top stratum
    with pytest.raises(ValueError, match="rise from 0 to 1"):
        assign_strata(np.zeros(3), bounds=(0.0, 0.7, 0.5, 1.0))


def test_sample_keys_do_not_depend_on_other_windows():
    ids = np.arange(100, dtype=np.int64)
    assert (sample_keys(ids[:50]) == sample_keys(ids)[:50]).all()
    assert (sample_keys(ids, seed=1) != sample_keys(ids)).any()
    assert len(np.unique(sample_keys(ids))) == 100


def _windows(seed: int, rates=(0.0, 0.02, 0.1, 0.4), n: int = 200, sep: float = 2.0):
    """A synthetic scored archive: one site per rate, positives score ``sep`` higher."""
    rng = np.random.default_rng(seed)
    parts = []
    for g, rate in enumerate(rates):
        z = rng.random(n) < rate
        parts.append(
            pd.DataFrame(
                {
                    "site": f"S{g}",
                    "window_id": g * n + np.arange(n),
                    "score": rng.normal(size=n) + sep * z,
                    "truth": z,
                    "kind": None,
                }
            )
        )
    return pd.concat(parts, ignore_index=True)


def _coverage(seeds, per_stratum=8, **kw) -> np.ndarray:
    hits = []
    for seed in seeds:
        w = _windows(seed, **kw)
        strata, sample = plan_validation(w, ["site"], per_stratum, seed=seed)
        sample["kind"] = np.where(sample["truth"], "positive", "negative")  # a perfect validator
        table = estimate_density(strata, sample, ["site"], n_draws=4000, seed=seed)
        truth = w.groupby("site")["truth"].mean().to_numpy()
        hits.append((table["low"].to_numpy() <= truth) & (truth <= table["high"].to_numpy()))
    return np.asarray(hits)  # (seeds, sites)


def test_true_density_lies_in_the_90_percent_interval_in_90_percent_of_seeds():
    hits = _coverage(range(30))
    assert hits.mean(axis=0).min() >= 0.9, hits.mean(axis=0)


@pytest.mark.slow
def test_coverage_holds_across_rates_separations_and_sample_sizes():
    for sep in (0.5, 2.0, 4.0):
        for per in (3, 10):
            hits = _coverage(range(60), per, rates=(0.0, 0.005, 0.05, 0.2, 0.6, 0.95), sep=sep)
            assert hits.mean(axis=0).min() >= 0.9, (sep, per, hits.mean(axis=0))


def test_interval_is_exact_at_the_edges_and_narrows_with_validations():
    d, lo, hi = stratified_interval([0.5, 0.5], [0, 0], [10, 10])
    assert d == 0.0 and lo == 0.0 and 0 < hi < 0.3  # no positive seen: the interval reaches 0
    d, lo, hi = stratified_interval([0.5, 0.5], [10, 10], [0, 0])
    assert d == 1.0 and hi == 1.0 and lo > 0.7
    d, lo, hi = stratified_interval([0.5, 0.5], [0, 5], [10, 5])
    assert d == pytest.approx(0.25) and lo < 0.25 < hi
    _, lo2, hi2 = stratified_interval([0.5, 0.5], [0, 50], [100, 50])
    assert hi2 - lo2 < hi - lo
    d, lo, hi = stratified_interval([0.5, 0.5], [3, 0], [3, 0])  # a stratum not yet validated
    assert np.isnan(d) and lo < 0.25 and hi > 0.75


def test_unsure_windows_are_passed_over_and_the_next_takes_their_place():
    w = _windows(0, rates=(0.1,), n=64)
    _, first = plan_validation(w, ["site"], 2)
    unsure = first["window_id"].iloc[0]
    w.loc[w["window_id"] == unsure, "kind"] = "unsure"
    strata, again = plan_validation(w, ["site"], 2)
    assert unsure not in again["window_id"].tolist()
    assert len(again) == len(first) == 2 * 4
    assert strata["n_windows"].sum() == 64  # the unsure window still counts in its stratum


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    synth = make_synth_db(
        tmp_path_factory.mktemp("density"), n_recordings=6, windows_per_recording=40, seed=3
    )
    for t in synth.truth.query("call_type == 'owl' and recording_id <= 2").itertuples():
        add_label(synth.db, int(t.recording_id), t.start_s, t.end_s, "owl", source="user:train")
    rec = train_probe(synth.db, MODEL, "owl")
    return synth, rec


def test_call_density_on_a_database_plans_then_estimates_from_labels(trained):
    synth, rec = trained
    before = call_density(synth.db, rec.probe_id, by="site", per_stratum=4)
    assert before.table["site"].tolist() == ["S0", "S1"]
    assert before.table["windows"].tolist() == [120, 120]
    assert before.table["needed"].tolist() == [16, 16]
    # the training labels cover some sampled windows: only those count as validated
    assert (before.table["validated"] < before.table["needed"]).all()
    todo = before.todo
    assert list(todo.columns[:6]) == ["path", "start_s", "end_s", "score", "label", "kind"]
    assert set(todo["kind"]) == {"skip"} and set(todo["label"]) == {"owl"}
    # validate every window of the plan with the truth, as a person would
    truth = synth.windows.set_index(["recording_id", "start_s"])["call_type"]
    recs = synth.db.recordings().set_index("path")["recording_id"]
    rid = todo["path"].map(recs)
    is_owl = [truth[(r, s)] == "owl" for r, s in zip(rid, todo["start_s"], strict=True)]
    add_labels(
        synth.db,
        todo.assign(recording_id=rid, kind=np.where(is_owl, "positive", "negative")),
    )
    after = call_density(synth.db, rec.probe_id, by="site", per_stratum=4)
    assert (after.table["validated"] == after.table["needed"]).all() and after.todo.empty
    site = synth.db.recordings().set_index("recording_id")["site"]
    true = (
        synth.windows.assign(site=synth.windows["recording_id"].map(site))
        .groupby("site")["call_type"]
        .apply(lambda c: (c == "owl").mean())
    )
    t = after.table.set_index("site")
    assert ((t["low"] <= true) & (true <= t["high"])).all()
    assert t["density"].notna().all()


def test_call_density_refuses_unknown_keys_and_labels(trained):
    synth, rec = trained
    with pytest.raises(ValueError, match="--by takes"):
        call_density(synth.db, rec.probe_id, by="site,fortnight")
    with pytest.raises(KeyError, match="no label 'wren'"):
        call_density(synth.db, rec.probe_id, label="wren")
