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

A process that opened a version through Lance and checked its file (a sample of rows against
the table, the layout against ``take``) records it in ``current_<model>.json`` with the stamp of
the table's ``_versions`` folder (see :meth:`index.db.Database.dataset`): every commit adds a
manifest there and moves the folder's time. While the stamp is the same, a cold search opens the
snapshot from the file without importing Lance (and the pandas it imports): 80 MB and 0.2 s.
"""

from __future__ import annotations

import hashlib
import json
import logging
import mmap
import re
import struct
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .files import atomic_write, atomic_write_json

# every table with a window: however small, the file spares a cold search importing Lance
MIN_ROWS = 1
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


class Kept(NamedTuple):
    """A snapshot read from its file: columns over a read-only mapping, the vector layout or
    None, and the file."""

    columns: dict[str, np.ndarray]
    layout: dict | None
    path: Path


class Current(NamedTuple):
    """What ``current_<model>.json`` says of the table's latest version (see the module)."""

    version: int
    dim: int
    kept: Kept


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


def _is_kept_file(model: str, name: str) -> bool:
    """Is ``name`` a snapshot file of ``model`` (and no path)?"""
    return re.fullmatch(rf"snapshot_{re.escape(model)}_[0-9a-f]{{40}}\.bin", name) is not None


def _pointer(folder: Path, model: str) -> Path:
    return Path(folder) / f"current_{model}.json"


def load(folder: Path, model: str, dataset) -> Kept | None:
    """``dataset``'s version read from its file, or None where no valid file is kept."""
    key, n = manifest(dataset)
    path = _path(folder, model, key)
    try:
        header, columns = read_columns(path)
        layout = _snapshot_columns(header, columns, n)
        _check_sample(columns, dataset)
    except OSError:  # missing
        return None
    except ValueError as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None
    return Kept(columns, layout, path)


def _snapshot_columns(header: dict, columns: dict[str, np.ndarray], n: int) -> dict | None:
    """The layout; ValueError unless ``columns`` are the expected ones, of ``n`` rows each."""
    if set(columns) != set(COLUMNS):
        raise ValueError("other columns than expected")
    for name, a in columns.items():
        if a.dtype.str != COLUMNS[name] or len(a) != n:
            raise ValueError(f"column {name!r} does not fit the table")
    return header.get("layout")


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


def save(folder: Path, model: str, dataset, columns: dict[str, np.ndarray], layout) -> Path | None:
    """Write the columns (each (n,)) and vector layout of ``dataset``'s version; remove the
    model's other files. Returns the file, or None where the folder is read-only or full."""
    path = _path(folder, model, manifest(dataset)[0])
    arrays = {name: np.ascontiguousarray(columns[name], COLUMNS[name]) for name in COLUMNS}
    if not write_columns(path, arrays, {"layout": layout}):
        return None
    for old in path.parent.iterdir():
        if _is_kept_file(model, old.name) and old != path:
            old.unlink(missing_ok=True)
    return path


def remember(
    folder: Path, model: str, stamp: tuple[int, int], version: int, dim: int, kept: Path
) -> None:
    """Record that while the ``_versions`` folder has ``stamp``, the table's latest version is
    ``version`` and ``kept`` (checked against it) holds its snapshot. ``stamp`` must have been
    read before the version was, and be settled (see :meth:`index.db.Database.dataset`)."""
    note = {
        "stamp": list(stamp),
        "version": int(version),
        "dim": int(dim),
        "file": kept.name,
    }
    path = _pointer(folder, model)
    try:
        if path.exists() and json.loads(path.read_text()) == note:
            return
        atomic_write_json(path, note)
    except (OSError, ValueError) as exc:
        log.info("snapshot pointer not written (%s)", exc)


def current(folder: Path, model: str, stamp: tuple[int, int]) -> Current | None:
    """The latest version's snapshot from its file, where the pointer was written at ``stamp``;
    None otherwise (no pointer, another stamp, a damaged or missing file)."""
    try:
        note = json.loads(_pointer(folder, model).read_text())
        if note.get("stamp") != list(stamp):
            return None
        name = str(note["file"])  # only a snapshot file of this model, in this folder
        if not _is_kept_file(model, name):
            raise ValueError("the pointer names another file")
        path = Path(folder) / name
        header, columns = read_columns(path)
        layout = _snapshot_columns(header, columns, len(columns.get("window_id", ())))
        return Current(int(note["version"]), int(note["dim"]), Kept(columns, layout, path))
    except OSError:  # no pointer, or its file was removed
        return None
    except (ValueError, KeyError, TypeError) as exc:
        log.warning("ignoring the snapshot pointer of %s: %s", model, exc)
        return None


def read_columns(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    """(header, columns over a read-only mapping) of a file written by :func:`write_columns`;
    OSError where it cannot be read, ValueError where it is damaged."""
    with open(path, "rb") as f:
        try:
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError as exc:  # empty
            raise ValueError("an empty file") from exc
    try:
        return _parse(mapped)
    except (KeyError, TypeError, json.JSONDecodeError, UnicodeDecodeError, struct.error) as exc:
        raise ValueError(f"not a valid cache file ({exc})") from exc


def _parse(mapped: mmap.mmap) -> tuple[dict, dict[str, np.ndarray]]:
    if mapped[: len(MAGIC)] != MAGIC:
        raise ValueError("not a snapshot cache file")
    (size,) = struct.unpack_from("<Q", mapped, len(MAGIC))
    start = len(MAGIC) + 8
    header = json.loads(bytes(mapped[start : start + size]))
    if header.pop("digest", None) != _digest(header):
        raise ValueError("its header does not match its checksum")
    columns = {}
    for name, (dtype, offset, count) in header["columns"].items():
        if np.dtype(dtype).hasobject:  # never built from a file's bytes
            raise ValueError(f"column {name!r} holds objects")
        if offset < start + size or count < 0:
            raise ValueError(f"column {name!r} overlaps the header")
        if offset + count * np.dtype(dtype).itemsize > len(mapped):
            raise ValueError("the file is shorter than its header says")
        columns[name] = np.frombuffer(mapped, dtype, count, offset)  # read-only, not copied
    return header, columns


def write_columns(path: Path, arrays: dict[str, np.ndarray], extra: dict) -> bool:
    """Write 1-d ``arrays`` and the JSON-able ``extra`` header entries to ``path`` atomically;
    False (and nothing written) where the folder is read-only or full."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda tmp: _write(tmp, arrays, extra))
    except OSError as exc:
        log.info("cache file not written (%s)", exc)
        return False
    return True


def _write(tmp: Path, arrays: dict[str, np.ndarray], extra: dict) -> None:
    header: dict = {"columns": {}, **extra}
    # offsets depend on the header's length: size it with room for the offsets' digits
    probe = {n: [a.dtype.str, 10**15, 10**15] for n, a in arrays.items()}
    size = len(json.dumps({**header, "columns": probe}).encode()) + 96  # and digest
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
            f.write(np.ascontiguousarray(a).tobytes())
