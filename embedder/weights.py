"""Weight files: readers (npz, safetensors, TF tensor bundle, our checkpoint), strict loading, imports.

Nothing here needs TensorFlow. A TF "tensor bundle" (SavedModel ``variables/``) is
 ``<prefix>.index`` — a LevelDB-format SSTable mapping tensor names to ``BundleEntryProto``
messages (the empty key holds ``BundleHeaderProto``) — plus ``<prefix>.data-SSSSS-of-NNNNN`` shards holding
raw little-endian tensor bytes. Both formats are parsed by hand here: block handles and entries use
varints, blocks end in a restart array and a 5-byte trailer (compression byte + masked CRC-32C).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from embedder.installed import (  # where imports are installed (torch-free); kept importable here
    CHECKPOINT_FILE,
    MANIFEST_FILE,
    models_dir,
)
from embedder.installed import data_dir as data_dir
from embedder.installed import installed_weights as installed_weights
from embedder.installed import list_installed as list_installed

TABLE_MAGIC = 0xDB4775248B80FB57  # LevelDB table magic number (little-endian fixed64)
FOOTER_SIZE = 48  # bytes: two padded block handles (40) + magic (8)
BLOCK_TRAILER_SIZE = 5  # bytes: compression type (1) + masked crc32c (4)
NO_COMPRESSION, SNAPPY_COMPRESSION = 0, 1
CRC_MASK_DELTA = 0xA282EAD8  # LevelDB / TF crc masking constant
CRC32C_POLY = 0x82F63B78  # Castagnoli polynomial, reflected
PARALLEL_CRC_MIN_BYTES = 4096  # below this, the byte-at-a-time loop is fast enough

# tensorflow/core/framework/types.proto DataType -> numpy little-endian dtype
TF_DTYPES = {
    1: "<f4",  # DT_FLOAT
    2: "<f8",  # DT_DOUBLE
    3: "<i4",  # DT_INT32
    4: "u1",  # DT_UINT8
    5: "<i2",  # DT_INT16
    6: "i1",  # DT_INT8
    9: "<i8",  # DT_INT64
    10: "?",  # DT_BOOL
    14: "bfloat16",  # DT_BFLOAT16, widened to float32 on read
    17: "<u2",  # DT_UINT16
    19: "<f2",  # DT_HALF
    22: "<u4",  # DT_UINT32
    23: "<u8",  # DT_UINT64
}
DT_STRING = 7


class BundleError(ValueError):
    """A malformed or unsupported tensor bundle; the message names the file and the problem."""


# ---------------------------------------------------------------------------------------------- crc32c
def _make_crc_table() -> np.ndarray:
    table = np.zeros(256, dtype=np.uint32)
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ CRC32C_POLY if c & 1 else c >> 1
        table[i] = c
    return table


_CRC_TABLE = _make_crc_table()
_CRC_TABLE_LIST = [int(v) for v in _CRC_TABLE]


def _crc_register(reg: int, data: bytes | memoryview) -> int:
    """Advance the raw CRC-32C register over ``data`` one byte at a time."""
    table = _CRC_TABLE_LIST
    for b in bytes(data):
        reg = table[(reg ^ b) & 0xFF] ^ (reg >> 8)
    return reg


def _gf2_apply(mat: list[int], vec: int) -> int:
    """Multiply a 32x32 GF(2) matrix (list of column bit-masks) by a 32-bit vector."""
    out, i = 0, 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _zero_bytes_operator(n: int) -> list[int]:
    """Matrix advancing a raw CRC register over ``n`` zero bytes (by repeated squaring)."""
    one_byte = [_crc_register(1 << i, b"\0") for i in range(32)]
    result = [1 << i for i in range(32)]  # identity
    power = one_byte
    while n:
        if n & 1:
            result = [_gf2_apply(power, c) for c in result]
        power = [_gf2_apply(power, c) for c in power]
        n >>= 1
    return result


def crc32c(data: bytes | memoryview | np.ndarray) -> int:
    """CRC-32C (Castagnoli) of ``data``.

    Large inputs are split into equal lanes whose registers advance together in NumPy; the lane
    registers are then chained with the zero-byte shift operator (CRC is linear over GF(2)).
    """
    buf = np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    if buf.size < PARALLEL_CRC_MIN_BYTES:
        return _crc_register(0xFFFFFFFF, buf.tobytes()) ^ 0xFFFFFFFF
    n_lanes = int(min(65536, buf.size // 64))
    lane_len = buf.size // n_lanes
    lanes = buf[: n_lanes * lane_len].reshape(n_lanes, lane_len).T.copy()  # (lane_len, n_lanes)
    regs = np.zeros(n_lanes, dtype=np.uint32)
    for row in lanes:
        regs = _CRC_TABLE[(regs ^ row) & 0xFF] ^ (regs >> 8)
    shift = _zero_bytes_operator(lane_len)
    reg = 0xFFFFFFFF  # the initial value acts as a register carried into lane 0
    for lane_reg in regs.tolist():
        reg = _gf2_apply(shift, reg) ^ lane_reg
    reg = _crc_register(reg, buf[n_lanes * lane_len :].tobytes())
    return reg ^ 0xFFFFFFFF


def mask_crc(crc: int) -> int:
    """LevelDB/TF masking of a stored CRC."""
    return ((((crc >> 15) | (crc << 17)) & 0xFFFFFFFF) + CRC_MASK_DELTA) & 0xFFFFFFFF


# ------------------------------------------------------------------------------------- wire formats
def read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    """Decode a base-128 varint at ``pos``; returns (value, next position)."""
    value, shift = 0, 0
    while True:
        if pos >= len(buf):
            raise BundleError("truncated varint")
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise BundleError("varint longer than 10 bytes")


def parse_protobuf(buf: bytes) -> dict[int, list]:
    """Protobuf wire format -> {field number: [values]}; varints as int, length-delimited as bytes."""
    fields: dict[int, list] = {}
    pos = 0
    while pos < len(buf):
        tag, pos = read_varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == 0:
            value, pos = read_varint(buf, pos)
        elif wire == 1:
            value, pos = struct.unpack_from("<Q", buf, pos)[0], pos + 8
        elif wire == 2:
            length, pos = read_varint(buf, pos)
            value, pos = bytes(buf[pos : pos + length]), pos + length
        elif wire == 5:
            value, pos = struct.unpack_from("<I", buf, pos)[0], pos + 4
        else:
            raise BundleError(f"unsupported protobuf wire type {wire}")
        if pos > len(buf):
            raise BundleError("truncated protobuf message")
        fields.setdefault(number, []).append(value)
    return fields


def _int64(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


@dataclass(frozen=True)
class BundleEntry:
    """One ``BundleEntryProto``: where a tensor's bytes live and how to read them."""

    dtype: int
    shape: tuple[int, ...]
    shard_id: int
    offset: int
    size: int
    crc32c: int | None  # masked, as stored
    sliced: bool


