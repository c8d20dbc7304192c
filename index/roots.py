"""Audio roots that move: an external drive mounted under a new name, an archive copied elsewhere.

Recordings are stored relative to their audio root, so a moved archive needs only its root
re-pointed (``chorus roots --move OLD NEW``); its windows, labels and probes stay as they are.
:func:`moved_from` recognises a moved archive by its files (same relative paths and sizes under
a root that is gone), so that ``chorus embed`` says so instead of embedding it a second time.

``chorus.json`` decides what the explorer reads (its roots), so a database folder copied from
someone else is a list of places on this machine it will read: :func:`opened_elsewhere` gives
the line that names them when a database is opened away from where it was last written.
"""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path, PureWindowsPath
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

SAMPLE_FILES = 50  # files compared when deciding whether a folder holds a root's recordings
SAME_SHARE = 0.8  # share of compared files that must match (path and size)


@functools.lru_cache(maxsize=1 << 16)
def abs_path(root: str, path: str) -> str:
    """A recording's absolute path: its audio root joined with its path relative to it
    (cached: searches name the same recordings again and again)."""
    return str(Path(root) / path)


def recording_paths(db) -> tuple[np.ndarray, list, list]:
    """(recording ids (n,) sorted, their audio roots (n,), their paths relative to them (n,)),
    from :meth:`index.db.Database.recordings_lookup` (no DataFrame, no Lance where it is kept)."""
    rec = db.recordings_lookup()
    every = np.arange(len(rec["recording_id"]))
    return rec["recording_id"], rec["audio_root"][every].tolist(), rec["path"][every].tolist()


def match_recording(ids, roots, paths, file: str | os.PathLike) -> int:
    """The id of the recording ``file`` names, among recordings with ids (n,), audio roots (n,)
    and paths relative to them (n,): an absolute path under an audio root, a path relative to a
    root (or to the current folder), or, failing those, a unique file name (e.g. a Raven
    ``Begin File`` written on another machine). KeyError if none or more than one matches."""
    text = str(file)
    full = [abs_path(r, p) for r, p in zip(roots, paths, strict=True)]
    candidates = [Path(text).expanduser()]
    if not candidates[0].is_absolute():
        candidates.append(Path.cwd() / text)
    normed = [os.path.normpath(p) for p in full]
    for cand in candidates:
        want = os.path.normpath(cand.resolve() if cand.exists() else cand)
        hit = [i for i, p in enumerate(normed) if p == want]
        if len(hit) == 1:
            return int(ids[hit[0]])
    rel = text.replace("\\", "/")
    while rel.startswith("./"):
        rel = rel[2:]
    ends = "/" + rel
    hit = [
        i for i, (p, f) in enumerate(zip(paths, full, strict=True)) if p == rel or f.endswith(ends)
    ]
    if not hit:  # last resort: the bare file name, also of Windows paths
        name = PureWindowsPath(text).name
        hit = [i for i, p in enumerate(paths) if p.rsplit("/", 1)[-1] == name]
    if len(hit) == 1:
        return int(ids[hit[0]])
    if not hit:
        raise KeyError(f"no recording in the database matches {text!r}")
    shown = ", ".join(paths[i] for i in hit[:3])
    raise KeyError(f"{text!r} matches {len(hit)} recordings ({shown}...): give more of the path")


def root_summary(db) -> pd.DataFrame:
    """One row per audio root: root, recordings, present (the folder exists)."""
    import pandas as pd

    recs = db.recordings()
    roots = list(dict.fromkeys([*db.meta.get("audio_roots", []), *recs["audio_root"].unique()]))
    counts = recs.groupby("audio_root").size()
    return pd.DataFrame(
        {
            "root": roots,
            "recordings": [int(counts.get(r, 0)) for r in roots],
            "present": [Path(r).is_dir() for r in roots],
        }
    )


def holds_recordings_of(db, folder: str | os.PathLike, root: str) -> bool:
    """Does ``folder`` hold ``root``'s recordings (a sample: same relative paths and sizes)?"""
    import pandas as pd

    recs = db.recordings()
    recs = recs[recs["audio_root"] == root]
    if recs.empty:
        return False
    sample = recs.iloc[:: max(1, len(recs) // SAMPLE_FILES)].head(SAMPLE_FILES)
    same = 0
    for rel, size in zip(sample["path"], sample["size"], strict=True):
        path = Path(folder) / rel
        same += path.is_file() and (pd.isna(size) or path.stat().st_size == int(size))
    return same >= SAME_SHARE * len(sample)


def moved_from(db, folder: str | os.PathLike) -> str | None:
    """The registered root that is gone and whose recordings ``folder`` holds, else None."""
    new = str(Path(folder).expanduser().resolve())
    for row in root_summary(db).itertuples():
        if row.root != new and not row.present and row.recordings:
            if holds_recordings_of(db, new, row.root):
                return row.root
    return None


def move_root(db, old: str, new: str | os.PathLike) -> int:
    """Point the recordings of root ``old`` at folder ``new``; return how many moved.

    Raises ValueError when ``old`` is not a root, ``new`` is not a folder holding its files, or
    ``new`` already is a root with recordings (merging two roots is not a move).
    """
    new = str(Path(new).expanduser().resolve())
    roots = root_summary(db).set_index("root")
    old = old if old in roots.index else str(Path(old).expanduser().resolve())
    if old not in roots.index:
        raise ValueError(f"{old} is not an audio root of this database ({', '.join(roots.index)})")
    if not Path(new).is_dir():
        raise ValueError(f"{new} is not a folder")
    if new in roots.index and roots.loc[new, "recordings"]:
        raise ValueError(f"{new} already is an audio root with recordings")
    if not holds_recordings_of(db, new, old):
        raise ValueError(f"{new} does not hold the recordings of {old} (paths and sizes differ)")
    quoted = old.replace("'", "''")
    n = int(roots.loc[old, "recordings"])
    db.recordings_table().update(where=f"audio_root = '{quoted}'", values={"audio_root": new})

    def change(meta: dict) -> None:
        listed = meta.setdefault("audio_roots", [])
        meta["audio_roots"] = list(dict.fromkeys(new if r == old else r for r in listed))
        if new not in meta["audio_roots"]:
            meta["audio_roots"].append(new)

    db.update_meta(change)
    return n


def opened_elsewhere(db_path: str | os.PathLike) -> str | None:
    """One line naming the places a database reads when it is opened from a folder other than
    the one its writers last ran in (``written_at`` in ``chorus.json``); None otherwise, and for
    a folder that is not a readable database (the verb itself says what is wrong).

    Read from ``chorus.json`` alone: opening a database to warn about it must not change it.
    """
    here = Path(db_path).expanduser().resolve()
    try:
        meta = json.loads((here / "chorus.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    written = meta.get("written_at") if isinstance(meta, dict) else None
    if not isinstance(written, str) or written == str(here):
        return None
    roots = [str(r) for r in meta.get("audio_roots", [])] or ["none"]
    line = f"{here} was last written at {written}; it reads audio under {', '.join(roots)}"
    links = [str(t) for t in meta.get("link_targets", [])]
    if links:
        line += f" and, through links, {', '.join(links)}"
    return line
