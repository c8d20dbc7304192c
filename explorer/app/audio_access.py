"""Reading audio for the explorer: only files under the database's registered audio roots.

Paths come from the database (or from a user's pick among its recordings), but the app is a web
server and a database folder may come from someone else: a path is resolved (symlinks, ``..``)
and its real path must fall inside one of the places ``chorus.json`` declares (its audio roots,
and the ``link_targets`` an embed with ``--follow-links`` read) before any byte of it is read. A
planted row ``../../etc/passwd``, or a link in a root pointing at ``/``, is refused; messages
name the path, never its bytes.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

MAX_CLIP_S = 60.0  # longest span the app reads for one card or query (s)
MAX_UPLOAD_S = 120.0  # longest uploaded query clip accepted (s)
CONTEXT_S = 0.0  # extra audio around a window when listening (s)


class AudioAccessError(Exception):
    """A path outside the registered audio roots, or a span the app refuses to read."""


def audio_roots(meta: dict) -> list[Path]:
    """The places a database reads, resolved: the audio roots of its ``chorus.json``, and the
    link targets (folders or files outside them) an embed with ``--follow-links`` read."""
    places = [*meta.get("audio_roots", []), *meta.get("link_targets", [])]
    return [Path(os.path.realpath(r)) for r in places]


def safe_path(path: str | Path, roots: list[Path]) -> Path:
    """Check that ``path`` lies under one of ``roots``, as written and once resolved; raise
    AudioAccessError if not.

    As written, with ``..`` folded away: no ``..`` climbs out of a root. Resolved (links
    followed): a link inside a root leads only where the database declares it reads, so a link
    to ``/`` planted in an archive folder opens nothing.
    """
    p = Path(os.path.abspath(path))  # folds "..", follows no link
    if not _inside(p, roots):
        raise AudioAccessError(
            f"{path} is not under the database's audio roots; refusing to read it"
        )
    real = Path(os.path.realpath(p))
    if not _inside(real, roots):
        raise AudioAccessError(
            f"{path} is a link leading out of the database's audio roots; refusing to read it"
        )
    if not real.is_file():
        raise AudioAccessError(
            f"audio file {p} is missing (moved or deleted since it was embedded?)"
        )
    return p


def _inside(path: Path, places: list[Path]) -> bool:
    return any(path == place or path.is_relative_to(place) for place in places)


def file_stamp(path: str | Path) -> tuple[int, int] | None:
    """(size, mtime in ns) of a file, None if it is gone: part of the key of cached clips."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def read_span(
    path: str | Path,
    roots: list[Path],
    start_s: float,
    end_s: float,
    sample_rate: int,
    channel: int = -1,
) -> np.ndarray:
    """Audio of one span of a registered file, ``(n,)`` float32 at ``sample_rate``.

    ``channel`` follows the database numbering: -1 = mix of all channels, c >= 0 = channel c.
    """
    from embedder.audio import AudioError, load  # lazy: `index`-only pages skip the decoder

    if end_s - start_s > MAX_CLIP_S:
        raise AudioAccessError(
            f"span {start_s:.1f}-{end_s:.1f} s is longer than {MAX_CLIP_S:.0f} s"
        )
    if end_s <= start_s or start_s < 0:
        raise AudioAccessError(f"bad span {start_s}-{end_s} s")
    p = safe_path(path, roots)
    try:  # a file damaged or replaced since it was embedded: a message on its card, no crash
        if channel < 0:
            return load(p, sample_rate, channels="mix", start_s=start_s, end_s=end_s)[0]  # (n,)
        audio = load(p, sample_rate, channels="all", start_s=start_s, end_s=end_s)  # (C, n)
    except AudioError as err:
        raise AudioAccessError(str(err)) from None
    return audio[min(channel, audio.shape[0] - 1)]
