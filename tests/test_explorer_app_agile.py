"""The Agile page's loop without Streamlit (explorer/app/agile.py): a first batch from a search,
labels, a retrain with its CV figure, and next batches from the probe's review queue."""

from __future__ import annotations

import pandas as pd
import pytest
from agile_synth import MODEL, make_synth_db

from explorer.app import agile, label_ops


@pytest.fixture
def synth(tmp_path):
    return make_synth_db(tmp_path, n_recordings=6, windows_per_recording=20, seed=3)


def _label_batch(synth, batch: pd.DataFrame, label: str) -> None:
    """Label a batch from the synthetic truth, as a user listening to each window would."""
    truth = synth.windows.set_index("window_id")["call_type"]
    holds = (truth.loc[batch["window_id"]] == label).to_numpy()
    for kind, rows in (("positive", batch[holds]), ("negative", batch[~holds])):
        if len(rows):
            label_ops.write_labels(synth.db, rows, label, kind, "user:test")


def test_search_batch_leaves_out_the_query_and_labelled_windows(synth):
    owls = synth.windows[synth.windows["call_type"] == "owl"]["window_id"].tolist()
    batch = agile.search_batch(synth.db, MODEL, owls[:1], "owl", n=8)
    assert len(batch) == 8 and owls[0] not in batch["window_id"].tolist()
    assert batch["score"].is_monotonic_decreasing
    assert len(set(batch["window_id"]) & set(owls)) >= 5  # a search finds the planted calls
    _label_batch(synth, batch, "owl")
    again = agile.search_batch(synth.db, MODEL, owls[:1], "owl", n=8)
    assert not set(again["window_id"]) & set(batch["window_id"])
    with pytest.raises(ValueError, match="query window"):
        agile.search_batch(synth.db, MODEL, [], "owl")


def test_rounds_count_labels_report_cv_and_diverse_draws_from_real_scores(synth):
    owls = synth.windows[synth.windows["call_type"] == "owl"]["window_id"].tolist()
    batch = agile.search_batch(synth.db, MODEL, owls[:1], "owl", n=12)
    _label_batch(synth, batch, "owl")
    first = agile.retrain(synth.db, MODEL, "owl", 1)
    counts = agile.label_counts(synth.db, "owl")
    assert (first.positive, first.negative) == (counts["positive"], counts["negative"])
    assert first.positive + first.negative == 12
    assert first.average_precision is not None and 0 < first.average_precision <= 1
    assert "probe" in first.summary and "positive" in first.summary
    for strategy in agile.STRATEGIES:
        nxt = agile.probe_batch(synth.db, MODEL, first.probe_id, "owl", strategy, n=6)
        assert len(nxt) == 6 and not set(nxt["window_id"]) & set(batch["window_id"])
    # diverse picks come from the likely positives, not from windows scoring ~0
    diverse = agile.probe_batch(synth.db, MODEL, first.probe_id, "owl", "diverse", n=6)
    top = agile.probe_batch(synth.db, MODEL, first.probe_id, "owl", "top", n=30)
    assert set(diverse["window_id"]).issubset(set(top["window_id"]))
    assert diverse["score"].min() > 0.01
    _label_batch(synth, diverse, "owl")
    second = agile.retrain(synth.db, MODEL, "owl", 2)
    table = agile.rounds_table([first, second])
    assert table["number"].tolist() == [1, 2]
    assert table["positive"].iloc[1] + table["negative"].iloc[1] == 18
    with pytest.raises(ValueError, match="unknown strategy"):
        agile.probe_batch(synth.db, MODEL, first.probe_id, "owl", "random")


def test_retrain_with_too_few_examples_says_what_to_label(synth):
    owls = synth.windows[synth.windows["call_type"] == "owl"]["window_id"].tolist()
    batch = agile.search_batch(synth.db, MODEL, owls[:1], "owl", n=12)
    label_ops.write_labels(synth.db, batch.head(1), "owl", "positive", "user:test")
    with pytest.raises(ValueError, match="positive"):
        agile.retrain(synth.db, MODEL, "owl", 1)
    assert agile.label_counts(synth.db, "owl") == {"positive": 1, "negative": 0, "unsure": 0}
