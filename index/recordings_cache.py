"""The recording columns a search result carries, kept beside the recordings table.

A search names each hit's recording (path, root, site, start time). Reading them from the
recordings table means importing Lance, and with it pandas: most of a cold search's memory and
a third of its time. :meth:`index.db.Database.recordings_lookup` writes what it read to
``cache/recordings_lookup.bin`` (the format of :mod:`index.snapshot_cache`), with the stamp of
the table's ``_versions`` folder read before its version; while the stamp holds, a cold search
maps the file instead. Strings are kept as UTF-8 bytes with offsets and are decoded for the
hits only.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa

from .rows import utf8
from .snapshot_cache import read_columns, write_columns

FILE = "recordings_lookup.bin"
STRINGS = ("audio_root", "path", "site")
COLUMNS = ("recording_id", *STRINGS, "start_time")  # what a lookup reads of the table
log = logging.getLogger(__name__)


class Strings:
    """A string column (n,) over mapped bytes, indexed like an object array: ``col[at]``.

    Parameters
    ----------
    data : (b,) uint8, the UTF-8 bytes of every value, one after another.
    offsets : (n + 1,) int64, where each value starts in ``data`` (and the last ends).
    valid : (n,) bool, False for a null.
    """

    dtype = np.dtype(object)

    def __init__(self, data: np.ndarray, offsets: np.ndarray, valid: np.ndarray):
        if len(offsets) != len(valid) + 1 or (len(offsets) and offsets[-1] > len(data)):
            raise ValueError("string offsets do not fit their bytes")
        self.data, self.offsets, self.valid = data, offsets, valid

    @classmethod
    def encode(cls, values) -> Strings:
        """From strings or None (n,)."""
        data, offsets, valid = utf8(values)
        return cls(np.frombuffer(data, np.uint8), offsets, valid)

    def __len__(self) -> int:
        return len(self.valid)

    def __getitem__(self, at) -> np.ndarray:
        at = np.asarray(at, np.int64)  # (m,)
        out = np.empty(at.shape, object)
        for i, j in enumerate(at.ravel()):
            if self.valid[j]:
                out.flat[i] = self.data[self.offsets[j] : self.offsets[j + 1]].tobytes().decode()
        return out


def lookup_of(table) -> dict:
    """The lookup (recording_id, start_time datetime64[us] and :data:`STRINGS`, each (n,),
    sorted by recording_id) of a ``pyarrow.Table`` of recordings."""
    order = np.argsort(table["recording_id"].to_numpy(), kind="stable")
    lookup = {c: table[c].to_numpy(zero_copy_only=False)[order] for c in COLUMNS[:-1]}
    start = table["start_time"].cast(pa.timestamp("us")).to_numpy(zero_copy_only=False)
    lookup["start_time"] = start.astype("datetime64[us]")[order]
    return lookup


def save(folder: Path, stamp: tuple[int, int], lookup: dict) -> None:
    """Keep ``lookup`` (recording_id, start_time datetime64[us] and :data:`STRINGS`, each (n,))
    for ``stamp``; a read-only or full folder is left as it is."""
    arrays = {
        "recording_id": np.asarray(lookup["recording_id"], "<i8"),
        "start_time": np.asarray(lookup["start_time"], "datetime64[us]").view("<i8"),
    }
    for name in STRINGS:
        col = Strings.encode(lookup[name])
        arrays.update({f"{name}.data": col.data, f"{name}.offsets": col.offsets})
        arrays[f"{name}.valid"] = col.valid
    write_columns(Path(folder) / FILE, arrays, {"stamp": list(stamp)})


def load(folder: Path, stamp: tuple[int, int]) -> dict | None:
    """The lookup kept for ``stamp``, columns over a read-only mapping, or None."""
    path = Path(folder) / FILE
    try:
        header, cols = read_columns(path)
        if header.get("stamp") != list(stamp):
            return None
        ids = cols["recording_id"]
        lookup = {"recording_id": ids, "start_time": cols["start_time"].view("datetime64[us]")}
        for name in STRINGS:
            data, offsets = cols[f"{name}.data"], cols[f"{name}.offsets"]
            lookup[name] = Strings(data, offsets, cols[f"{name}.valid"])
        if any(len(c) != len(ids) for c in lookup.values()) or ids.dtype != np.dtype("<i8"):
            raise ValueError("columns of different lengths or types")
        if len(ids) > 1 and not bool((ids[1:] > ids[:-1]).all()):  # searched by bisection
            raise ValueError("recording ids out of order")
        return lookup
    except OSError:  # none kept
        return None
    except (KeyError, TypeError, ValueError) as exc:
        log.warning("ignoring %s: %s", path, exc)
        return None
