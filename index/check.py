"""``chorus check``: read every table and index of a database and say what is damaged.

Each finding names the part, what is wrong with it and what repairs it: a rerun of
``chorus embed`` (windows not matching their done-marker, a damaged FAISS index), ``--repair``
(drops what cannot be read or was bit-flipped so that the next rerun re-embeds it), or nothing
Chorus can do (``chorus.json``, the recordings and labels: restore them from a backup).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .schema import EMBEDDINGS_PREFIX, LANCE_DIR, META_FILE, PROGRESS_TABLE

NORM_ATOL = 1e-2  # stored vectors are unit length (or zero); float16 rounding stays far below
READ_BATCH_ROWS = 8192
RERUN = "the next `chorus embed` re-embeds them"


@dataclass
class Finding:
    """One damaged part: ``part`` ("table recordings", "index perch"…), ``problem``, ``repair``."""

    part: str
    problem: str
    repair: str
    repaired: bool = False

    def line(self) -> str:
        done = " (repaired)" if self.repaired else ""
        return f"DAMAGED {self.part}: {self.problem}; {self.repair}{done}"


def check_database(path: str | Path, repair: bool = False) -> tuple[list[str], list[Finding]]:
    """Check the database at ``path``; return (lines about the parts found sound, findings).

    ``repair=True`` drops what a rerun then rebuilds: unreadable embeddings or progress tables,
    the done-markers of recordings with damaged vectors, damaged FAISS indexes (rebuilt here).
    """
    import index

    path = Path(path)
    problem = meta_problem(path)
    if problem:
        return [], [Finding(META_FILE, problem, "restore it from a backup (a rerun cannot)")]
    db = index.connect(path, create=False)
    ok, found = [], []
    for name in _table_folders(db):
        n, problem = _read_table(db, name)
        if problem:
            found.append(_unreadable(db, name, problem, repair))
        elif name.startswith(EMBEDDINGS_PREFIX):
            model = name[len(EMBEDDINGS_PREFIX) :]
            more = _check_windows(db, model, repair)
            state = db.index_state(model)  # verifies the index once (hashes every file)
            more += _check_index(db, model, state, repair)
            found += more
            if not more:
                ok.append(f"ok      table {name}: {n} rows; index {_index_line(state)}")
        else:
            ok.append(f"ok      table {name}: {n} rows")
    return ok, found


def meta_problem(path: Path) -> str | None:
    """What is wrong with ``chorus.json`` (None when it reads as a Chorus database's)."""
    try:
        meta = json.loads((path / META_FILE).read_text())
    except FileNotFoundError:
        return f"no {META_FILE}: not a Chorus database"
    except (OSError, UnicodeDecodeError, ValueError) as err:
        return f"{META_FILE} is unreadable ({str(err).splitlines()[0][:100]})"
    if not meta_shape_ok(meta):
        return f"{META_FILE} does not hold a Chorus database's settings"
    return None


def meta_shape_ok(meta) -> bool:
    """Does a parsed ``chorus.json`` have the shape every verb relies on?"""
    if not isinstance(meta, dict):
        return False
    lists = ("audio_roots",)
    maps = ("models", "embeddings", "next_window_id")
    return all(isinstance(meta.get(k, []), list) for k in lists) and all(
        isinstance(meta.get(k, {}), dict) for k in maps
    )


def _table_folders(db) -> list[str]:
    """Every table folder on disk, also those LanceDB cannot open any more."""
    folder = db.path / LANCE_DIR
    return sorted(p.name[: -len(".lance")] for p in folder.glob("*.lance") if p.is_dir())


def _read_table(db, name: str) -> tuple[int, str | None]:
    """Read every row of every column once; (rows, None) or (0, the first error line)."""
    try:
        table = db.open_table(name)
        n = 0
        for batch in table.search().limit(None).to_batches(READ_BATCH_ROWS):
            n += batch.num_rows
        if n != table.count_rows():
            return 0, f"{n} rows read, the table says {table.count_rows()}"
        return n, None
    except (RuntimeError, OSError, ValueError, KeyError) as err:
        return 0, str(err).splitlines()[0][:200]


def _unreadable(db, name: str, problem: str, repair: bool) -> Finding:
    if name.startswith(EMBEDDINGS_PREFIX) or name == PROGRESS_TABLE:
        finding = Finding(
            f"table {name}",
            f"cannot be read ({problem})",
            f"`chorus check --repair` drops it and {RERUN.replace('them', 'its recordings')}",
        )
        if repair:
            import shutil

            shutil.rmtree(db.path / LANCE_DIR / f"{name}.lance")
            db.forget_table(name)
            finding.repaired = True
        return finding
    return Finding(f"table {name}", f"cannot be read ({problem})", "restore it from a backup")


def _check_windows(db, model: str, repair: bool) -> list[Finding]:
    """Vectors of unit length, unique window ids, sane times, counts matching done-markers."""
    from .repair import window_counts

    snap = db.snapshot(model)
    bad_ids = []
    for ids, vec in snap.iter_vectors(READ_BATCH_ROWS):
        with np.errstate(over="ignore", invalid="ignore"):  # flipped exponents overflow
            norms = np.linalg.norm(vec, axis=1)
        bad = ~np.isfinite(norms) | ((np.abs(norms - 1) > NORM_ATOL) & (norms != 0))
        bad_ids.append(ids[bad])
    bad_ids = np.concatenate(bad_ids) if bad_ids else np.empty(0, np.int64)
    bad_times = ~np.isfinite(snap.start_s) | ~(snap.end_s > snap.start_s)
    dup_ids = np.unique(snap.window_id)[np.unique(snap.window_id, return_counts=True)[1] > 1]
    bad_rec = set(snap.recording_id[np.isin(snap.window_id, bad_ids) | bad_times].tolist())
    bad_rec |= set(snap.recording_id[np.isin(snap.window_id, dup_ids)].tolist())
    found = []
    if bad_rec:
        problem = (
            f"{len(bad_ids)} damaged vectors, {int(bad_times.sum())} windows with bad times, "
            f"{len(dup_ids)} repeated window ids in {len(bad_rec)} recordings"
        )
        f = Finding(f"table embeddings_{model}", problem, f"with `--repair`, {RERUN}")
        if repair:
            db.open_table(PROGRESS_TABLE).delete(
                f"model = '{model}' AND recording_id IN ({', '.join(map(str, sorted(bad_rec)))})"
            )
            f.repaired = True
        found.append(f)
    done = db.done_recordings(model)
    counts = window_counts(db, model).reindex(done["recording_id"].to_numpy(), fill_value=0)
    off = int((counts.to_numpy() != done["n_windows"].to_numpy()).sum())
    if off:
        found.append(
            Finding(
                f"table embeddings_{model}",
                f"{off} recordings marked embedded hold more or fewer windows than they should",
                RERUN,
            )
        )
    return found


def _check_index(db, model: str, state: dict, repair: bool) -> list[Finding]:
    """The finding of a damaged index (``state``: ``db.index_state(model)``), repaired if asked."""
    if state["state"] != "damaged":
        return []
    f = Finding(
        f"index {model}", state["problem"], "the next `chorus embed` (or `--repair`) rebuilds it"
    )
    if repair:
        db.build_index(model, factory=_saved_factory(db, model), rebuild=True)
        f.repaired = True
    return [f]


def _saved_factory(db, model: str) -> str:
    """The factory a user chose for the damaged index, if its settings still say; else auto."""
    from .faiss_index import AnnIndex, IndexSettings

    try:
        s = IndexSettings.from_json(AnnIndex.settings_path(db.faiss_dir, model).read_text())
    except (OSError, ValueError, TypeError):
        return "auto"
    return "auto" if s.auto else s.factory


def _index_line(state: dict) -> str:
    return state["state"] if state["state"] != "stale" else "stale (updated by the next embed)"