def parse_bundle_entry(buf: bytes) -> BundleEntry:
    """Decode BundleEntryProto: dtype(1) shape(2) shard_id(3) offset(4) size(5) crc32c(6) slices(7)."""
    f = parse_protobuf(buf)
    shape: tuple[int, ...] = ()
    if 2 in f:
        dims = parse_protobuf(f[2][-1]).get(2, [])  # TensorShapeProto.dim
        shape = tuple(_int64(parse_protobuf(d).get(1, [0])[-1]) for d in dims)  # Dim.size
    return BundleEntry(
        dtype=f.get(1, [0])[-1],
        shape=shape,
        shard_id=f.get(3, [0])[-1],
        offset=f.get(4, [0])[-1],
        size=f.get(5, [0])[-1],
        crc32c=f[6][-1] if 6 in f else None,
        sliced=7 in f,
    )


# ----------------------------------------------------------------------------------------- SSTable
def _decompress(raw: bytes, ctype: int, where: str) -> bytes:
    if ctype == NO_COMPRESSION:
        return raw
    if ctype == SNAPPY_COMPRESSION:
        try:
            import cramjam

            return bytes(cramjam.snappy.decompress_raw(raw))
        except ImportError:
            pass
        try:
            import snappy

            return snappy.uncompress(raw)
        except ImportError:
            raise BundleError(
                f"{where} is snappy-compressed; install 'cramjam' or 'python-snappy' to read it"
            ) from None
    raise BundleError(f"{where}: unknown block compression type {ctype}")


