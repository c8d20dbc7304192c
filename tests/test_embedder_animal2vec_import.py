"""fairseq checkpoint import: synthetic checkpoints named as in the spec, loaded safely and mmap'd."""

from __future__ import annotations

import argparse
import sys
import types
import typing
from pathlib import Path

import numpy as np
import pytest
import torch

from embedder import weights as weights_mod
from embedder.models import animal2vec as a2v
from embedder.models import fairseq_import as fi

AUDIO = "modality_encoders.AUDIO."
FT = "w2v_encoder.w2v_model."
CONV_SPEC = "[(16, 63, 1)] + [(32, 10, 5)] + [(32, 3, 2)] * 3 + [(32, 3, 1)] + [(32, 2, 1)] * 2"


def tiny_config(**kw) -> a2v.Animal2vecConfig:
    layers = ((16, 63, 1), (32, 10, 5)) + ((32, 3, 2),) * 3 + ((32, 3, 1),) + ((32, 2, 1),) * 2
    base = dict(
        window_s=0.4, conv_layers=layers, width=32, prenet_depth=1, depth=2, heads=4,
        ffn_dim=64, pos_conv_layers=2, pos_conv_kernel=5, pos_conv_groups=4,
    )  # fmt: skip
    base.update(kw)
    return a2v.Animal2vecConfig(**base)


def source_model(cfg: a2v.Animal2vecConfig) -> a2v.Animal2vecModel:
    """A random model whose every parameter is perturbed, so a mis-mapped tensor shows."""
    model = a2v.build_model(cfg, seed=7)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model.eval()


def fairseq_state(model: a2v.Animal2vecModel, prefix: str = "") -> dict[str, torch.Tensor]:
    """The model's weights under the fairseq names listed in specs/animal2vec.md."""
    a = prefix + AUDIO
    sd: dict[str, torch.Tensor] = {}
    layers = model.features.layers
    sd[a + "local_encoder.conv_layers.0.0.low_hz_"] = layers[0].sinc.low_hz_
    sd[a + "local_encoder.conv_layers.0.0.band_hz_"] = layers[0].sinc.band_hz_
    sd[a + "local_encoder.conv_layers.0.2.1.weight"] = layers[0].norm.weight
    sd[a + "local_encoder.conv_layers.0.2.1.bias"] = layers[0].norm.bias
    sd[a + "local_encoder.conv_layers.0.3.p_swish_alpha"] = layers[0].pswish.alpha
    sd[a + "local_encoder.conv_layers.0.3.p_swish_beta"] = layers[0].pswish.beta
    for i in range(1, len(layers)):
        sd[a + f"local_encoder.conv_layers.{i}.0.weight"] = layers[i].conv.weight
        sd[a + f"local_encoder.conv_layers.{i}.2.1.weight"] = layers[i].norm.weight
        sd[a + f"local_encoder.conv_layers.{i}.2.1.bias"] = layers[i].norm.bias
    for name in ("weight", "bias"):
        sd[a + f"project_features.1.{name}"] = getattr(model.proj_norm, name)
        sd[a + f"project_features.2.{name}"] = getattr(model.proj, name)
        sd[a + f"context_encoder.norm.{name}"] = getattr(model.prenet_norm, name)
        for i, layer in enumerate(model.pos_conv):
            sd[a + f"relative_positional_encoder.{i + 1}.0.{name}"] = getattr(layer.conv, name)
    sd[a + "alibi_scale"] = model.alibi_scale.view(1, 1, -1, 1, 1)
    for i, block in enumerate(model.prenet):
        for name, p in block.named_parameters():
            sd[a + f"context_encoder.blocks.{i}.{name}"] = p
    for i, block in enumerate(model.blocks):
        for name, p in block.named_parameters():
            sd[prefix + f"blocks.{i}.{name}"] = p
    return {k: v.detach().clone() for k, v in sd.items()}


