"""Files that readers in other processes see whole or not at all."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: Path, save: Callable[[Path], None]) -> None:
    """``save(tmp)`` then rename onto ``path``: readers see the old file, the new one, or none.

    The temporary name starts with a dot, so no pattern matching the files of a folder (index
    generations, cached results) ever takes it for one of them.
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: dict) -> None:
    """Write JSON durably (fsync) and atomically, so a reader never sees a half-written file."""

    def save(tmp: Path) -> None:
        with open(tmp, "w") as f:
            json.dump(data, f, indent=2, sort_keys=True, default=str)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, save)