def _read_block(data: bytes, offset: int, size: int, path: Path) -> bytes:
    end = offset + size
    if end + BLOCK_TRAILER_SIZE > len(data):
        raise BundleError(f"{path}: block at {offset} (+{size}) runs past the end of the file")
    ctype = data[end]
    stored = struct.unpack_from("<I", data, end + 1)[0]
    if mask_crc(crc32c(data[offset : end + 1])) != stored:
        raise BundleError(f"{path}: checksum mismatch in block at offset {offset}")
    return _decompress(data[offset:end], ctype, f"{path}: block at {offset}")


def _block_entries(block: bytes, path: Path) -> list[tuple[bytes, bytes]]:
    """Prefix-compressed entries of one block, skipping the restart array."""
    n_restarts = struct.unpack_from("<I", block, len(block) - 4)[0]
    limit = len(block) - 4 - 4 * n_restarts
    if limit < 0:
        raise BundleError(f"{path}: corrupt block (restart array larger than the block)")
    entries, key, pos = [], b"", 0
    while pos < limit:
        shared, pos = read_varint(block, pos)
        unshared, pos = read_varint(block, pos)
        value_len, pos = read_varint(block, pos)
        if shared > len(key) or pos + unshared + value_len > limit:
            raise BundleError(f"{path}: corrupt block entry at byte {pos}")
        key = key[:shared] + block[pos : pos + unshared]
        pos += unshared
        entries.append((key, block[pos : pos + value_len]))
        pos += value_len
    return entries


def _block_handle(buf: bytes, pos: int = 0) -> tuple[int, int, int]:
    offset, pos = read_varint(buf, pos)
    size, pos = read_varint(buf, pos)
    return offset, size, pos


def read_sstable(path: str | Path) -> list[tuple[bytes, bytes]]:
    """All (key, value) pairs of a LevelDB-format table, in key order."""
    path = Path(path)
    data = path.read_bytes()
    if len(data) < FOOTER_SIZE:
        raise BundleError(f"{path}: too short to be a tensor bundle index ({len(data)} bytes)")
    footer = data[-FOOTER_SIZE:]
    if struct.unpack_from("<Q", footer, FOOTER_SIZE - 8)[0] != TABLE_MAGIC:
        raise BundleError(f"{path}: not a tensor bundle index (bad table magic number)")
    _, _, pos = _block_handle(footer)  # metaindex handle: filter blocks are not needed
    index_offset, index_size, _ = _block_handle(footer, pos)
    entries = []
    for _, handle in _block_entries(_read_block(data, index_offset, index_size, path), path):
        offset, size, _ = _block_handle(handle)
        entries.extend(_block_entries(_read_block(data, offset, size, path), path))
    return entries


# ------------------------------------------------------------------------------------------ bundle
def bundle_prefix(path: str | Path) -> Path:
    """Resolve a SavedModel folder, its ``variables/`` folder or a ``*.index`` file to the prefix."""
    p = Path(path)
    if p.is_dir():
        for cand in (p / "variables" / "variables", p / "variables"):
            if cand.with_name(cand.name + ".index").is_file():
                return cand
        raise BundleError(f"{p}: no variables/variables.index inside (not a SavedModel folder)")
    if p.suffix == ".index":
        return p.with_suffix("")
    raise BundleError(f"{p}: expected a SavedModel folder or a .index file")