def fairseq_checkpoint(model, finetuned: bool, classes: int = 0, cfg=None) -> dict:
    prefix = FT if finetuned else ""
    sd = fairseq_state(model, prefix)
    # Things the importer must skip: EMA teacher, pretraining decoder (and optimizer state below).
    sd[prefix + "_ema"] = torch.zeros(10)
    sd[prefix + AUDIO + "decoder.blocks.0.0.weight"] = torch.zeros(8, 2, 7)
    sd[prefix + AUDIO + "decoder.proj.weight"] = torch.zeros(32, 8)
    if classes:
        sd["w2v_encoder.proj.weight"] = model.head.weight.detach().clone()
        sd["w2v_encoder.proj.bias"] = model.head.bias.detach().clone()
    model_cfg = {"conv_feature_layers": CONV_SPEC, "num_heads": 4, "embed_dim": 32}
    if finetuned:
        model_cfg = {"w2v_args": {"model": model_cfg, "task": {"sample_rate": 8000}}}
    return {
        "args": None,
        "cfg": cfg if cfg is not None else {"model": model_cfg, "task": {"sample_rate": 8000}},
        "model": sd,
        "optimizer_history": [{"criterion_name": "ModelCriterion", "num_updates": 3}],
        "last_optimizer_state": {"state": {0: {"exp_avg": torch.ones(5)}}, "param_groups": []},
        "extra_state": {"epoch": 2},
    }


def audio(n: int, samples: int = 3200) -> np.ndarray:
    rng = np.random.default_rng(5)
    return rng.standard_normal((n, samples)).astype(np.float32)


def reference(model: a2v.Animal2vecModel, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        frames = model(torch.from_numpy(x))
        logits = model.head(frames) if model.head is not None else frames
    return frames.mean(1).numpy(), logits.numpy()


# ------------------------------------------------------------------------------------ round trips


@pytest.mark.parametrize("finetuned", [False, True], ids=["pretrained", "finetuned"])
def test_fairseq_checkpoint_round_trips(tmp_path, finetuned):
    classes = 12 if finetuned else 0
    src = source_model(tiny_config(num_classes=classes))
    path = tmp_path / "a2v.pt"
    torch.save(fairseq_checkpoint(src, finetuned, classes), path)

    m = a2v.load_model(tiny_config(), "tiny", weights=str(path), device="cpu")
    assert m.window_s == 0.4  # the preset's window: fairseq files do not store one
    assert m.model.cfg.extra == {"imported_from": "fairseq", "finetuned": finetuned}
    assert (m.model.cfg.heads, m.model.cfg.depth, m.model.cfg.prenet_depth) == (4, 2, 1)
    assert m.num_classes == classes
    x = audio(3)
    emb, logits = reference(src, x)
    np.testing.assert_allclose(m.embed(x), emb, atol=1e-5)
    if finetuned:
        got = m.logits(x)
        assert got.shape == (3, 80, 12)
        np.testing.assert_allclose(got, logits, atol=1e-4)


def test_import_maps_every_spec_name_and_ignores_the_rest():
    src = source_model(tiny_config())
    cfg_dict, state = fi.convert(fairseq_checkpoint(src, finetuned=False))
    assert set(state) == set(src.state_dict())
    assert cfg_dict["conv_layers"][1] == [32, 10, 5] and cfg_dict["sample_rate"] == 8000
    assert cfg_dict["pos_conv_kernel"] == 5 and cfg_dict["pos_conv_groups"] == 4
    assert not any("decoder" in k or "_ema" in k for k in state)


def test_import_registry_installs_a_checkpoint(tmp_path):
    cfg = a2v.Animal2vecConfig.small()
    cfg.prenet_depth, cfg.depth, cfg.pos_conv_layers = 1, 1, 1
    src = source_model(cfg)
    path = tmp_path / "small_fairseq.pt"
    ckpt = fairseq_checkpoint(src, finetuned=False)
    ckpt["cfg"] = {"task": {"sample_rate": 8000}}  # no conv spec: the published layers are assumed
    torch.save(ckpt, path)
    installed = weights_mod.import_weights("animal2vec-small", path, dest_dir=tmp_path / "models")
    m = a2v.load_small(weights=str(installed), device="cpu")
    assert m.weights is not None and m.dim == 256
    loaded = m.model.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in src.state_dict().items())
    with pytest.raises(ValueError, match="width-256"):
        weights_mod.import_weights("animal2vec", path, dest_dir=tmp_path / "models")


# ------------------------------------------------------------------------------------ key errors


@pytest.mark.parametrize("finetuned", [False, True], ids=["pretrained", "finetuned"])
def test_unknown_and_missing_keys_are_named(finetuned):
    prefix = FT if finetuned else ""
    ckpt = fairseq_checkpoint(source_model(tiny_config()), finetuned)
    del ckpt["model"][prefix + "blocks.1.mlp.fc2.bias"]
    ckpt["model"][prefix + AUDIO + "local_encoder.conv_layers.0.9.weight"] = torch.zeros(3)
    with pytest.raises(fi.CheckpointError) as err:
        fi.convert(ckpt, source="x.pt")
    msg = str(err.value)
    assert f"missing keys: {prefix}blocks.1.mlp.fc2.bias" in msg
    assert f"unknown keys: {prefix}{AUDIO}local_encoder.conv_layers.0.9.weight" in msg


