"""Compaction as ingest goes: keep the cost of one more commit flat however many came before.

Every LanceDB commit adds a data file, a deletion file or both, plus a version manifest; each
later read, filter, update and merge opens all of them. Left alone, an archive of short clips
made ``finish_recording`` 50x slower after 685 files (issue 20). The writer calls
:func:`compact_if_due` after each chunk: a table that took ``COMPACT_EVERY`` commits since its
last compaction is compacted (small files merged, deleted rows dropped) and versions older than
``KEEP_VERSIONS`` are removed.

Compaction rewrites only fragments below Lance's target size (a million rows), so the rewritten
volume is bounded too: a big embeddings table keeps its full fragments as they are.
"""

from __future__ import annotations

import datetime as _dt

from .schema import PROGRESS_TABLE, RECORDINGS_TABLE, embeddings_table_name

COMPACT_EVERY = 32  # commits to a table between two compactions
# Old versions stay this long: a reader (search, the app) that pinned a version a moment ago
# must still find its files; older ones only cost disk and listing time.
KEEP_VERSIONS = _dt.timedelta(minutes=10)


def compact_if_due(db, model: str, every: int | None = None) -> list[str]:
    """Compact the tables an ingest of ``model`` writes, each once ``every`` commits went by
    (default ``COMPACT_EVERY``).

    The last compacted version of each table is kept on ``db`` (per process): a new process
    compacts each table once at its first call, which also tidies up after older Chorus versions.

    Returns
    -------
    The names of the tables compacted by this call.
    """
    every = COMPACT_EVERY if every is None else int(every)
    marks = db.__dict__.setdefault("_compacted_at", {})
    names = (RECORDINGS_TABLE, PROGRESS_TABLE, embeddings_table_name(model))
    done = []
    for name in names:
        if not db.has_table(name):
            continue
        table = db.open_table(name)
        if name in marks and table.version - marks[name] < every:
            continue
        table.optimize(cleanup_older_than=KEEP_VERSIONS)
        marks[name] = table.version
        done.append(name)
    return done
