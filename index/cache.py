"""Derived results cached in the database's ``cache/`` folder: projections and clusterings.

A cached result is named by what it was computed from (``key``): the kind, the model, the versions
of the embeddings *and* recordings tables (a result carries recording columns such as site and
hour), and a hash of the parameters. Files are written with ``files.atomic_write`` (a temporary name,
then a rename), so a reader in another process never opens a half-written one; when a new version is written, the
files of older versions of the same computation are removed, so the folder does not grow with
every ingest commit. Nothing here is unpickled: a database folder may come from someone else.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from .schema import CACHE_DIR


def cache_dir(db) -> Path:
    """The database's cache folder (created on first use)."""
    path = Path(db.path) / CACHE_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def key(db, kind: str, model: str, params: dict) -> str:
    """File stem for a cached result of ``kind`` over ``model``'s windows and the recordings."""
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:12]
    return f"{current_prefix(db, kind, model)}_{digest}"


def current_prefix(db, kind: str, model: str) -> str:
    """The stem of every cached ``kind`` result of the current table versions, up to the
    parameters' hash: what lists the results that are still valid."""
    return "{}_{}_v{}r{}".format(kind, model, *db.data_versions(model))


def prune(folder: Path, stem: str) -> None:
    """Remove the files of other versions of the computation ``stem`` names."""
    rest, _, digest = stem.rpartition("_")
    base = rest.rpartition("_")[0]  # kind and model, without the versions
    same = re.compile(re.escape(base) + r"_v\d+r\d+_" + re.escape(digest) + r"\..+")
    for old in folder.iterdir():
        if same.fullmatch(old.name) and not old.name.startswith(stem + "."):
            old.unlink(missing_ok=True)
