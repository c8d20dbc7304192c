"""Symbolic links under an audio root: resolved, kept inside the root unless --follow-links,
and dangling links and loops recorded with their reason instead of vanishing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

import index
from explorer import cli, links
from explorer.ingest import embed_archive

SR = 16000


def _wav(path, seconds=2.0, freq=500.0):
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.2 * np.sin(2 * np.pi * freq * t)).astype(np.float32), SR)
    return path


@pytest.fixture
def archive(tmp_path):
    """root/: a.wav, inside.wav -> a.wav, out.wav -> ../outside/x.wav, slash -> /,
    far -> ../outside (a folder), gone.wav -> nowhere, l1.wav <-> l2.wav (a loop)."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    _wav(root / "a.wav")
    _wav(outside / "x.wav", freq=900.0)
    _wav(outside / "deep" / "y.wav", freq=1300.0)
    (outside / "deep" / "up").symlink_to(outside, target_is_directory=True)  # a folder loop
    (root / "inside.wav").symlink_to(root / "a.wav")
    (root / "out.wav").symlink_to(outside / "x.wav")
    (root / "slash").symlink_to("/", target_is_directory=True)
    (root / "far").symlink_to(outside, target_is_directory=True)
    (root / "gone.wav").symlink_to(root / "nowhere.wav")
    (root / "l1.wav").symlink_to(root / "l2.wav")
    (root / "l2.wav").symlink_to(root / "l1.wav")
    return root, outside


def _names(paths, root):
    return [p.relative_to(root).as_posix() for p in paths]


def test_links_leaving_the_root_are_refused_and_broken_ones_named(archive):
    root, _ = archive
    found = links.list_archive(root)
    assert _names(found.files, root) == ["a.wav", "inside.wav"]
    refused = {p.relative_to(root).as_posix(): why for p, why in found.refused}
    assert refused == {
        "far": links.OUTSIDE_FOLDER,
        "gone.wav": links.DANGLING,
        "l1.wav": links.LOOP,
        "l2.wav": links.LOOP,
        "out.wav": links.OUTSIDE_FILE,
        "slash": links.OUTSIDE_FOLDER,
    }
    assert found.link_targets == []


def test_follow_links_reads_outside_places_once_and_names_them(archive):
    root, outside = archive
    found = links.list_archive(root, follow_links=True)
    names = _names(found.files, root)
    assert {"a.wav", "inside.wav", "out.wav", "far/x.wav", "far/deep/y.wav"} <= set(names)
    assert len(names) == len(set(names))
    assert not any("/up/" in n for n in names)  # the loop inside the followed folder: not entered
    refused = {p.relative_to(root).as_posix(): why for p, why in found.refused}
    assert refused["far/deep/up"] == links.FOLDER_LOOP
    assert refused["gone.wav"] == links.DANGLING and refused["l1.wav"] == links.LOOP
    assert str(outside.resolve()) in found.link_targets
    assert str((outside / "x.wav").resolve()) in found.link_targets


def test_embed_records_refused_links_as_failed_without_reading_them(archive, tmp_path, capsys):
    root, outside = archive
    db_path = tmp_path / "db.chorus"
    s = embed_archive(root, db_path, progress=False)
    assert (s.n_embedded, s.n_failed) == (2, 6)
    recs = index.connect(db_path).recordings().set_index("path")
    assert recs.loc["out.wav", "status"] == "failed"
    assert recs.loc["out.wav", "error"] == links.OUTSIDE_FILE
    assert recs.loc["gone.wav", "error"] == links.DANGLING
    assert recs.loc["l1.wav", "error"] == links.LOOP
    assert recs.loc["slash", "error"] == links.OUTSIDE_FOLDER
    windows = index.connect(db_path).windows("spectral").to_pandas()
    assert set(windows.recording_id) == {recs.loc["a.wav", "recording_id"],
                                         recs.loc["inside.wav", "recording_id"]}  # fmt: skip
    assert "link_targets" not in json.loads((db_path / "chorus.json").read_text())
    again = embed_archive(root, db_path, progress=False)  # recorded once, not retried
    assert (again.n_skipped, again.n_failed, again.n_embedded) == (2, 6, 0)

    # asked to follow links: the outside file and folder are read, and chorus.json says so
    argv = ["embed", str(root), "--db", str(db_path), "--no-progress", "--follow-links"]
    assert cli.main(argv) == 0
    meta = json.loads((db_path / "chorus.json").read_text())
    assert str(outside.resolve()) in meta["link_targets"]
    recs = index.connect(db_path).recordings().set_index("path")
    for name in ("out.wav", "far/x.wav", "far/deep/y.wav"):
        assert recs.loc[name, "status"] == "ok", name
    assert "failed: gone.wav: a dangling link" in capsys.readouterr().err
