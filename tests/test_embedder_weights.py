"""Weight containers: crc32c, SSTable, TF tensor bundle (written here by a small writer), imports."""

from __future__ import annotations

import struct
import sys

import numpy as np
import pytest

from embedder.models.perch import PerchConfig, flax_leaf_order, load, random_net, state_dict_to_flax
from embedder.weights import (
    BundleError,
    WeightsError,
    crc32c,
    import_weights,
    installed_weights,
    list_installed,
    mask_crc,
    parse_bundle_entry,
    read_bundle,
    read_sstable,
    read_tensors,
)

MAGIC = 0xDB4775248B80FB57
DT = {np.dtype("<f4"): 1, np.dtype("<i8"): 9, np.dtype("<f2"): 19}
DT_BFLOAT16, DT_STRING = 14, 7
N = 160_000


# ------------------------------------------------------------------------ a small bundle writer
def varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def pb_int(field: int, v: int) -> bytes:
    return varint(field << 3) + varint(v)


def pb_bytes(field: int, b: bytes) -> bytes:
    return varint(field << 3 | 2) + varint(len(b)) + b


def pb_fixed32(field: int, v: int) -> bytes:
    return varint(field << 3 | 5) + struct.pack("<I", v)


def entry_proto(dtype: int, shape, offset: int, raw: bytes) -> bytes:
    dims = b"".join(pb_bytes(2, pb_int(1, d)) for d in shape)  # TensorShapeProto.dim{size}
    return (
        pb_int(1, dtype)
        + pb_bytes(2, dims)
        + pb_int(4, offset)  # shard_id 0 left at its default, as TF does
        + pb_int(5, len(raw))
        + pb_fixed32(6, mask_crc(crc32c(raw)))
    )


def block(entries: list[tuple[bytes, bytes]], restart_interval: int = 2) -> bytes:
    out, restarts, prev = bytearray(), [], b""
    for i, (key, value) in enumerate(entries):
        shared = 0
        if i % restart_interval == 0:
            restarts.append(len(out))
        else:
            while shared < min(len(key), len(prev)) and key[shared] == prev[shared]:
                shared += 1
        out += varint(shared) + varint(len(key) - shared) + varint(len(value))
        out += key[shared:] + value
        prev = key
    restarts = restarts or [0]
    out += b"".join(struct.pack("<I", r) for r in restarts) + struct.pack("<I", len(restarts))
    return bytes(out)


def write_sstable(path, items, per_block: int = 3, ctype: int = 0) -> None:
    data, index = bytearray(), []

    def emit(contents: bytes) -> bytes:
        handle = varint(len(data)) + varint(len(contents))
        data.extend(contents + bytes([ctype]))
        data.extend(struct.pack("<I", mask_crc(crc32c(contents + bytes([ctype])))))
        return handle

    for start in range(0, len(items), per_block):
        chunk = items[start : start + per_block]
        index.append((chunk[-1][0], emit(block(chunk))))
    meta = emit(block([]))
    idx = emit(block(index, restart_interval=1))
    footer = (meta + idx).ljust(40, b"\0") + struct.pack("<Q", MAGIC)
    path.write_bytes(bytes(data) + footer)


def write_bundle(folder, tensors: dict[str, np.ndarray], bf16: tuple[str, ...] = ()) -> None:
    """A SavedModel-style ``variables/`` folder holding ``tensors`` (plus a string entry)."""
    var = folder / "variables"
    var.mkdir(parents=True)
    data, items = bytearray(), []
    for name in sorted(tensors):
        a = np.asarray(tensors[name])  # tobytes() is C order; keeps 0-d shapes
        if name in bf16:
            raw, dtype = (a.astype("<f4").view("<u4") >> 16).astype("<u2").tobytes(), DT_BFLOAT16
        else:
            raw, dtype = a.tobytes(), DT[a.dtype]
        items.append((name.encode(), entry_proto(dtype, a.shape, len(data), raw)))
        data += raw
    items.append((b"_CHECKPOINTABLE_OBJECT_GRAPH", pb_int(1, DT_STRING) + pb_bytes(2, b"")))
    header = (b"", pb_int(1, 1) + pb_int(2, 0) + pb_bytes(3, pb_int(1, 1)))
    write_sstable(var / "variables.index", [header, *sorted(items)])
    (var / "variables.data-00000-of-00001").write_bytes(bytes(data))


def leaf_name(n: int) -> str:
    return f"_tf_var_leaves/{n}/.ATTRIBUTES/VARIABLE_VALUE"


