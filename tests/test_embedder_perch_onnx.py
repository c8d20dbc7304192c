"""ONNX import of Perch: our network exported with its BatchNorms folded, read back by topology.

The export is what the released ``perch_v2.onnx`` is in the respects the reader relies on: weights
only as constants (names meaningless), each BatchNorm folded into its conv's weight and bias, the
mel matrix as a constant in front of the first convolution, and the prototype head after the last.
"""

from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np
import pytest
import torch

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import helper, numpy_helper  # noqa: E402

from embedder.models.perch import PerchConfig, load, random_net  # noqa: E402
from embedder.models.perch_frontend import FFT_SIZE, mel_matrix, normalize_windows  # noqa: E402
from embedder.models.perch_onnx import _Graph, check_mel, read_onnx  # noqa: E402
from embedder.weights import WeightsError  # noqa: E402

N = 160_000
N_CLASSES = 3


class Exported(torch.nn.Module):
    """|STFT| (B, 500, 513) -> pooled embedding and logits, the mel matrix inside as a constant."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net
        self.mel = torch.nn.Parameter(net.frontend.mel.clone())

    def forward(self, magnitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logmel = 0.1 * torch.log(torch.clamp(magnitude @ self.mel, min=1e-5))
        spatial = self.net.spatial_from_logmel(logmel)
        return spatial.mean(dim=(1, 2)), self.net.proto_head(spatial)


def magnitude(net: torch.nn.Module, audio: np.ndarray) -> torch.Tensor:
    """What our frontend computes before the mel matrix, through its public pieces."""
    fe = net.frontend
    framed = fe.frames(normalize_windows(torch.from_numpy(audio))) * fe.window
    return torch.fft.rfft(framed, n=FFT_SIZE, dim=-1).abs()


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    rng = np.random.default_rng(5)
    t = np.arange(N) / 32_000
    return np.stack([np.sin(2 * np.pi * 1500 * t * (1 + t)), rng.standard_normal(N)]).astype("f4")


@pytest.fixture(scope="module")
def unfolded() -> torch.nn.Module:
    """The reference: random weights, BatchNorms kept separate (eval mode)."""
    return random_net(PerchConfig(n_classes=N_CLASSES), seed=11).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory, unfolded, audio):
    """(path, folded network) of the ONNX export."""
    folded = random_net(PerchConfig(n_classes=N_CLASSES), seed=11).eval()
    folded.backbone.fuse()
    path = tmp_path_factory.mktemp("onnx") / "perch_v2.onnx"
    # the TorchScript exporter (the dynamo one needs onnxscript) prints tracer noise on stdout
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Exported(folded), (magnitude(folded, audio[:1]),), str(path), dynamo=False,
            opset_version=17, input_names=["magnitude"], output_names=["embedding", "logits"],
            dynamic_axes={"magnitude": {0: "batch"}},
        )  # fmt: skip
    return path, folded


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


def test_export_has_folded_batchnorms_and_no_usable_names(exported):
    model = onnx.load(str(exported[0]))
    ops = [n.op_type for n in model.graph.node]
    assert "BatchNormalization" not in ops and ops.count("Conv") == 78
    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    assert all(len(n.input) == 3 for n in convs)  # weight + the folded BatchNorm's bias


def test_onnx_weights_give_the_unfolded_models_embeddings(exported, unfolded, audio):
    path, folded = exported
    m = load(str(path), device="cpu", batch_size=2)
    assert m.config.n_classes == N_CLASSES and m.weights.startswith(str(path.resolve()))
    emb, logits = m.embed_with_logits(audio)
    with torch.no_grad():
        ref = unfolded(torch.from_numpy(audio)).numpy()
        ref_logits = unfolded.logits(torch.from_numpy(audio)).numpy()
    assert np.all(cosines(emb, ref) >= 0.99999), cosines(emb, ref)
    np.testing.assert_allclose(logits, ref_logits, atol=1e-4)
    # and what the file itself computes (onnxruntime on the same spectra) agrees as well
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    ort_emb, ort_logits = session.run(None, {"magnitude": magnitude(folded, audio).numpy()})
    assert np.all(cosines(emb, ort_emb) >= 0.99999), cosines(emb, ort_emb)
    np.testing.assert_allclose(logits, ort_logits, atol=1e-4)


def test_folded_weights_load_unchanged(exported):
    """Identity BatchNorms: fusing the imported net gives back the file's conv weights and biases."""
    path, folded = exported
    config, state = read_onnx(path)
    net = type(folded)(config)
    net.load_state_dict(state)
    net.backbone.fuse()
    ours, theirs = net.state_dict(), folded.state_dict()
    assert ours.keys() == theirs.keys()
    for key in ours:
        assert torch.equal(ours[key], theirs[key]), key


