"""CLI verbs. Each module: ``add_parser(subparsers)`` registers the verb and sets ``func=run``."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path


class CLIError(Exception):
    """Bad usage or bad input: printed as one line, exit code 2."""


@dataclass(frozen=True)
class Span:
    """A ``FILE[@START-END]`` argument: a whole file or a span of it (seconds from file start)."""

    path: Path
    start_s: float | None = None
    end_s: float | None = None


_SPAN_RE = re.compile(r"^(?P<path>.+?)@(?P<start>\d+(?:\.\d*)?)-(?P<end>\d+(?:\.\d*)?)$")


def parse_span(text: str) -> Span:
    """Parse ``FILE``, or ``FILE@START-END`` with times in seconds; raise CLIError if malformed."""
    m = _SPAN_RE.match(text)
    if m is None:
        if "@" in text and not Path(text).exists():
            raise CLIError(f"bad span {text!r}: expected FILE@START-END, e.g. rec.wav@12.5-17.5")
        return Span(Path(text))
    start, end = float(m["start"]), float(m["end"])
    if end <= start:
        raise CLIError(f"bad span {text!r}: END must be greater than START")
    return Span(Path(m["path"]), start, end)


def require_db(path: str | Path, must_exist: bool = True) -> Path:
    """Check a ``--db`` argument; an existing database folder has a ``chorus.json``."""
    p = Path(path)
    if must_exist and not (p / "chorus.json").exists():
        raise CLIError(f"no Chorus database at {p} (create one with `chorus embed DIR --db {p}`)")
    return p


def check_out_file(path: str | Path | None) -> Path | None:
    """An ``--out`` file argument, refused up front when it names a folder (before any work)."""
    if path is None:
        return None
    p = Path(path)
    if p.is_dir():
        raise CLIError(f"--out {p} is a folder: give a file name")
    return p
