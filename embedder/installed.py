"""Where ``chorus models import`` installs weights: one folder per model under the user's data
folder, a checkpoint and its manifest. Torch-free, so that finding weights costs no imports."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

CHECKPOINT_FILE = "weights.pt"  # file name of an installed import inside models/<name>/
MANIFEST_FILE = "manifest.json"


def data_dir() -> Path:
    """Chorus's per-user data folder: ``$CHORUS_HOME`` or the platform default."""
    if os.environ.get("CHORUS_HOME"):
        return Path(os.environ["CHORUS_HOME"]).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "chorus"


def models_dir() -> Path:
    """Folder holding one sub-folder per installed model."""
    return data_dir() / "models"


def installed_weights(name: str, models_root: str | Path | None = None) -> Path | None:
    """Path of the installed checkpoint of model ``name``, or None when nothing is installed."""
    root = Path(models_root) if models_root is not None else models_dir()
    p = root / name / CHECKPOINT_FILE
    return p if p.is_file() else None


def list_installed(models_root: str | Path | None = None) -> list[dict]:
    """One manifest dict per installed model (name, path, source, sha256, imported_at, ...)."""
    root = Path(models_root) if models_root is not None else models_dir()
    out = []
    for d in sorted(root.glob("*")) if root.is_dir() else []:
        if not (d / CHECKPOINT_FILE).is_file():
            continue
        try:
            manifest = json.loads((d / MANIFEST_FILE).read_text())
        except (OSError, json.JSONDecodeError):
            manifest = {"name": d.name, "path": str(d / CHECKPOINT_FILE)}
        manifest.pop("config", None)
        out.append(manifest)
    return out
