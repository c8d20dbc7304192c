"""Probe training on a database, scoring, detections (thresholds, merging), review queues."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from agile_synth import MODEL, make_synth_db

from index.classify import (
    classify,
    k_center_greedy,
    load_detections,
    merge_detections,
    pick_top,
    pick_uncertain,
    review_queue,
    score_windows,
)
from index.labels import add_label, list_labels
from index.probe import list_probes, load_probe, train_probe


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    synth = make_synth_db(
        tmp_path_factory.mktemp("classify"), n_recordings=8, windows_per_recording=40
    )
    # Label every owl call of recordings 0-3 and a few empty windows as negatives.
    for t in synth.truth.query("call_type == 'owl' and recording_id < 4").itertuples():
        add_label(synth.db, int(t.recording_id), t.start_s, t.end_s, "owl")
    empty = synth.windows.query("call_type == '' and recording_id < 4").iloc[::4]
    for w in empty.itertuples():
        add_label(synth.db, int(w.recording_id), w.start_s, w.end_s, "owl", kind="negative")
    rec = train_probe(synth.db, MODEL, "owl", precision=0.9)
    return synth, rec


def test_train_probe_metrics_and_storage(trained):
    synth, rec = trained
    m = rec.metrics[0]
    assert m["eval_rows"] == "labelled"
    assert m["average_precision"] > 0.9 and m["roc_auc"] > 0.95
    assert m["precision"] >= 0.85
    t = rec.training
    assert t["owl"]["n_positive"] == len(
        synth.truth.query("call_type == 'owl' and recording_id < 4")
    )
    assert t["owl"]["label_ids"] == list_labels(synth.db)["label_id"].tolist()
    assert t["n_weak"] > 0 and t["weak_weight"] == 0.05
    assert {"windows_version", "labels_version"} <= set(t)
    back = load_probe(synth.db, rec.probe_id)
    np.testing.assert_allclose(back.probe.coef_, rec.probe.coef_, atol=1e-6)
    np.testing.assert_allclose(back.thresholds, rec.thresholds)
    assert back.labels == ["owl"] and back.model == MODEL
    assert list_probes(synth.db)["probe_id"].tolist() == [rec.probe_id]
    with pytest.raises(KeyError, match="no probe with id 99"):
        load_probe(synth.db, 99)


def test_a_stored_raw_space_probe_loads_and_scores_the_same(trained):
    # Probes stored before LinearProbe wrapped scikit-learn hold raw-space weights and biases
    # only: they must load and score as sigmoid(x @ w + b), with no fitted pipeline behind them.
    from index.probe import LinearProbe, ProbeRecord, store_probe

    synth, rec = trained
    rng = np.random.default_rng(5)
    w, b = rng.normal(size=(1, rec.probe.n_features_in_)).astype(np.float32), np.array([-0.3])
    old = ProbeRecord(-1, MODEL, ["owl"], LinearProbe.from_weights(w, b), [0.5], [{}], {}, {})
    back = load_probe(synth.db, store_probe(synth.db, old))
    meta, scores = score_windows(synth.db, MODEL, back.probe.coef_, back.probe.intercept_)
    _, X = synth.db.vectors(MODEL, meta["window_id"].to_numpy())
    expected = 1 / (1 + np.exp(-(X.astype(np.float64) @ w[0].astype(np.float64) + b[0])))
    np.testing.assert_allclose(scores[:, 0], expected, atol=1e-5)
    np.testing.assert_allclose(back.probe.predict_proba(X)[:, 1], expected, atol=1e-6)


def test_score_windows_matches_numpy_reference(trained):
    synth, rec = trained
    meta, scores = score_windows(
        synth.db, MODEL, rec.probe.coef_, rec.probe.intercept_, batch_rows=50
    )
    ids, X = synth.db.vectors(MODEL, meta["window_id"].to_numpy())
    np.testing.assert_allclose(scores[:, 0], rec.probe.predict_proba(X)[:, 1], atol=1e-5)
    # Unlabelled recordings 4-7: the probe finds their owls.
    owl = meta.merge(synth.windows, on="window_id")["call_type"].eq("owl").to_numpy()
    later = meta["recording_id"].to_numpy() >= 4
    assert scores[later & owl, 0].min() > scores[later & ~owl, 0].max() - 0.5


def test_classify_thresholds_and_stores(trained):
    synth, rec = trained
    det = classify(synth.db, rec.probe_id, threshold=0.5, merge=False)
    meta, scores = score_windows(synth.db, MODEL, rec.probe.coef_, rec.probe.intercept_)
    assert len(det) == int((scores[:, 0] >= 0.5).sum())
    assert det["score"].min() >= 0.5 and (det["threshold"] == 0.5).all()
    stored = load_detections(synth.db, rec.probe_id)
    assert len(stored) == len(det) and {"path", "abs_path"} <= set(stored.columns)
    strict = classify(synth.db, rec.probe_id, threshold=0.99, merge=False)
    assert len(strict) < len(det)
    assert len(load_detections(synth.db, rec.probe_id)) == len(strict)  # replaced, not appended
    by_precision = classify(synth.db, rec.probe_id, precision=0.9)
    assert (by_precision["threshold"] == rec.threshold_for(0.9)).all()
    with pytest.raises(ValueError, match="threshold is a probability"):
        classify(synth.db, rec.probe_id, threshold=2.0)


def test_a_rerun_of_classify_never_shows_a_mixed_or_empty_set(trained, monkeypatch):
    from lancedb.table import LanceTable

    synth, rec = trained
    first = classify(synth.db, rec.probe_id, threshold=0.5, merge=False)
    monkeypatch.setattr(LanceTable, "delete", lambda self, where: None)  # halt between commits
    second = classify(synth.db, rec.probe_id, threshold=0.8, merge=False)
    monkeypatch.undo()
    assert 0 < len(second) < len(first)
    assert len(load_detections(synth.db, rec.probe_id)) == len(second)


def test_merge_detections():
    df = pd.DataFrame(
        {
            "recording_id": [1, 1, 1, 1, 2, 1],
            "start_s": [0.0, 2.5, 5.0, 20.0, 2.5, 7.5],
            "end_s": [5.0, 7.5, 10.0, 25.0, 7.5, 12.5],
            "score": [0.6, 0.9, 0.7, 0.8, 0.95, 0.55],
        }
    )
    m = merge_detections(df)
    assert m[["recording_id", "start_s", "end_s"]].values.tolist() == [
        [1, 0, 12.5],
        [1, 20, 25],
        [2, 2.5, 7.5],
    ]
    assert m["score"].tolist() == [0.9, 0.8, 0.95]
    assert m["n_windows"].tolist() == [4, 1, 1]
    # Touching windows (hop = window) merge; a gap does not, unless allowed.
    touching = pd.DataFrame(
        {"recording_id": 1, "start_s": [0.0, 5.0, 11.0], "end_s": [5.0, 10.0, 16.0], "score": 1.0}
    )
    assert len(merge_detections(touching)) == 2
    assert len(merge_detections(touching, gap_s=1.0)) == 1


def test_pickers():
    s = np.array([0.1, 0.9, 0.45, 0.52, 0.99, 0.3])
    assert pick_top(s, 2).tolist() == [4, 1]
    assert pick_uncertain(s, 0.5, 2).tolist() == [3, 2]
    X = np.array([[0.0, 0], [0.1, 0], [10, 0], [0, 10], [10.1, 0]])
    picks = k_center_greedy(X, 3, centers=np.array([[0.0, 0.0]]))
    assert picks[:2].tolist() == [4, 3]  # far corners first, never the covered origin (row 0)
    assert 0 not in picks
    assert len(set(k_center_greedy(X, 5).tolist())) == 5


def test_review_queues_exclude_labelled_windows(trained):
    synth, rec = trained
    labelled = set()
    for lab in list_labels(synth.db).itertuples():
        w = synth.windows.query(
            f"recording_id == {lab.recording_id} and start_s <= {lab.start_s} < end_s"
        )
        labelled |= set(w["window_id"])
    for strategy in ("top", "uncertain", "diverse"):
        q = review_queue(synth.db, rec.probe_id, strategy, n=8)
        assert len(q) == 8 and not set(q["window_id"]) & labelled
    top = review_queue(synth.db, rec.probe_id, "top", n=8)
    assert top["score"].is_monotonic_decreasing
    got = top.merge(synth.windows, on="window_id")["call_type"]
    assert (got == "owl").mean() >= 0.75  # the unlabelled owls of recordings 4-7 come first
    unc = review_queue(synth.db, rec.probe_id, "uncertain", n=8)
    assert np.abs(unc["score"] - rec.thresholds[0]).is_monotonic_increasing
    margin = review_queue(synth.db, rec.probe_id, "margin", n=8)
    assert margin["window_id"].tolist() == unc["window_id"].tolist()
    # diverse picks spread over the likely positives, not over the near-zero background
    div = review_queue(synth.db, rec.probe_id, "diverse", n=4)
    assert (div["score"] >= rec.thresholds[0]).all()
    with pytest.raises(ValueError, match="unknown review strategy"):
        review_queue(synth.db, rec.probe_id, "random")


def test_unsure_labels_are_not_negatives(tmp_path):
    synth = make_synth_db(tmp_path, n_recordings=4, windows_per_recording=20)
    for t in synth.truth.query("call_type == 'owl'").itertuples():
        add_label(synth.db, int(t.recording_id), t.start_s, t.end_s, "owl")
    w = synth.windows.query("call_type == ''").iloc[0]
    add_label(synth.db, int(w.recording_id), w.start_s, w.end_s, "owl", kind="unsure")
    with pytest.raises(ValueError, match="0 negative and 0 weak-negative windows"):
        train_probe(synth.db, MODEL, "owl", weak_weight=0.0, store=False)
    add_label(synth.db, int(w.recording_id), w.start_s, w.end_s, "owl", kind="negative")
    w2 = synth.windows.query("call_type == ''").iloc[5]
    add_label(synth.db, int(w2.recording_id), w2.start_s, w2.end_s, "owl", kind="negative")
    rec = train_probe(synth.db, MODEL, " owl ", weak_weight=0.0, store=False)
    assert rec.labels == ["owl"] and rec.training["owl"]["n_negative"] == 2


def test_too_few_examples_are_refused_with_what_to_label_next(tmp_path):
    # one positive and nothing else once stored a probe that flagged every window
    from index.probe import TooFewExamples

    synth = make_synth_db(tmp_path, n_recordings=4, windows_per_recording=20)
    owls = synth.truth.query("call_type == 'owl'")
    t = owls.iloc[0]
    add_label(synth.db, int(t.recording_id), t.start_s, t.end_s, "owl")
    with pytest.raises(TooFewExamples, match=r"1 positive, 0 negative .* label 1 more positive"):
        train_probe(synth.db, MODEL, "owl")
    t = owls.iloc[1]
    add_label(synth.db, int(t.recording_id), t.start_s, t.end_s, "owl")
    empty = synth.windows.query("call_type == ''").iloc[0]
    add_label(synth.db, int(empty.recording_id), empty.start_s, empty.end_s, "owl", "negative")
    with pytest.raises(TooFewExamples, match=r"label 1 more negative window\(s\) \(or allow weak"):
        train_probe(synth.db, MODEL, "owl", weak_weight=0.0)
    assert list_probes(synth.db).empty  # nothing stored
    rec = train_probe(synth.db, MODEL, "owl")  # weak negatives make up the negatives
    assert rec.training["n_weak"] >= 2


def test_unreachable_target_precision_is_reported_not_hidden(trained):
    # a probe whose cross-validated precision never passes 0.6: a 0.9 target must say so
    from index.classify import choose_thresholds
    from index.probe import LinearProbe, ProbeRecord, store_probe

    synth, rec = trained
    curve = {"threshold": [0.001, 0.2, 0.7], "precision": [0.1, 0.6, 0.5], "recall": [1, 0.6, 0.1]}
    weak = ProbeRecord(
        -1,
        MODEL,
        ["owl"],
        LinearProbe.from_weights(rec.probe.coef_, rec.probe.intercept_),
        [0.5],
        [{"pr_curve": curve}],
        {},
        {},
    )
    back = load_probe(synth.db, store_probe(synth.db, weak))
    [choice] = choose_thresholds(back, precision=0.9)
    assert not choice.reached
    assert (choice.threshold, choice.precision, choice.recall) == (0.2, 0.6, 0.6)
    assert choice.note("owl") == (
        "owl: target precision 0.9 is unreachable; the best cross-validated precision is "
        "0.600 (recall 0.600) at threshold 0.200, which is used"
    )
    [ok] = choose_thresholds(back, precision=0.55)
    assert ok.reached and ok.note("owl") is None and ok.threshold == 0.2
    assert choose_thresholds(back, threshold=0.3)[0].reached
