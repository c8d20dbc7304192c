"""Listing an archive's audio files with its symbolic links resolved.

An audio root is what a database declares it reads (``chorus.json``), so a link inside it must not
widen that: a link whose real path leaves the root is refused (listed with the reason, never
opened) unless the run asks to follow links (``chorus embed --follow-links``); then what it reaches
is recorded beside the roots (``link_targets`` in ``chorus.json``) so that the explorer may read it
and the database says what it reads. Dangling links and link loops are refused with their reason
too, instead of vanishing from the run.

Folder links are followed only with ``follow_links``, and only where they leave the root (a link
into the root's own tree would list its files twice); a folder reached twice is listed once.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field
from pathlib import Path

from explorer.recordings import AUDIO_EXTENSIONS, NOT_AUDIO

OUTSIDE_FILE = "a link to a file outside the audio root: not read (--follow-links reads it)"
OUTSIDE_FOLDER = (
    "a link to a folder outside the audio root: not followed (--follow-links follows it)"
)
DANGLING = "a dangling link: what it points at is gone"
LOOP = "a link loop: it leads back to itself"
FOLDER_LOOP = "a link loop: it points at a folder above it"


@dataclass
class Listing:
    """What :func:`list_archive` found under a root.

    Attributes
    ----------
    files : audio files to embed, as found under the root (a followed link keeps its own path).
    refused : (path under the root, reason) of links that are not read.
    link_targets : real paths outside the root that followed links reach (files or folders).
    """

    files: list[Path] = field(default_factory=list)
    refused: list[tuple[Path, str]] = field(default_factory=list)
    link_targets: list[str] = field(default_factory=list)


def list_archive(root: str | os.PathLike, follow_links: bool = False) -> Listing:
    """Audio files under ``root`` (recursive, sorted; hidden names skipped), links resolved.

    Parameters
    ----------
    root : the audio root.
    follow_links : read what links outside the root point at (files, and folders recursively).

    Returns
    -------
    Listing
    """
    root = Path(root)
    real_root = Path(os.path.realpath(root))
    out = Listing()
    seen_dirs = {str(real_root)}
    for top, dirs, names in os.walk(root, followlinks=follow_links):
        here = Path(top)
        real_here = Path(os.path.realpath(here))
        dirs[:] = [d for d in sorted(dirs) if not d.startswith(".")]
        keep = []
        for d in dirs:
            path = here / d
            if not path.is_symlink():
                keep.append(d)
                continue
            reason, real = _folder_link(path, real_root, real_here, follow_links, seen_dirs)
            if reason is not None:
                out.refused.append((path, reason))
            elif real is not None:
                seen_dirs.add(str(real))
                out.link_targets.append(str(real))
                keep.append(d)
        dirs[:] = keep
        for name in sorted(names):
            if not name.startswith("."):
                _add_file(here / name, real_here / name, real_root, follow_links, out)
    out.files.sort()
    out.refused.sort()
    return out


def _folder_link(path: Path, real_root: Path, real_here: Path, follow: bool, seen: set):
    """(reason it is refused or None, real folder to follow or None) for a folder link."""
    real = Path(os.path.realpath(path))
    if real.is_relative_to(real_root):
        return None, None  # its files are listed where they really are
    if not follow:
        return OUTSIDE_FOLDER, None
    if real_here.is_relative_to(real):  # a folder above this one (``/`` included)
        return FOLDER_LOOP, None
    return None, (None if str(real) in seen else real)


def _add_file(path: Path, real: Path, real_root: Path, follow: bool, out: Listing) -> None:
    """Put one name found in the walk into ``out.files`` or ``out.refused`` (or neither).

    ``real`` is where ``path`` is once its folder is resolved: its real path unless it is a link.
    """
    ext = path.suffix.lower()
    if ext in NOT_AUDIO:
        return
    if path.is_symlink():  # only links pay for a resolution (a stat per path component)
        try:
            real = Path(os.path.realpath(path, strict=True))
        except OSError as err:  # strict: a loop or a missing target raises instead of guessing
            out.refused.append((path, LOOP if err.errno == errno.ELOOP else DANGLING))
            return
    if not real.is_file():
        return
    if not real.is_relative_to(real_root):
        if not follow:
            out.refused.append((path, OUTSIDE_FILE))
            return
        if path.is_symlink():  # a file link (files in a followed folder: the folder is listed)
            out.link_targets.append(str(real))
    if ext in AUDIO_EXTENSIONS or _sniffs_as_audio(path):
        out.files.append(path)


def _sniffs_as_audio(path: Path) -> bool:
    from embedder import audio

    try:
        audio.probe(path, exact=False)  # opened, not decoded whole
    except audio.AudioError:
        return False
    return True
