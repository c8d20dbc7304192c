"""The explorer's remembered choices of one database: a small JSON beside its tables.

A new browser session of ``chorus explore`` opens with the last choices made on this database
(the map's projection and colouring, the last clustering of each model), so the state lives in the
database folder, not in a browser. It is a convenience, never a source of truth: a missing,
damaged or foreign file reads as "nothing remembered", and values are checked by whoever uses them
(a database folder may come from someone else). Writes are atomic (``files.atomic_write_json``), so
two sessions saving at once leave one of their files whole; the last write wins.

Layout::

    {"sections": {"map": {"map_method": "umap", ...}, "clusters": {"perch": {...}}}}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .files import atomic_write_json

UI_STATE_FILE = "ui_state.json"
MAX_BYTES = 256 * 1024  # a remembered-choices file is tiny; anything larger is not ours


def state_path(db) -> Path:
    """Where the remembered choices of ``db`` (an open database or its folder) are kept."""
    return Path(getattr(db, "path", db)) / UI_STATE_FILE


def load(db) -> dict[str, dict[str, Any]]:
    """Every remembered section: ``{section: {name: value}}``; empty when there is none.

    A file that cannot be read or parsed, or that does not have the layout above, reads as
    empty (the explorer then starts from its defaults) rather than stopping the app.
    """
    path = state_path(db)
    try:
        if path.stat().st_size > MAX_BYTES:
            return {}
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    sections = data.get("sections") if isinstance(data, dict) else None
    if not isinstance(sections, dict):
        return {}
    return {k: v for k, v in sections.items() if isinstance(k, str) and isinstance(v, dict)}


def section(db, name: str) -> dict[str, Any]:
    """One remembered section (empty when there is none)."""
    return load(db).get(name, {})


def update(db, name: str, values: dict[str, Any]) -> bool:
    """Merge ``values`` into section ``name`` and write the file; False when nothing changed.

    Values must be JSON-serialisable (str, numbers, bools, None, lists and dicts of them).

    Raises
    ------
    TypeError
        When a value is not JSON-serialisable.
    OSError
        When the database folder cannot be written (e.g. a read-only copy).
    """
    values = json.loads(json.dumps(values))  # tuples as lists: compared as they will be read
    sections = load(db)
    old = sections.get(name, {})
    new = {**old, **values}
    if new == old:
        return False
    sections[name] = new
    atomic_write_json(state_path(db), {"sections": sections})
    return True