def perch_bundle_tensors(flax: dict[str, np.ndarray], config: PerchConfig) -> dict:
    """Flax paths -> ``_tf_var_leaves/<N>`` names, N = position in the sorted leaf list."""
    order = flax_leaf_order(config)
    out = {leaf_name(n): flax[p] for n, p in enumerate(order)}
    head = sorted(p for p in flax if p not in set(order))  # bias < protop_kernel < prototypes
    out.update({leaf_name(len(order) + i): flax[p] for i, p in enumerate(head)})
    return out


# ----------------------------------------------------------------------------------------- tests
def test_crc32c_known_values_and_parallel_path():
    assert crc32c(b"123456789") == 0xE3069283
    assert crc32c(b"") == 0
    data = np.random.default_rng(0).integers(0, 256, 100_003, dtype=np.uint8).tobytes()
    from embedder.weights import _crc_register

    assert crc32c(data) == _crc_register(0xFFFFFFFF, data) ^ 0xFFFFFFFF


def test_sstable_roundtrip_with_prefix_compression(tmp_path):
    items = sorted((f"layer/{i:03d}/kernel".encode(), bytes([i]) * (i % 5)) for i in range(40))
    write_sstable(tmp_path / "t.index", items, per_block=7)
    assert read_sstable(tmp_path / "t.index") == items


def test_sstable_rejects_bad_magic_and_corruption(tmp_path):
    items = [(b"a", b"1"), (b"b", b"2")]
    write_sstable(tmp_path / "t.index", items)
    raw = bytearray((tmp_path / "t.index").read_bytes())
    (tmp_path / "magic.index").write_bytes(bytes(raw[:-1] + b"\0"))
    with pytest.raises(BundleError, match="magic"):
        read_sstable(tmp_path / "magic.index")
    raw[5] ^= 0xFF
    (tmp_path / "flip.index").write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="checksum"):
        read_sstable(tmp_path / "flip.index")


def test_snappy_block_without_library_is_a_clear_error(tmp_path, monkeypatch):
    write_sstable(tmp_path / "s.index", [(b"a", b"1")], ctype=1)
    monkeypatch.setitem(sys.modules, "cramjam", None)
    monkeypatch.setitem(sys.modules, "snappy", None)
    with pytest.raises(BundleError, match="snappy"):
        read_sstable(tmp_path / "s.index")


def test_bundle_entry_proto_fields():
    e = parse_bundle_entry(entry_proto(1, (3, 1536, 4), 4096, b"\0" * 8))
    assert (e.dtype, e.shape, e.shard_id, e.offset, e.size) == (1, (3, 1536, 4), 0, 4096, 8)
    assert e.crc32c == mask_crc(crc32c(b"\0" * 8)) and not e.sliced


def test_bundle_roundtrip_dtypes_and_errors(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "w": rng.standard_normal((3, 5, 2)).astype("<f4"),
        "bf": rng.standard_normal(7).astype("<f4"),
        "step": np.array(12345678901, dtype="<i8"),
        "half": rng.standard_normal((4,)).astype("<f2"),
    }
    write_bundle(tmp_path / "sm", tensors, bf16=("bf",))
    got = read_tensors(tmp_path / "sm")
    assert set(got) == set(tensors)  # the DT_STRING object graph is skipped
    np.testing.assert_array_equal(got["w"], tensors["w"])
    np.testing.assert_array_equal(got["step"], tensors["step"])
    np.testing.assert_array_equal(got["half"], tensors["half"])
    np.testing.assert_allclose(got["bf"], tensors["bf"], rtol=2**-7)
    assert got["bf"].dtype == np.float32 and got["step"].shape == ()
    data = tmp_path / "sm/variables/variables.data-00000-of-00001"
    raw = bytearray(data.read_bytes())
    raw[0] ^= 0x01
    data.write_bytes(bytes(raw))
    with pytest.raises(BundleError, match="checksum mismatch for tensor 'bf'"):
        read_bundle(tmp_path / "sm")
    data.unlink()
    with pytest.raises(BundleError, match="missing data shard"):
        read_bundle(tmp_path / "sm")
    with pytest.raises(BundleError, match="variables.index"):
        read_bundle(tmp_path)


@pytest.fixture(scope="module")
def perch_flax() -> dict[str, np.ndarray]:
    config = PerchConfig(n_classes=3)
    return state_dict_to_flax(random_net(config, seed=7).state_dict(), config)


@pytest.fixture(scope="module")
def audio() -> np.ndarray:
    rng = np.random.default_rng(2)
    t = np.arange(N) / 32_000
    return np.stack([np.sin(2 * np.pi * 2000 * t * (1 + t)), rng.standard_normal(N)]).astype("f4")


