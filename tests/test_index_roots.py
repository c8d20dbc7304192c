"""What a database reads: a copied database folder names its roots when opened elsewhere."""

from __future__ import annotations

import json
import shutil

import index
from explorer import cli
from index.roots import opened_elsewhere


def _db(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    db = index.connect(tmp_path / "mine.chorus")
    db.add_audio_root(root)  # a writer: chorus.json records where it ran
    db.update_meta(lambda meta: meta.setdefault("link_targets", []).append("/data/elsewhere"))
    return db, root


def test_a_database_opened_away_from_where_it_was_written_names_what_it_reads(tmp_path):
    db, root = _db(tmp_path)
    assert json.loads((db.path / "chorus.json").read_text())["written_at"] == str(db.path)
    assert opened_elsewhere(db.path) is None
    copy = tmp_path / "theirs.chorus"
    shutil.copytree(db.path, copy)
    line = opened_elsewhere(copy)
    assert line is not None and "\n" not in line
    assert f"last written at {db.path}" in line
    assert f"reads audio under {root.resolve()}" in line and "/data/elsewhere" in line
    assert opened_elsewhere(tmp_path / "nothing.chorus") is None
    (tmp_path / "bad.chorus").mkdir()
    (tmp_path / "bad.chorus" / "chorus.json").write_text("[1, 2]")
    assert opened_elsewhere(tmp_path / "bad.chorus") is None


def test_the_cli_says_it_once_per_verb_and_a_writer_there_settles_it(tmp_path, capsys):
    db, root = _db(tmp_path)
    assert cli.main(["info", "--db", str(db.path)]) == 0
    assert "last written at" not in capsys.readouterr().err
    copy = tmp_path / "theirs.chorus"
    shutil.copytree(db.path, copy)
    assert cli.main(["info", "--db", str(copy)]) == 0
    err = [line for line in capsys.readouterr().err.splitlines() if "last written at" in line]
    assert len(err) == 1 and err[0].startswith("chorus info: ") and str(root.resolve()) in err[0]
    index.connect(copy).add_audio_root(tmp_path)  # a writer ran here: it is this one's now
    assert opened_elsewhere(copy) is None