def _decode(raw: bytes, entry: BundleEntry, what: str) -> np.ndarray:
    dtype = TF_DTYPES[entry.dtype]
    itemsize = 2 if dtype == "bfloat16" else np.dtype(dtype).itemsize
    if any(d < 0 for d in entry.shape) or len(raw) != itemsize * math.prod(entry.shape):
        raise BundleError(f"{what}: {len(raw)} bytes do not hold a {dtype} array of {entry.shape}")
    if dtype == "bfloat16":
        wide = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return wide.view(np.float32).reshape(entry.shape)
    return np.frombuffer(raw, dtype=dtype).reshape(entry.shape).copy()


def read_bundle(path: str | Path, verify: bool = True) -> dict[str, np.ndarray]:
    """Every tensor of a bundle as a NumPy array keyed by its bundle name.

    Parameters
    ----------
    path : str or Path
        SavedModel folder, its ``variables`` folder, or the ``.index`` file.
    verify : bool
        Check each tensor's CRC-32C against the index.
    """
    prefix = bundle_prefix(path)
    index_path = prefix.with_name(prefix.name + ".index")
    records = read_sstable(index_path)
    header = parse_protobuf(records[0][1]) if records and records[0][0] == b"" else None
    if header is None:
        raise BundleError(f"{index_path}: missing BundleHeaderProto (empty key)")
    n_shards = header.get(1, [1])[-1]
    if header.get(2, [0])[-1] != 0:
        raise BundleError(f"{index_path}: big-endian bundles are not supported")
    shards: dict[int, bytes] = {}
    tensors: dict[str, np.ndarray] = {}
    for key, value in records[1:]:
        name = key.decode("utf-8", "replace")
        entry = parse_bundle_entry(value)
        if entry.sliced:
            raise BundleError(f"{index_path}: tensor {name!r} is partitioned (slices unsupported)")
        if entry.dtype == DT_STRING:
            continue  # bookkeeping strings such as the object graph, never weights
        if entry.dtype not in TF_DTYPES:
            raise BundleError(f"{index_path}: tensor {name!r} has unsupported dtype {entry.dtype}")
        if entry.shard_id not in shards:
            shard = prefix.with_name(f"{prefix.name}.data-{entry.shard_id:05d}-of-{n_shards:05d}")
            if not shard.is_file():
                raise BundleError(f"missing data shard {shard} (needed by {name!r})")
            shards[entry.shard_id] = shard.read_bytes()
        data = shards[entry.shard_id]
        if entry.offset + entry.size > len(data):
            raise BundleError(f"{index_path}: tensor {name!r} lies past the end of its data shard")
        raw = data[entry.offset : entry.offset + entry.size]
        if verify and entry.crc32c is not None and mask_crc(crc32c(raw)) != entry.crc32c:
            raise BundleError(f"{index_path}: checksum mismatch for tensor {name!r}")
        tensors[name] = _decode(raw, entry, f"{index_path}: tensor {name!r}")
    return tensors


# ------------------------------------------------------------------------------- generic containers
CHECKPOINT_FORMAT = "chorus"
CHECKPOINT_VERSION = 1
HASH_CHUNK = 1 << 20  # bytes read at a time when hashing


class WeightsError(ValueError):
    """Weights that cannot be read or do not fit the model; the message names the tensor(s)."""


def read_labels(path: str | Path, n_classes: int) -> list[str]:
    """Class names of a classifier head: one per non-empty line, exactly ``n_classes``.

    A ``.csv`` file gives its first column. A header line is dropped when the file has exactly one
    line more than the head has classes (Perch's label CSVs start with one; BirdNET's lists do not).
    """
    text = Path(path).read_text(encoding="utf-8")
    names = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if Path(path).suffix.lower() == ".csv":
        names = [ln.split(",")[0].strip() for ln in names]
    if len(names) == n_classes + 1:
        names = names[1:]
    if len(names) != n_classes:
        raise WeightsError(f"{path}: {len(names)} labels for a head with {n_classes} classes")
    return names


