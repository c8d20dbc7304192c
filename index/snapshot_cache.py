"""A snapshot's window columns and vector layout, kept beside the table for a fast cold start.

Opening a snapshot of a large table reads six columns of every window through a Lance scan and
the metadata of every data file (0.3 s at a million windows), before the first search can
answer. The first process to open a version of at least ``MIN_ROWS`` windows writes what it
read to one file in the database's ``cache/`` folder; later processes map that file and read
only the pages they touch. The file is named by a fingerprint of the table version's
manifest (every fragment's files and deletions), so a rewritten, compacted or recreated table
never matches an old file; writing a new one removes the model's others.

The file: ``MAGIC``, an 8-byte little-endian header length, a JSON header (each column's
dtype, byte offset and length; the vector layout or null; the header's sha1), then the
columns, 64-byte aligned.
It is checked against the table when read (row counts, sizes) and is never executed or
unpickled: a database folder may come from someone else.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import re
import struct
from pathlib import Path

import numpy as np

from .files import atomic_write

MIN_ROWS = 20_000  # below this a Lance scan of the columns takes milliseconds
MAGIC = b"CHORUS-SNAPSHOT-1\n"
ALIGN = 64
# the columns kept, with their types: a file holding anything else is not used
COLUMNS = {
    "row_addr": "<u8",
    "window_id": "<i8",
    "recording_id": "<i8",
    "channel": "<i4",
    "start_s": "<f8",
    "end_s": "<f8",
}
SAMPLES = 8  # rows compared with the table's own values before the file is trusted
log = logging.getLogger(__name__)


def manifest(dataset) -> tuple[str, int]:
    """(sha1 of the version and every fragment's manifest entry (data files, deletions), the
    version's row count), from one read of its fragments (no scan)."""
    h = hashlib.sha1(f"{dataset.version}\n".encode())
    rows = 0
    for frag in dataset.get_fragments():
        meta = frag.metadata
        h.update(json.dumps(meta.to_json(), sort_keys=True, default=str).encode())
        h.update(b"\n")
        rows += meta.physical_rows - meta.num_deletions
    return h.hexdigest(), rows


def _digest(header: dict) -> str:
    """sha1 of a header without its digest: a flipped bit in it shows."""
    return hashlib.sha1(json.dumps(header, sort_keys=True).encode()).hexdigest()


def _path(folder: Path, model: str, key: str) -> Path:
    return Path(folder) / f"snapshot_{model}_{key}.bin"


def load(folder: Path, model: str, dataset) -> tuple[dict[str, np.ndarray], dict | None] | None:
    """(columns over a read-only mapping, the vector layout or None) of ``dataset``'s version,
    or None where no valid file is kept."""
    key, n = manifest(dataset)
    path = _path(folder, model, key)
    try:
        with open(path, "rb") as f:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):  # missing, or empty
        return None
    try:
        columns, layout = _parse(mapped, n)
        _check_sample(columns, dataset)
    except (ValueError, KeyError, TypeError, json.JSONDecodeError, struct.error) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None
    return columns, layout


def _check_sample(columns: dict[str, np.ndarray], dataset) -> None:
    """Raise ValueError unless ``SAMPLES`` rows spread over the table read the same there."""
    n = len(columns["window_id"])
    if not n:
        return
    rows = np.unique(np.linspace(0, n - 1, SAMPLES).astype(np.int64))
    names = [c for c in COLUMNS if c != "row_addr"]
    got = dataset.take(rows.tolist(), columns=names)
    for name in names:
        if not np.array_equal(got[name].to_numpy(), columns[name][rows]):
            raise ValueError(f"column {name!r} differs from the table")


def _parse(mapped: mmap.mmap, n: int) -> tuple[dict[str, np.ndarray], dict | None]:
    if mapped[: len(MAGIC)] != MAGIC:
        raise ValueError("not a snapshot cache file")
    (size,) = struct.unpack_from("<Q", mapped, len(MAGIC))
    start = len(MAGIC) + 8
    text = bytes(mapped[start : start + size])
    header = json.loads(text)
    if header.pop("digest", None) != _digest(header):
        raise ValueError("its header does not match its checksum")
    columns = {}
    if set(header["columns"]) != set(COLUMNS):
        raise ValueError("other columns than expected")
    for name, (dtype, offset, count) in header["columns"].items():
        if dtype != COLUMNS[name] or count != n or offset < start + size:
            raise ValueError(f"column {name!r} does not fit the table")
        if offset + count * np.dtype(dtype).itemsize > len(mapped):
            raise ValueError("the file is shorter than its header says")
        columns[name] = np.frombuffer(mapped, dtype, count, offset)  # read-only, not copied
    return columns, header.get("layout")


def save(folder: Path, model: str, dataset, columns: dict[str, np.ndarray], layout) -> None:
    """Write the columns (each (n,)) and vector layout of ``dataset``'s version; remove the
    model's other files. A read-only database folder is left as it is."""
    path = _path(folder, model, manifest(dataset)[0])
    arrays = {name: np.ascontiguousarray(columns[name], COLUMNS[name]) for name in COLUMNS}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: _write(tmp, arrays, layout))
    except OSError as exc:
        log.info("snapshot cache not written (%s)", exc)
        return
    same = re.compile(rf"snapshot_{re.escape(model)}_[0-9a-f]{{40}}\.bin")
    for old in path.parent.iterdir():
        if same.fullmatch(old.name) and old != path:
            old.unlink(missing_ok=True)


def _write(tmp: Path, arrays: dict[str, np.ndarray], layout) -> None:
    header: dict = {"columns": {}, "layout": layout}
    # offsets depend on the header's length: size it with room for the offsets' digits
    probe = {n: [a.dtype.str, 10**15, len(a)] for n, a in arrays.items()}
    size = len(json.dumps({"columns": probe, "layout": layout}).encode()) + 96  # and digest
    offset = -(-(len(MAGIC) + 8 + size) // ALIGN) * ALIGN
    for name, a in arrays.items():
        header["columns"][name] = [a.dtype.str, offset, len(a)]
        offset = -(-(offset + a.nbytes) // ALIGN) * ALIGN
    header["digest"] = _digest(header)
    text = json.dumps(header).encode().ljust(size)
    with open(tmp, "wb") as f:
        f.write(MAGIC + struct.pack("<Q", size) + text)
        for name, a in arrays.items():
            pad = header["columns"][name][1] - f.tell()
            f.write(b"\0" * pad)
            f.write(a.tobytes())