@pytest.mark.slow
def test_perch_savedmodel_bundle_loads_like_npz(tmp_path, perch_flax, audio):
    tensors = perch_bundle_tensors(perch_flax, PerchConfig())
    assert len(tensors) == 497 and leaf_name(496) in tensors
    write_bundle(tmp_path / "perch_v2", tensors)
    np.savez(tmp_path / "perch.npz", **perch_flax)
    from_bundle = load(str(tmp_path / "perch_v2"), device="cpu", batch_size=2)
    from_npz = load(str(tmp_path / "perch.npz"), device="cpu", batch_size=2)
    emb = from_bundle.embed(audio)
    assert emb.shape == (2, 1536)
    np.testing.assert_array_equal(emb, from_npz.embed(audio))
    assert from_bundle.embed_spatial(audio[:1]).shape == (1, 16, 4, 1536)
    assert from_bundle.logits(audio).shape == (2, 3)
    assert from_bundle.config.n_classes == 3


def test_perch_bundle_with_misshaped_leaf_names_it(tmp_path, perch_flax):
    config = PerchConfig()
    tensors = perch_bundle_tensors(perch_flax, config)
    n = flax_leaf_order(config).index("params/MBConv_4/DepthwiseConv/kernel")
    tensors[leaf_name(n)] = tensors[leaf_name(n)][:, :2]  # (3, 2, 1, 192)
    tensors[leaf_name(900)] = np.zeros(2, np.float32)
    write_bundle(tmp_path / "bad", tensors)
    with pytest.raises(WeightsError) as err:
        load(str(tmp_path / "bad"), device="cpu")
    msg = str(err.value)
    assert "params/MBConv_4/DepthwiseConv/kernel" in msg and "(3, 2, 1, 192)" in msg
    assert "_tf_var_leaves/900" in msg and "unused" in msg


@pytest.mark.slow
def test_import_installs_checkpoint_once(tmp_path, monkeypatch, perch_flax, audio):
    monkeypatch.setenv("CHORUS_HOME", str(tmp_path / "home"))
    write_bundle(tmp_path / "kaggle", perch_bundle_tensors(perch_flax, PerchConfig()))
    assert installed_weights("perch") is None and list_installed() == []
    path = import_weights("perch", tmp_path / "kaggle")
    assert path == tmp_path / "home" / "models" / "perch" / "weights.pt"
    assert installed_weights("perch") == path
    (info,) = list_installed()
    assert info["name"] == "perch" and len(info["sha256"]) == 64 and info["n_tensors"] > 494
    a = load(str(path), device="cpu").embed(audio[:1])
    b = load(str(tmp_path / "kaggle"), device="cpu").embed(audio[:1])
    np.testing.assert_array_equal(a, b)


def test_import_refuses_bad_input(tmp_path):
    with pytest.raises(WeightsError, match="no weight importer"):
        import_weights("nope", tmp_path)
    with pytest.raises(WeightsError, match="not found"):
        import_weights("perch", tmp_path / "missing")
    (tmp_path / "w.bin").write_bytes(b"xx")
    with pytest.raises(WeightsError, match="unknown weight file type"):
        import_weights("perch", tmp_path / "w.bin", dest_dir=tmp_path / "models")
    assert not (tmp_path / "models" / "perch" / "weights.pt").exists()


def test_genuine_tensorflow_savedmodel(tmp_path):
    tf = pytest.importorskip("tensorflow")
    rng = np.random.default_rng(0)
    arrays = [rng.standard_normal(s).astype(np.float32) for s in [(3, 3, 1, 4), (4,), (2, 5)]]
    module = tf.Module()
    module._tf_var_leaves = [tf.Variable(a) for a in arrays]
    tf.saved_model.save(module, str(tmp_path / "sm"))
    got = read_bundle(tmp_path / "sm")
    for i, a in enumerate(arrays):
        np.testing.assert_array_equal(got[leaf_name(i)], a)


@pytest.mark.slow
def test_genuine_tensorflow_perch_savedmodel_loads_like_npz(tmp_path, perch_flax, audio):
    """The whole Kaggle-folder path on a SavedModel that TensorFlow itself wrote (497 leaves in
    TF's own index and data-file layout), not our test writer."""
    tf = pytest.importorskip("tensorflow")
    tensors = perch_bundle_tensors(perch_flax, PerchConfig())
    module = tf.Module()
    module._tf_var_leaves = [tf.Variable(tensors[leaf_name(n)]) for n in range(len(tensors))]
    tf.saved_model.save(module, str(tmp_path / "perch_v2"))
    np.savez(tmp_path / "perch.npz", **perch_flax)
    from_tf = load(str(tmp_path / "perch_v2"), device="cpu", batch_size=2)
    np.testing.assert_array_equal(
        from_tf.embed(audio), load(str(tmp_path / "perch.npz"), device="cpu").embed(audio)
    )
    assert from_tf.logits(audio).shape == (2, 3)


