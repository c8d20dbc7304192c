"""``chorus classify``: score every window with a stored probe and write merged detections."""

from __future__ import annotations

from explorer.commands import CLIError, check_out_file, require_db


def add_parser(sub) -> None:
    p = sub.add_parser("classify", help="score the archive with a probe; write detections")
    p.add_argument("--db", required=True, help="database folder")
    p.add_argument("--probe", type=int, required=True, metavar="ID", help="probe id (chorus train)")
    thr = p.add_mutually_exclusive_group()
    thr.add_argument("--threshold", type=float, default=None, help="probability threshold")
    thr.add_argument(
        "--precision", type=float, default=None, help="threshold for this CV precision"
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="FILE",
        help="detections file: .csv, .parquet, or .txt (one Raven selection table)",
    )
    p.add_argument(
        "--device", default="auto", choices=["auto", "cpu", "cuda"], help="scoring device"
    )
    p.add_argument("--no-merge", action="store_true", help="keep one detection per window")
    p.set_defaults(func=run)


def threshold_notes(db, probe_id: int, threshold, precision) -> list[str]:
    """Lines saying which target precisions no threshold reaches, and what is used instead."""
    from index.classify import choose_thresholds
    from index.probe import load_probe

    rec = load_probe(db, probe_id)
    choices = choose_thresholds(rec, threshold, precision)
    return [c.note(name) for name, c in zip(rec.labels, choices, strict=True) if not c.reached]


def torch_scorer(device: str):
    """A GPU matmul scorer if torch with CUDA is importable (and wanted), else None (NumPy)."""
    if device == "cpu":
        return None
    try:
        import torch
    except ImportError:
        torch = None
    if torch is None or not torch.cuda.is_available():
        if device == "cuda":
            raise CLIError("--device cuda: torch with CUDA is not available")
        return None

    def score(X, coef, bias):
        with torch.inference_mode():
            x = torch.from_numpy(X).to("cuda", non_blocking=True)
            w = torch.from_numpy(coef).to("cuda")
            b = torch.from_numpy(bias.astype("float32")).to("cuda")
            return (x @ w.T + b).float().cpu().numpy()

    return score


def run(args) -> int:
    import index
    from index.classify import classify
    from index.raven import write_selection_table

    out = check_out_file(args.out)
    if out is not None and out.suffix.lower() not in (".csv", ".txt", ".parquet"):
        raise CLIError(f"--out must end in .csv, .txt or .parquet, got {out.name}")
    db = index.connect(require_db(args.db))
    try:
        det = classify(
            db,
            args.probe,
            threshold=args.threshold,
            precision=args.precision,
            scorer=torch_scorer(args.device),
            merge=not args.no_merge,
        )
    except (KeyError, ValueError) as err:
        raise CLIError(err.args[0] if err.args else str(err)) from None
    cols = ["label", "path", "start_s", "end_s", "score", "n_windows", "recording_id", "abs_path"]
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix.lower() == ".csv":
            det[cols].to_csv(out, index=False)
        elif out.suffix.lower() == ".parquet":
            det[cols].to_parquet(out, index=False)
        else:
            table = det.assign(file=det["path"].str.rsplit("/", n=1).str[-1], path=det["abs_path"])
            write_selection_table(table, out, extra=("score",))
    for line in threshold_notes(db, args.probe, args.threshold, args.precision):
        print(line)
    thresholds = ", ".join(f"{t:.3f}" for t in det["threshold"].unique()) if len(det) else "-"
    print(
        f"{len(det)} detections in {det['recording_id'].nunique()} recordings "
        f"(probe {args.probe}, threshold {thresholds})" + (f"; wrote {out}" if out else "")
    )
    return 0
