"""Finding recordings in an archive and reading what their paths say: site and start time."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path

# Extensions taken without a look inside; anything else (but the obvious non-audio below) is sniffed.
AUDIO_EXTENSIONS = {
    ".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".aifc",
    ".au", ".snd", ".caf", ".w64", ".rf64", ".bwf", ".m4a", ".aac", ".wma", ".webm", ".mka",
}  # fmt: skip
NOT_AUDIO = {
    ".txt", ".csv", ".tsv", ".json", ".md", ".pdf", ".jpg", ".jpeg", ".png", ".xml", ".log",
    ".html", ".py", ".zip", ".gz", ".db", ".lance", ".parquet", ".selections",
}  # fmt: skip

# File-name time stamps, most specific first. AudioMoth: 20240610_043000.WAV; Song Meter:
# SMM01234_20240610_043000.wav (the prefix is the recorder); ISO-like: 2024-06-10T04-30-00, 20240610T043000.
_STAMPS = [
    re.compile(r"(?P<Y>\d{4})(?P<m>\d{2})(?P<d>\d{2})[_T-](?P<H>\d{2})(?P<M>\d{2})(?P<S>\d{2})"),
    re.compile(
        r"(?P<Y>\d{4})-(?P<m>\d{2})-(?P<d>\d{2})[T _](?P<H>\d{2})[:\-.]?(?P<M>\d{2})[:\-.]?(?P<S>\d{2})"
    ),
]


def discover(root: str | Path) -> list[Path]:
    """Audio files under ``root`` (recursive, sorted): known extensions, plus unknown ones whose content
    libsndfile recognises. Hidden files and folders are skipped."""
    from embedder import audio

    found = []
    for path in sorted(Path(root).rglob("*")):
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or not path.is_file():
            continue
        ext = path.suffix.lower()
        if ext in AUDIO_EXTENSIONS:
            found.append(path)
        elif ext not in NOT_AUDIO:
            try:
                audio.probe(path, exact=False)  # opened, not decoded whole
            except audio.AudioError:
                continue
            found.append(path)
    return found


def parse_start_time(name: str) -> datetime | None:
    """Recording start from a file name (AudioMoth, Song Meter, ISO-like stamps), else None."""
    for pattern in _STAMPS:
        for m in pattern.finditer(name):
            try:
                return datetime(
                    int(m["Y"]), int(m["m"]), int(m["d"]), int(m["H"]), int(m["M"]), int(m["S"])
                )
            except ValueError:  # 8 digits that are not a date, e.g. a serial number
                continue
    return None


# AudioMoth firmware writes the start into the WAV comment: "Recorded at 04:30:00 10/06/2024 (UTC) ...".
_AUDIOMOTH_COMMENT = re.compile(
    r"Recorded at (?P<H>\d{2}):(?P<M>\d{2}):(?P<S>\d{2}) (?P<d>\d{2})/(?P<m>\d{2})/(?P<Y>\d{4})"
)


def start_time_from_metadata(path: str | Path) -> datetime | None:
    """Recording start from the file's tags (AudioMoth comment, or an ISO date tag), else None."""
    import soundfile as sf

    from embedder.decode import c_stderr_muted

    try:
        with open(path, "rb") as fh, c_stderr_muted(), sf.SoundFile(fh) as snd:
            comment, date = snd.comment or "", snd.date or ""
    except (OSError, RuntimeError, sf.SoundFileError):
        return None
    m = _AUDIOMOTH_COMMENT.search(comment)
    if m is not None:
        try:
            return datetime(*(int(m[k]) for k in "YmdHMS"))
        except ValueError:
            pass
    try:
        stamp = datetime.fromisoformat(date.strip())
    except ValueError:
        return None
    return stamp.replace(tzinfo=None) if stamp.tzinfo is None else stamp


def recording_start(path: str | Path) -> datetime | None:
    """Start time from the file name, else from the file's metadata, else None."""
    return parse_start_time(Path(path).name) or start_time_from_metadata(path)


def check_site_rule(rule: str | None) -> None:
    """ValueError naming what is wrong with a ``parse_site`` rule (checked once, up front)."""
    if rule is None:
        return
    if rule.startswith("dir:"):
        try:
            int(rule[4:])
        except ValueError:
            raise ValueError(f"bad site rule {rule!r}: expected dir:N") from None
        return
    try:
        pattern = re.compile(rule)
    except re.error as err:
        raise ValueError(f"bad site regex {rule!r}: {err}") from None
    if "site" not in pattern.groupindex:
        raise ValueError(f"site regex {rule!r} needs a named group (?P<site>...)")


def parse_site(rel_path: str, rule: str | None = None) -> str | None:
    """A recording's site from its path relative to the audio root.

    ``rule``: ``None`` → the first folder of the path (None for files at the root); ``"dir:N"`` → path
    component N (negative counts from the file: ``dir:-2`` is the parent folder); anything else is a
    regular expression with a named group ``site`` searched in the relative path.
    """
    check_site_rule(rule)
    parts = Path(rel_path).parts
    if rule is None:
        return parts[0] if len(parts) > 1 else None
    if rule.startswith("dir:"):
        i, dirs = int(rule[4:]), parts[:-1]
        return dirs[i] if -len(dirs) - 1 < i < len(dirs) and dirs else None
    m = re.search(rule, rel_path)
    return None if m is None else m["site"]
