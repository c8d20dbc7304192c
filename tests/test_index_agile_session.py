"""A simulated agile-modelling session on the demo archive (slow: embeds real synthetic audio).

Start from two positive examples per call type (the fewest a probe trains on), then five rounds of: ask the review queue for 10
windows, label them from the demo's truth table, retrain. Average precision over the whole
archive must rise and end >= 0.9 for each planted call type.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

ROUNDS = 5
PER_ROUND = 10


@pytest.fixture(scope="module")
def demo_db(tmp_path_factory):
    from explorer.demo import make_demo_archive
    from explorer.ingest import embed_archive

    out = tmp_path_factory.mktemp("agile_demo")
    truth = make_demo_archive(out, seed=0)
    embed_archive(out / "audio", out / "demo.chorus", model="spectral", progress=False)
    import index

    return index.connect(out / "demo.chorus"), truth


def _archive_ap(db, probe_id, call_type, truth, paths) -> float:
    from explorer.demo import relevant
    from index.classify import score_windows
    from index.probe import load_probe

    rec = load_probe(db, probe_id)
    meta, scores = score_windows(db, rec.model, rec.probe.coef_, rec.probe.intercept_)
    y = [
        relevant(truth, call_type, paths[r], s, e)
        for r, s, e in zip(meta["recording_id"], meta["start_s"], meta["end_s"], strict=True)
    ]
    return float(average_precision_score(y, scores[:, 0]))


@pytest.mark.slow
@pytest.mark.parametrize("call_type", ["sweep", "hoot", "trill"])
def test_agile_session_improves_to_high_precision(demo_db, call_type):
    from explorer.demo import relevant
    from index.classify import review_queue
    from index.labels import add_label
    from index.probe import train_probe

    db, truth = demo_db
    paths = db.recordings().set_index("recording_id")["path"].to_dict()
    ids = {p: r for r, p in paths.items()}
    for first in truth[truth.call_type == call_type].sort_values("snr_db").iloc[-2:].itertuples():
        add_label(db, ids[first.file], first.start_s, first.end_s, call_type, source="user:sim")
    probe = train_probe(db, "spectral", call_type).probe_id
    aps = [_archive_ap(db, probe, call_type, truth, paths)]
    for r in range(ROUNDS):
        # Half the picks from the top of the ranking, half near the decision threshold.
        top = review_queue(db, probe, "top", n=PER_ROUND // 2)
        unc = review_queue(db, probe, "uncertain", n=PER_ROUND)
        picks = top.merge(unc, how="outer").drop_duplicates("window_id").head(PER_ROUND)
        if len(picks) < PER_ROUND:
            picks = unc.head(PER_ROUND)
        for w in picks.itertuples():
            hit = relevant(truth, call_type, paths[w.recording_id], w.start_s, w.end_s)
            kind = "positive" if hit else "negative"
            add_label(
                db, int(w.recording_id), w.start_s, w.end_s, call_type, kind, source="user:sim"
            )
        probe = train_probe(db, "spectral", call_type, seed=r).probe_id
        aps.append(_archive_ap(db, probe, call_type, truth, paths))
    print(f"{call_type}: AP per round {np.round(aps, 3).tolist()}")
    assert aps[-1] > aps[0], aps
    assert aps[-1] >= 0.9, aps
    assert np.argmax(aps) >= 1