def test_missing_block_and_wrong_shape_are_named():
    ckpt = fairseq_checkpoint(source_model(tiny_config()), finetuned=False)
    ckpt["model"] = {k: v for k, v in ckpt["model"].items() if ".context_encoder.norm." not in k}
    with pytest.raises(fi.CheckpointError, match=r"context_encoder\.norm\.bias"):
        fi.convert(ckpt)
    ckpt = fairseq_checkpoint(source_model(tiny_config()), finetuned=False)
    del ckpt["model"][AUDIO + "local_encoder.conv_layers.3.0.weight"]
    with pytest.raises(fi.CheckpointError, match=r"missing keys: .*conv_layers\.3\.0\.weight"):
        fi.convert(ckpt)
    ckpt = fairseq_checkpoint(source_model(tiny_config()), finetuned=False)
    ckpt["model"]["blocks.0.norm1.weight"] = torch.ones(31)
    with pytest.raises(fi.CheckpointError, match=r"blocks\.0\.norm1\.weight \(31,\)"):
        fi.convert(ckpt)


def test_conv_spec_that_disagrees_with_tensors_is_an_error():
    ckpt = fairseq_checkpoint(source_model(tiny_config()), finetuned=False)
    ckpt["cfg"]["model"]["conv_feature_layers"] = CONV_SPEC.replace("(32, 10, 5)", "(32, 9, 5)")
    with pytest.raises(fi.CheckpointError, match="conv layer 1"):
        fi.convert(ckpt)
    ckpt["cfg"]["model"]["conv_feature_layers"] = CONV_SPEC.split(" + ", 1)[1]  # no sinc layer
    assert fi.convert(ckpt)[0]["conv_layers"][0] == [16, 63, 1]
    assert fi.parse_conv_spec("[(4, 3, 2)] * 2 + [(8, 2, 1)]") == [(4, 3, 2), (4, 3, 2), (8, 2, 1)]
    with pytest.raises(fi.CheckpointError, match="unsupported"):
        fi.parse_conv_spec("__import__('os').getcwd()")


# ------------------------------------------------------------------------------------ safe loading


def test_load_is_memory_mapped(tmp_path):
    path = tmp_path / "mapped.pt"
    torch.save(fairseq_checkpoint(source_model(tiny_config()), finetuned=False), path)
    maps = Path("/proc/self/maps")
    if not maps.exists():
        pytest.skip("needs /proc/self/maps to see memory mappings")
    assert str(path) not in maps.read_text()
    ckpt = fi.load_torch_file(path)
    assert str(path) in maps.read_text()  # tensors are backed by the mapped file
    assert ckpt["model"]["blocks.0.norm1.weight"].shape == (32,)


def _fake_module(monkeypatch, name: str, **classes) -> None:
    parts = name.split(".")
    for i in range(1, len(parts)):
        parent = ".".join(parts[:i])
        if parent not in sys.modules:
            monkeypatch.setitem(sys.modules, parent, types.ModuleType(parent))
    module = types.ModuleType(name)
    for cls_name, cls in classes.items():
        cls.__module__, cls.__qualname__, cls.__name__ = name, cls_name, cls_name
        setattr(module, cls_name, cls)
    monkeypatch.setitem(sys.modules, name, module)


class _Metadata:
    def __init__(self, ref_type):
        self.ref_type, self.optional = ref_type, True


class _AnyNode:
    def __init__(self, val):
        self._val, self._metadata, self._parent = val, _Metadata(typing.Any), None


class _DictConfig:
    """Pickles like omegaconf's DictConfig: __dict__ with _content of nodes, _metadata, _parent."""

    def __init__(self, content: dict):
        self._metadata, self._parent = _Metadata(typing.Any), None
        self._content = {
            k: _DictConfig(v) if isinstance(v, dict) else _AnyNode(v) for k, v in content.items()
        }


@pytest.fixture
def fake_omegaconf(monkeypatch):
    _fake_module(monkeypatch, "omegaconf.dictconfig", DictConfig=_DictConfig)
    _fake_module(monkeypatch, "omegaconf.nodes", AnyNode=_AnyNode)
    _fake_module(monkeypatch, "omegaconf.base", ContainerMetadata=_Metadata)
    return _DictConfig