def read_tensors(path: str | Path) -> dict[str, np.ndarray]:
    """Read a ``.npz`` / ``.safetensors`` file or a TF SavedModel folder into name -> array.

    Names are returned as stored (Flax paths such as ``params/Stem_0/Conv_0/kernel``, or bundle names
    such as ``_tf_var_leaves/156/.ATTRIBUTES/VARIABLE_VALUE``).
    """
    p = Path(path)
    if not p.exists():
        raise WeightsError(f"weights not found: {p}")
    if p.is_dir() or p.suffix == ".index":
        return read_bundle(p)
    if p.suffix in (".npz", ".safetensors"):
        try:
            tensors = _read_npz(p) if p.suffix == ".npz" else _read_safetensors(p)
        except Exception as err:  # zip, header or JSON damage: each reader has its own errors
            raise WeightsError(f"{p}: cannot read ({type(err).__name__}: {err})") from None
        for key, array in tensors.items():
            if array.dtype.kind not in "fiub":  # e.g. bfloat16 saved by NumPy as raw 'V2'
                raise WeightsError(f"{p}: tensor {key} has unsupported dtype {array.dtype}")
        return tensors
    raise WeightsError(
        f"{p}: unknown weight file type (expected .npz, .safetensors, .pt or a folder)"
    )


def _read_npz(p: Path) -> dict[str, np.ndarray]:
    with np.load(p, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _read_safetensors(p: Path) -> dict[str, np.ndarray]:
    from safetensors import safe_open

    out = {}
    with safe_open(str(p), framework="pt") as f:  # torch reads bfloat16, NumPy cannot
        for key in f.keys():
            t = f.get_tensor(key)
            out[key] = (t.float() if t.dtype == torch.bfloat16 else t).numpy()
    return out


def is_checkpoint(path: str | Path) -> bool:
    """True for a file in our own format (``torch.save`` of the chorus checkpoint dict)."""
    p = Path(path)
    return p.is_file() and p.suffix in (".pt", ".pth", ".ckpt")


def save_checkpoint(path: str | Path, config: dict, state_dict: dict) -> Path:
    """Write ``{"format": "chorus", "version": 1, "config": ..., "state_dict": ...}``."""
    p = Path(path)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "config": config,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in state_dict.items()},
    }
    # through a file object: torch.save names the archive inside after a *path* it is given, so
    # the same weights saved under a temporary name would hash differently on every import
    with open(p, "wb") as fh:
        torch.save(payload, fh)
    return p


