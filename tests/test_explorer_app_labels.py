"""Label writes of the explorer as undoable changes (explorer/app/label_ops.py) and the library's
``restore_labels`` that an undo uses: bulk writes, relabels, several deletions, edits."""

from __future__ import annotations

import pandas as pd
import pytest
from agile_synth import MODEL, make_synth_db

from explorer.app import backend, label_ops
from index.labels import add_label, list_labels, restore_labels


@pytest.fixture
def synth(tmp_path):
    return make_synth_db(tmp_path, n_recordings=2, windows_per_recording=6)


def _rows(synth) -> pd.DataFrame:
    return backend.windows_by_id(synth.db, MODEL, synth.windows["window_id"].tolist())


def _state(db) -> list[tuple]:
    labs = list_labels(db)
    return sorted(zip(labs["label_id"], labs["start_s"], labs["label"], labs["kind"], strict=True))


def test_a_bulk_write_is_undone_in_one_step_and_restores_what_it_replaced(synth):
    db = synth.db
    earlier = add_label(db, 0, 0.0, 5.0, "owl", kind="negative", source="user:ann")
    before = _state(db)
    change = label_ops.write_labels(db, _rows(synth), "owl", "positive", "user:app")
    assert change.what == "Stored 12 × positive 'owl'" and len(change.added) == 12
    assert change.removed["label_id"].tolist() == [earlier]  # replaced by the relabel
    assert len(list_labels(db)) == 12
    note = label_ops.undo(db, change)
    assert "12 removed, 1 restored" in note
    assert _state(db) == before
    restored = list_labels(db).iloc[0]
    assert restored["source"] == "user:ann"  # exactly as it was, not a new label
    assert "0 removed, 0 restored" in label_ops.undo(db, change)  # a second undo does nothing


def test_remove_several_then_undo(synth):
    db = synth.db
    ids = [add_label(db, 0, 5.0 * i, 5.0 * i + 5, "wren") for i in range(4)]
    before = _state(db)
    change = label_ops.remove(db, ids[:3])
    assert list_labels(db)["label_id"].tolist() == [ids[3]]
    label_ops.undo(db, change)
    assert _state(db) == before
    with pytest.raises(ValueError, match="select labels"):
        label_ops.remove(db, [])


def test_edit_name_and_kind_then_undo(synth):
    db = synth.db
    a = add_label(db, 0, 0.0, 5.0, "owl")
    b = add_label(db, 0, 5.0, 10.0, "owl")
    other = add_label(db, 0, 0.0, 5.0, "wren", kind="negative")  # the new name on a's span
    before = _state(db)
    change = label_ops.edit(db, [a, b], label="wren", source="user:app")
    labs = list_labels(db)
    assert labs["label"].tolist() == ["wren", "wren"] and other not in labs["label_id"].tolist()
    label_ops.undo(db, change)
    assert _state(db) == before
    change = label_ops.edit(db, [b], kind="unsure", source="user:app")
    assert list_labels(db).set_index("start_s").loc[5.0, "kind"] == "unsure"
    label_ops.undo(db, change)
    assert _state(db) == before
    with pytest.raises(ValueError, match="new label name or kind"):
        label_ops.edit(db, [a])


def test_restore_labels_skips_ids_still_present(synth):
    db = synth.db
    add_label(db, 0, 0.0, 5.0, "owl")
    assert restore_labels(db, list_labels(db)) == 0
    assert restore_labels(db, pd.DataFrame()) == 0


def test_filter_labels_by_chosen_values(synth):
    db = synth.db
    add_label(db, 0, 0.0, 5.0, "owl", source="user:ann")
    add_label(db, 1, 0.0, 5.0, "wren", kind="negative", source="import:x.txt")
    labs = list_labels(db)
    assert len(label_ops.filter_labels(labs, label=[], kind=[])) == 2
    got = label_ops.filter_labels(labs, kind=["negative"], source=["import:x.txt"])
    assert got["label"].tolist() == ["wren"]
    with pytest.raises(ValueError, match="cannot filter"):
        label_ops.filter_labels(labs, site=["A"])