def test_omegaconf_cfg_loads_with_weights_only(tmp_path, fake_omegaconf):
    src = source_model(tiny_config())
    cfg = fake_omegaconf(
        {
            "model": {"num_heads": 4, "ema_decay": np.float64(0.9997), "modalities": {"x": 1}},
            "task": {"sample_rate": 8000, "normalize": True},
        }
    )
    ckpt = fairseq_checkpoint(src, finetuned=False, cfg=cfg)
    # A scalar ALiBi scale: the head count must then come from the cfg.
    ckpt["model"][AUDIO + "alibi_scale"] = torch.full((1, 1, 1, 1, 1), 0.7)
    path = tmp_path / "omega.pt"
    torch.save(ckpt, path)
    unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    assert "omegaconf.dictconfig.DictConfig" in unsafe  # weights_only alone would refuse this file
    loaded = fi.load_torch_file(path)
    plain = fi.plain(loaded["cfg"])
    assert plain["model"]["ema_decay"] == 0.9997  # a numpy scalar, decoded without numpy's pickle
    assert plain["model"]["num_heads"] == 4 and plain["task"] == {
        "sample_rate": 8000, "normalize": True,
    }  # fmt: skip
    cfg_dict, state = fi.convert(loaded)
    assert cfg_dict["heads"] == 4
    torch.testing.assert_close(state["alibi_scale"], torch.full((4,), 0.7))


def test_argparse_namespace_args_are_read(tmp_path):
    src = source_model(tiny_config())
    ckpt = fairseq_checkpoint(src, finetuned=False)
    ckpt["cfg"] = None
    ckpt["args"] = argparse.Namespace(sample_rate=16000, conv_feature_layers=CONV_SPEC)
    path = tmp_path / "ns.pt"
    torch.save(ckpt, path)
    cfg_dict, _ = fi.import_fairseq(path)
    assert cfg_dict["sample_rate"] == 16000


def test_sinc_min_band_follows_the_checkpoint_sample_rate(tmp_path):
    """animal2vec's SincConv narrowest band is ceil(sample_rate / kernel): 127 Hz at 8 kHz, 254 at 16 kHz."""
    assert (
        fi.convert(fairseq_checkpoint(source_model(tiny_config()), False))[0]["sinc_min_band_hz"]
        == 127
    )
    src = source_model(tiny_config(sample_rate=16_000, sinc_min_band_hz=254.0))
    ckpt = fairseq_checkpoint(src, finetuned=False)
    ckpt["cfg"]["task"]["sample_rate"] = 16_000
    path = tmp_path / "a2v16k.pt"
    torch.save(ckpt, path)
    m = a2v.load_model(tiny_config(), "tiny", weights=str(path), device="cpu")
    assert m.model.cfg.sinc_min_band_hz == 254 and m.sample_rate == 16_000
    # a model built for 16 kHz without a checkpoint gets the same bank as the imported one
    assert a2v.Animal2vecConfig(sample_rate=16_000).sinc_min_band_hz == 254
    x = audio(2, samples=6400)
    np.testing.assert_allclose(m.embed(x), reference(src, x)[0], atol=1e-5)


class _Thing:
    def __init__(self):
        self.x = 1


def test_foreign_objects_need_trust(tmp_path, monkeypatch):
    _fake_module(monkeypatch, "mylab.things", Thing=_Thing)
    ckpt = fairseq_checkpoint(source_model(tiny_config()), finetuned=False)
    ckpt["extra_state"] = {"thing": _Thing()}
    path = tmp_path / "foreign.pt"
    torch.save(ckpt, path)
    with pytest.raises(fi.CheckpointError, match=r"mylab\.things\.Thing.*trust=True"):
        fi.load_torch_file(path)
    loaded = fi.load_torch_file(path, trust=True)
    assert loaded["extra_state"]["thing"].x == 1


def test_unreadable_files_are_clear_errors(tmp_path):
    with pytest.raises(fi.CheckpointError, match="no such weight file"):
        fi.load_torch_file(tmp_path / "nope.pt")
    legacy = tmp_path / "legacy.pt"
    torch.save({"model": {}}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(fi.CheckpointError, match="legacy"):
        fi.load_torch_file(legacy)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(fi.CheckpointError, match="not a torch.save zip"):
        fi.load_torch_file(junk)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(ValueError, match="neither a chorus checkpoint"):
        a2v.read_weights(other)