def test_optimizer_slots_of_a_leaf_are_reported_not_loaded(tmp_path, perch_flax):
    # `_tf_var_leaves/N/.OPTIMIZER_SLOT/...` shares the leaf number: it must not replace the weight
    tensors = perch_bundle_tensors(perch_flax, PerchConfig())
    slot = leaf_name(0).replace(".ATTRIBUTES", ".OPTIMIZER_SLOT/optimizer/m/.ATTRIBUTES")
    tensors[slot] = np.full_like(tensors[leaf_name(0)], 7.0)
    write_bundle(tmp_path / "slots", tensors)
    with pytest.raises(WeightsError, match="unused tensor.*OPTIMIZER_SLOT"):
        load(str(tmp_path / "slots"), device="cpu")


def test_bundle_entry_whose_size_disagrees_with_its_shape(tmp_path):
    var = tmp_path / "sm" / "variables"
    var.mkdir(parents=True)
    raw = np.arange(8, dtype="<f4").tobytes()  # 8 floats stored, the shape says 4
    items = [(b"w", entry_proto(1, (2, 2), 0, raw))]
    header = (b"", pb_int(1, 1) + pb_int(2, 0) + pb_bytes(3, pb_int(1, 1)))
    write_sstable(var / "variables.index", [header, *items])
    (var / "variables.data-00000-of-00001").write_bytes(raw)
    with pytest.raises(
        BundleError, match=r"tensor 'w': 32 bytes do not hold a <f4 array of \(2, 2\)"
    ):
        read_bundle(tmp_path / "sm")


def test_npz_and_safetensors_in_bfloat16_or_damaged(tmp_path):
    import torch
    from safetensors.torch import save_file

    w = torch.arange(6, dtype=torch.float32).reshape(2, 3) / 8
    save_file({"w": w.to(torch.bfloat16)}, str(tmp_path / "bf.safetensors"))
    np.testing.assert_array_equal(read_tensors(tmp_path / "bf.safetensors")["w"], w.numpy())
    np.savez(tmp_path / "v2.npz", w=np.zeros(3, dtype="V2"))  # how NumPy keeps bfloat16
    with pytest.raises(WeightsError, match="tensor w has unsupported dtype"):
        read_tensors(tmp_path / "v2.npz")
    (tmp_path / "cut.npz").write_bytes((tmp_path / "v2.npz").read_bytes()[:40])
    with pytest.raises(WeightsError, match="cut.npz: cannot read"):
        read_tensors(tmp_path / "cut.npz")


def test_an_interrupted_reimport_leaves_the_previous_install_whole(tmp_path, monkeypatch):
    import json

    import embedder
    import embedder.weights as weights

    m = embedder.load_model("animal2vec-small", weights=None, device="cpu")
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    weights.save_checkpoint(a, m.config.to_dict(), m.model.state_dict())
    state = {k: v + 1.0 if v.is_floating_point() else v for k, v in m.model.state_dict().items()}
    weights.save_checkpoint(b, m.config.to_dict(), state)
    home = tmp_path / "models"
    installed = import_weights("animal2vec-small", a, dest_dir=home)
    before = installed.read_bytes()
    # the same weights imported again are the same file: databases embedded with them still match
    assert import_weights("animal2vec-small", a, dest_dir=home).read_bytes() == before

    def interrupted(path):
        raise KeyboardInterrupt  # Ctrl-C while a multi-GB source is hashed

    monkeypatch.setattr(weights, "sha256_file", interrupted)
    with pytest.raises(KeyboardInterrupt):
        import_weights("animal2vec-small", b, dest_dir=home)
    monkeypatch.undo()
    manifest = json.loads((home / "animal2vec-small" / "manifest.json").read_text())
    assert installed.read_bytes() == before and manifest["source"] == str(a.resolve())
    assert manifest["sha256"] == weights.sha256_file(installed)
    assert sorted(p.name for p in (home / "animal2vec-small").iterdir()) == [
        "manifest.json",
        "weights.pt",
    ]
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="junk.pt"):
        import_weights("animal2vec-small", tmp_path / "junk.pt", dest_dir=home)


def test_read_labels_one_reader_for_perch_csvs_and_birdnet_lists(tmp_path):
    from embedder.weights import WeightsError, read_labels

    csv = tmp_path / "labels.csv"
    csv.write_text("ebird2021,extra\nostric2,x\nemu1,y\n")
    assert read_labels(csv, 2) == ["ostric2", "emu1"]  # header dropped, first column kept
    txt = tmp_path / "BirdNET_Labels.txt"
    txt.write_text("Genus a_Wren, House\nGenus b_Owl\n\n")
    assert read_labels(txt, 2) == ["Genus a_Wren, House", "Genus b_Owl"]  # commas kept whole
    with pytest.raises(WeightsError, match="2 labels for a head with 5 classes"):
        read_labels(txt, 5)