def test_import_command_installs_the_onnx(exported, audio, tmp_path, monkeypatch, capsys):
    from explorer.cli import main

    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    path = exported[0]
    assert main(["models", "import", "perch", str(path)]) == 0
    installed = tmp_path / "home" / "models" / "perch" / "weights.pt"
    assert str(installed) in capsys.readouterr().out
    a = load(str(installed), device="cpu").embed(audio[:1])
    np.testing.assert_array_equal(a, load(str(path), device="cpu").embed(audio[:1]))


def _first_conv_named(model, weight_shape: tuple[int, ...]):
    inits = {t.name: t for t in model.graph.initializer}
    for node in model.graph.node:
        w = inits.get(node.input[1]) if node.op_type == "Conv" else None
        if w is not None and tuple(w.dims) == weight_shape:
            return node, w
    raise AssertionError(f"no conv with weight {weight_shape}")


def test_topology_mismatch_names_the_first_differing_node(exported, tmp_path):
    model = onnx.load(str(exported[0]))
    # block 3's depthwise conv (192 channels, 3x3) given a 5x5 kernel
    node, weight = _first_conv_named(model, (192, 1, 3, 3))
    weight.CopyFrom(numpy_helper.from_array(np.zeros((192, 1, 5, 5), np.float32), weight.name))
    onnx.save(model, str(tmp_path / "bad.onnx"))
    with pytest.raises(WeightsError) as err:
        read_onnx(tmp_path / "bad.onnx")
    msg = str(err.value)
    assert f"topology mismatch at node {node.name!r}" in msg
    assert "(192, 1, 5, 5)" in msg and "backbone.blocks.3.depthwise" in msg


def test_a_mel_matrix_that_is_not_ours_is_refused(exported, tmp_path):
    model = onnx.load(str(exported[0]))
    (mel,) = [t for t in model.graph.initializer if tuple(t.dims) == (513, 128)]
    values = numpy_helper.to_array(mel).copy()
    values[40, 7] += 1e-3
    mel.CopyFrom(numpy_helper.from_array(values, mel.name))
    onnx.save(model, str(tmp_path / "othermel.onnx"))
    with pytest.raises(WeightsError, match=r"mel matrix .* max \|Δ\| = 0\.001 > 0\.0001"):
        load(str(tmp_path / "othermel.onnx"), device="cpu")


def _tiny_model(constant: np.ndarray):
    """A graph whose only content is ``constant`` (as a Constant node) times its input."""
    const = helper.make_node(
        "Constant", [], ["m"], value=numpy_helper.from_array(constant.astype(np.float32))
    )
    mul = helper.make_node("MatMul", ["x", "m"], ["y"])
    graph = helper.make_graph(
        [const, mul],
        "g",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, constant.shape[0]])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1, constant.shape[1]])],
    )
    return helper.make_model(graph)


def _tiny_graph(constant: np.ndarray) -> _Graph:
    return _Graph(_tiny_model(constant))


def test_mel_check_tolerance_and_layouts():
    ours = mel_matrix()
    assert check_mel(_tiny_graph(ours + 5e-5), "f") == "m"  # within 1e-4: accepted
    assert check_mel(_tiny_graph(ours.T.copy()), "f") == "m"  # (128, 513) is read transposed
    assert check_mel(_tiny_graph(np.ones((4, 4))), "f") is None  # no mel matrix: nothing to check
    with pytest.raises(WeightsError, match="mel matrix"):
        check_mel(_tiny_graph(ours * 1.01), "f")


def test_not_perch_and_not_onnx(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"\x00not a protobuf at all\xff" * 4)
    with pytest.raises(WeightsError, match="not a readable ONNX file"):
        read_onnx(tmp_path / "junk.onnx")
    onnx.save(_tiny_model(np.ones((4, 4))), str(tmp_path / "tiny.onnx"))
    with pytest.raises(WeightsError, match="no stem"):
        read_onnx(tmp_path / "tiny.onnx")
