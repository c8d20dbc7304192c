"""``chorus models list`` / ``chorus models import NAME PATH``: installed model weights."""

from __future__ import annotations

from explorer.commands import CLIError


def add_parser(sub) -> None:
    p = sub.add_parser("models", help="list models, import official weights")
    verbs = p.add_subparsers(dest="action", metavar="ACTION")
    verbs.required = True
    verbs.add_parser("list", help="models and their installed weights")
    imp = verbs.add_parser(
        "import", help="check and install a weight file for later `chorus embed`"
    )
    imp.add_argument("name", help="model name, e.g. perch or animal2vec")
    imp.add_argument(
        "path", help="weight file or folder (.npz, .safetensors, SavedModel, fairseq .pt)"
    )
    p.set_defaults(func=run)


def run(args) -> int:
    from embedder import list_models
    from embedder.weights import import_weights, installed_weights

    if args.action == "list":
        for name in list_models():
            if name == "spectral":
                print(f"{name:<18} training-free (no weights needed)")
                continue
            path = installed_weights(name)
            print(
                f"{name:<18} {path if path else 'not installed (chorus models import ' + name + ' PATH)'}"
            )
        return 0
    if args.name not in list_models() or args.name == "spectral":
        raise CLIError(
            f"cannot import weights for {args.name!r}; models: perch, animal2vec, animal2vec-small"
        )
    try:
        dest = import_weights(args.name, args.path)
    except (ValueError, OSError) as err:  # WeightsError and the readers' own errors
        raise CLIError(str(err)) from None
    print(f"{args.name}: weights checked and installed at {dest}")
    return 0