def load_checkpoint(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """Read our checkpoint format; returns (config, state_dict)."""
    p = Path(path)
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for foreign / corrupt files
        raise WeightsError(f"{p}: not a readable Chorus checkpoint ({exc})") from exc
    found = checkpoint_contents(payload, p)
    if found is None:
        raise WeightsError(f"{p}: not a Chorus checkpoint (missing format 'chorus')")
    return found


def checkpoint_contents(payload: object, path: str | Path) -> tuple[dict, dict] | None:
    """(config, state_dict) of an unpickled Chorus checkpoint; None for anything else (a foreign
    format the caller may know); an unsupported version is a :class:`WeightsError`."""
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        return None
    if payload.get("version") != CHECKPOINT_VERSION:
        raise WeightsError(f"{path}: unsupported checkpoint version {payload.get('version')!r}")
    return dict(payload["config"]), dict(payload["state_dict"])


def _name_list(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def check_state_dict(
    expected: dict[str, tuple[int, ...]], given: dict[str, tuple[int, ...]], source: str
) -> None:
    """Raise :class:`WeightsError` naming every missing, unused or mis-shaped tensor."""
    missing = sorted(set(expected) - set(given))
    unused = sorted(set(given) - set(expected))
    wrong = sorted(
        f"{k} (file {tuple(given[k])}, model {tuple(expected[k])})"
        for k in set(expected) & set(given)
        if tuple(given[k]) != tuple(expected[k])
    )
    problems = []
    if missing:
        problems.append(f"missing tensor(s): {_name_list(missing)}")
    if unused:
        problems.append(f"unused tensor(s): {_name_list(unused)}")
    if wrong:
        problems.append(f"shape mismatch: {_name_list(wrong)}")
    if problems:
        raise WeightsError(f"{source}: " + "; ".join(problems))


def load_strict(module: torch.nn.Module, state_dict: dict[str, torch.Tensor], source: str) -> None:
    """Load ``state_dict`` into ``module`` after checking names and shapes exactly."""
    expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    check_state_dict(expected, {k: tuple(v.shape) for k, v in state_dict.items()}, source)
    module.load_state_dict(state_dict, strict=True)


# ----------------------------------------------------------------------------- installed weights
# Each model's importer (official file -> (config dict, state_dict)) is named by its registry entry.


def importers() -> list[str]:
    """Model names that :func:`import_weights` accepts."""
    from embedder import registry

    return sorted(n for n in registry.list_models() if registry.entry(n).importer)


def _resolve_importer(name: str) -> Callable[[str | Path], tuple[dict, dict]]:
    from embedder import registry

    fn = registry.importer(name) if name in registry.MODELS else None
    if fn is None:
        raise WeightsError(
            f"no weight importer for model {name!r}; known: {', '.join(importers())}"
        )
    return fn


def sha256_file(path: str | Path) -> str:
    """Hex SHA-256 of a file (or of all files under a folder, in sorted relative-path order)."""
    p = Path(path)
    h = hashlib.sha256()
    files = sorted(f for f in p.rglob("*") if f.is_file()) if p.is_dir() else [p]
    for f in files:
        if p.is_dir():
            h.update(str(f.relative_to(p)).encode())
        with open(f, "rb") as fh:
            while chunk := fh.read(HASH_CHUNK):
                h.update(chunk)
    return h.hexdigest()


def import_weights(name: str, path: str | Path, dest_dir: str | Path | None = None) -> Path:
    """Validate official weights for model ``name`` and install them once as our checkpoint.

    Parameters
    ----------
    name : str
        Model name with a registered importer (``"perch"``, ...).
    path : str or Path
        The downloaded weights (file or folder, as the importer expects).
    dest_dir : str or Path, optional
        Models folder to install into; default :func:`models_dir` (``$CHORUS_HOME/models``).

    Returns
    -------
    Path
        The installed checkpoint ``<dest_dir>/<name>/weights.pt`` (a ``manifest.json`` sits beside it).
    """
    from embedder.registry import load_model

    src = Path(path).expanduser()
    if not src.exists():
        raise WeightsError(f"weights not found: {src}")
    try:
        config, state_dict = _resolve_importer(name)(src)
    except WeightsError:
        raise
    except ValueError as err:  # a config or checkpoint the importer cannot use
        raise WeightsError(_naming(src, err)) from None
    target_dir = Path(dest_dir).expanduser() if dest_dir is not None else models_dir()
    target_dir = target_dir / name
    target_dir.mkdir(parents=True, exist_ok=True)
    final = target_dir / CHECKPOINT_FILE
    tmp = target_dir / f".{CHECKPOINT_FILE}.{os.getpid()}.tmp.pt"
    tmp_manifest = tmp.with_suffix(".json")
    try:
        save_checkpoint(tmp, config, state_dict)
        try:
            load_model(name, weights=str(tmp), device="cpu")  # strict load = validation
        except ValueError as err:
            raise WeightsError(_naming(src, err)) from None
        manifest = {
            "name": name,
            "path": str(final),
            "source": str(src.resolve()),
            "source_sha256": sha256_file(src),
            "sha256": sha256_file(tmp),
            "n_tensors": len(state_dict),
            "n_parameters": int(sum(int(np.prod(tuple(v.shape))) for v in state_dict.values())),
            "imported_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "config": config,
        }
        tmp_manifest.write_text(json.dumps(manifest, indent=2))
        # everything is written and checked before the swap: an interrupted import leaves the
        # previous install whole (and between the two renames the checkpoint matches its hash)
        os.replace(tmp, final)
        os.replace(tmp_manifest, target_dir / MANIFEST_FILE)
    finally:
        tmp.unlink(missing_ok=True)
        tmp_manifest.unlink(missing_ok=True)
    return final


def _naming(src: Path, err: Exception) -> str:
    """The error's message, with the file it concerns named once."""
    msg = str(err)
    return msg if str(src) in msg else f"{src}: {msg}"
