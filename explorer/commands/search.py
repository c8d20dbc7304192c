"""``chorus search --db DB --query FILE[@S-E]``: find the windows most like one or more examples.

Imports neither pandas nor Lance where the query spans are stored windows and the database has
not changed since its last search (see :mod:`index.snapshot_cache`): a cold search answers in a
third of the time.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np

from explorer.commands import CLIError, parse_span, require_db

PRINTED = ("score", "path", "start_s", "end_s", "site", "window_id")  # the columns shown


def add_parser(sub) -> None:
    p = sub.add_parser("search", help="query by example: windows most similar to audio spans")
    p.add_argument("--db", required=True, help="database folder")
    p.add_argument(
        "--model",
        default=None,
        help="model whose embeddings to search (default: the only/first one)",
    )
    p.add_argument(
        "--query",
        action="append",
        required=True,
        metavar="FILE[@S-E]",
        help="positive example (repeatable)",
    )
    p.add_argument(
        "--negative",
        action="append",
        default=[],
        metavar="FILE@S-E",
        help="negative example (repeatable)",
    )
    p.add_argument("-k", type=int, default=20, help="number of hits")
    p.add_argument(
        "--where", default=None, help="SQL filter on recording/window columns, e.g. \"site = 'A'\""
    )
    p.add_argument(
        "--per-recording",
        type=int,
        default=None,
        metavar="N",
        help="keep the best N hits per recording",
    )
    p.add_argument("--exact", action="store_true", help="bypass the ANN index")
    p.add_argument(
        "--include-query",
        action="store_true",
        help="keep windows that overlap a query span (left out by default: they score ~1.0)",
    )
    p.add_argument("--format", default="table", choices=["table", "csv", "json"])
    p.set_defaults(func=run)


def pick_model(db, name: str | None) -> str:
    """The model to use: the one named, or the database's only/first model."""
    models = list(db.meta.get("models", {}))
    if name is None:
        if not models:
            raise CLIError("the database holds no embeddings yet (run `chorus embed` first)")
        return models[0]
    if name not in models:
        raise CLIError(
            f"the database has no {name!r} embeddings (it has: {', '.join(models) or 'none'})"
        )
    return name


def resolve_span(db, text: str):
    """``FILE[@S-E]`` as (Span with an absolute path, recording_id or None).

    FILE may be any path ``chorus label --add`` takes: absolute, relative to the current folder
    or to an audio root (the form ``chorus search`` prints), or a unique file name.
    """
    from index.roots import abs_path, match_recording, recording_paths

    span = parse_span(text)
    ids, roots, paths = recording_paths(db)
    try:
        rid = match_recording(ids, roots, paths, span.path)
    except KeyError:
        rid = None
    if not span.path.is_file() and rid is not None:
        at = int(np.searchsorted(ids, rid))
        span = type(span)(Path(abs_path(roots[at], paths[at])), span.start_s, span.end_s)
    if not span.path.is_file():
        raise CLIError(f"query file not found: {span.path}")
    return span, rid


def stored_window(db, model: str, rid: int | None, span) -> np.ndarray | None:
    """The stored vector (dim,) of the window a span names exactly, or None.

    Such a span embeds to that window's vector (the model is deterministic and vectors are stored
    normalised), so the query needs neither the model nor the audio: a cold search from a
    printed result line answers without loading either. Only for one-channel ("mix") windows.
    """
    if rid is None or span.start_s is None or span.end_s is None:
        return None
    if db.meta.get("models", {}).get(model, {}).get("channels", "mix") != "mix":
        return None
    snap = db.snapshot(model)
    hit = np.flatnonzero(
        (snap.recording_id == rid)
        & (np.abs(snap.start_s - span.start_s) < 1e-6)
        & (np.abs(snap.end_s - span.end_s) < 1e-6)
    )
    return snap.vectors_at(hit[:1])[0] if len(hit) else None


def embed_spans(db, model: str, spans, rids=None) -> np.ndarray:
    """Vectors (n, dim) of resolved spans (see ``resolve_span``): a stored window's own vector
    where a span is exactly one (``rids``: their recording ids), else embedded from the audio."""
    out = []
    for span, rid in zip(spans, rids or [None] * len(spans), strict=True):
        vec = stored_window(db, model, rid, span)
        out.append(vec if vec is not None else _embed_one(db, model, span))
    return np.stack(out)


def _embed_one(db, model: str, span) -> np.ndarray:
    from embedder.audio import AudioError
    from explorer.ingest import IngestError, embed_span

    try:
        return embed_span(db, model, span.path, span.start_s, span.end_s)
    except (AudioError, IngestError) as err:
        raise CLIError(str(err)) from None


def run(args) -> int:
    import index

    if args.k < 1:
        raise CLIError("-k must be >= 1")
    if args.per_recording is not None and args.per_recording < 1:
        raise CLIError("--per-recording must be >= 1")
    db = index.connect(require_db(args.db))
    model = pick_model(db, args.model)
    queries = [resolve_span(db, q) for q in args.query]
    builder = db.search(model, embed_spans(db, model, *zip(*queries, strict=True)))
    if args.negative:
        builder = builder.negatives(
            embed_spans(
                db, model, *zip(*map(lambda q: resolve_span(db, q), args.negative), strict=True)
            )
        )
    if not args.include_query:  # a mask on the windows: no SQL engine to start for it
        own = [(rid, span.start_s, span.end_s) for span, rid in queries if rid is not None]
        builder = builder.exclude_spans(own)
    if args.where:
        builder = builder.where(args.where)
    if args.per_recording is not None:
        builder = builder.per_recording(args.per_recording)
    if args.exact:
        builder = builder.exact()
    try:
        hits = builder.limit(args.k).to_arrow()
    except ValueError as err:  # e.g. a malformed --where
        raise CLIError(str(err)) from None
    rows = hits.select(list(PRINTED)).to_pylist()
    if args.format == "csv":
        out = csv.writer(sys.stdout, lineterminator="\n")
        out.writerow(PRINTED)
        out.writerows([["" if r[c] is None else r[c] for c in PRINTED] for r in rows])
    elif args.format == "json":
        print(json.dumps(rows, indent=1))
    else:
        print(text_table(rows))
    return 0


def text_table(rows: list[dict]) -> str:
    """``rows`` (PRINTED columns) as right-aligned text columns, floats to 3 decimals."""
    cells = [list(PRINTED)] + [
        [f"{r[c]:.3f}" if isinstance(r[c], float) else str(r[c]) for c in PRINTED] for r in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(PRINTED))]
    return "\n".join(
        "  ".join(v.rjust(w) for v, w in zip(row, widths, strict=True)) for row in cells
    )
