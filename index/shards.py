"""Windows written by many workers, committed by one driver (the write half of ``chorus embed --ray``).

A distributed embed must append each shard of the archive exactly once, whatever fails. The
split used here is Lance's own: workers write *uncommitted* fragments into the embeddings
table's folder with ``lance.fragment.write_fragments`` (data files that no version references
yet, so nobody sees them), and hand the fragments' metadata back in a receipt; the driver, the
only committer, appends the fragments of several finished shards in one commit
(``LanceOperation.Append``) whose transaction properties name the shards it carries.

Why this is exactly once:

* Only the driver commits, and it commits a shard's fragments once (it keeps the ids of the
  shards it committed). A retried worker task writes new files; the files of the try whose
  receipt was lost are never referenced by any version: invisible, never duplicated.
* Right after the Append the driver writes the done-markers (``progress``) of the shard's
  recordings. A crash between the two commits leaves windows without a marker; the next run's
  :func:`index.repair.settle_windows` deletes them and re-embeds those recordings. A recording
  with a marker has exactly its windows, so a rerun skips it and never appends it again.

Lance's own ``write_fragments`` + ``Append`` rather than the ``lance-ray`` package: the
database's rows must be built by the same code as a single-machine run (window ids reserved
from ``chorus.json``, vectors normalised by :func:`index.rows.window_table`) and committed
together with the done-markers, per shard, as shards finish; ``lance-ray``'s writer commits a
whole dataset write once at its end, which is the all-or-nothing behaviour a multi-day run
must not have. ``pylance`` is imported only here, and only by a distributed run.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from . import rows as _rows
from .schema import extra_columns

SHARDS_PROPERTY = "chorus.shards"  # transaction property: the shard ids an Append carries
RUN_PROPERTY = "chorus.run"  # transaction property: the run that committed it


def prepare_table(
    db, model: str, dim: int, extras: dict[str, int] | None = None
) -> tuple[str, pa.Schema]:
    """Create ``embeddings_<model>`` if missing; return (its Lance dataset URI, its schema).

    The driver calls this before any worker writes: fragments are written against the table's
    schema, and a table created by two workers at once would be two tables.
    """
    widths = dict(extras or {})
    tbl = db.embeddings_table(model, dim=int(dim), extras=widths)
    if extra_columns(tbl.schema) != widths:
        raise ValueError(
            f"model {model!r} stores extra columns {extra_columns(tbl.schema)}, this run gives {widths}"
        )
    if int(tbl.schema.field("vector").type.list_size) != int(dim):
        raise ValueError(f"model {model!r} stores {db.model_dim(model)}-d vectors, not {dim}-d")
    return str(tbl.uri), tbl.schema


def write_fragments(uri: str, schema: pa.Schema, rows: dict, window_ids: np.ndarray) -> list[str]:
    """Write one shard's windows as uncommitted fragments of the table at ``uri`` (worker side).

    Parameters
    ----------
    uri, schema : from :func:`prepare_table`.
    rows : columns as for :meth:`index.Database.add_embeddings` (recording_id, channel, start_s,
        end_s, vector (n, dim), optional extras such as logits (n, C)).
    window_ids : (n,) int64, reserved for these rows by the driver's id reservation.

    Returns
    -------
    The fragments' metadata as JSON strings, for :func:`commit_shards`; empty for no rows.
    """
    import lance

    dim = int(schema.field("vector").type.list_size)
    cols = _rows.window_rows(rows, dim)
    if len(cols["vector"]) == 0:
        return []
    if len(window_ids) != len(cols["vector"]):
        raise ValueError(f"{len(window_ids)} window ids for {len(cols['vector'])} windows")
    table = _rows.window_table(cols, window_ids, schema)
    frags = lance.fragment.write_fragments(table, uri, schema=schema, mode="append")
    return [json.dumps(f.to_json()) for f in frags]


def commit_shards(uri: str, fragments: list[str], shard_ids: list[str], run_id: str) -> int | None:
    """Append the fragments of finished shards in one commit (driver side); return the new
    table version, or None when there was nothing to append.

    The commit's transaction properties name the shards (``chorus.shards``, comma-separated) and
    the run, so :func:`committed_shards` can tell from the table's history what was appended.
    """
    import lance

    if not fragments:
        return None
    frags = [lance.FragmentMetadata.from_json(f) for f in fragments]
    read_version = lance.dataset(uri).version
    txn = lance.Transaction(
        read_version=read_version,
        operation=lance.LanceOperation.Append(frags),
        transaction_properties={SHARDS_PROPERTY: ",".join(shard_ids), RUN_PROPERTY: run_id},
    )
    return int(lance.LanceDataset.commit(uri, txn).version)


def committed_shards(uri: str, recent: int = 1000) -> list[tuple[str, list[str]]]:
    """(run id, shard ids) of the Appends among the ``recent`` transactions still kept
    (compaction removes old versions, and their transactions, after a while)."""
    import lance

    out = []
    for txn in lance.dataset(uri).get_transactions(recent):
        props = (txn.transaction_properties or {}) if txn is not None else {}
        if SHARDS_PROPERTY in props:
            out.append((props.get(RUN_PROPERTY, ""), props[SHARDS_PROPERTY].split(",")))
    return out
