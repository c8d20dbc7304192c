"""``chorus cluster``: cluster a model's windows and print each cluster's size and exemplars."""

from __future__ import annotations

from explorer.commands import CLIError, check_out_file, require_db


def add_parser(sub) -> None:
    p = sub.add_parser("cluster", help="cluster unlabelled windows (k-means or HDBSCAN)")
    p.add_argument("--db", required=True, help="database folder")
    p.add_argument("--model", default=None, help="embeddings to use (default: the first model)")
    p.add_argument("--method", default="kmeans", choices=["kmeans", "hdbscan"])
    p.add_argument("--k", type=int, default=50, help="clusters for k-means")
    p.add_argument("--pca-dim", type=int, default=None, help="PCA dimensions before clustering")
    p.add_argument("--min-cluster-size", type=int, default=None, help="HDBSCAN smallest cluster")
    p.add_argument("--out", default=None, help="write assignments to this CSV")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args) -> int:
    import index
    from explorer.commands.search import pick_model
    from index.cluster import cluster_windows

    out = check_out_file(args.out)
    db = index.connect(require_db(args.db))
    model = pick_model(db, args.model)
    try:
        res = cluster_windows(
            db, model, args.method, args.k, args.pca_dim, args.min_cluster_size, args.seed
        )
    except ValueError as err:
        raise CLIError(str(err)) from None
    a, ex = res.assignments, res.exemplars
    recs = db.recordings().set_index("recording_id")["path"]
    sizes = a["cluster"].value_counts().sort_index()
    for c, size in sizes.items():
        if c < 0:
            print(f"noise: {size} windows")
            continue
        sites = a.loc[a["cluster"] == c, "site"].value_counts()
        top = ex[ex["cluster"] == c].head(3)
        shown = ", ".join(
            f"{recs[r.recording_id]}@{r.start_s:g}-{r.end_s:g}" for r in top.itertuples()
        )
        site = f"{sites.index[0]} {sites.iloc[0]}" if len(sites) else "-"
        print(f"cluster {c}: {size} windows (top site {site}); exemplars {shown}")
    if out is not None:
        a.to_csv(out, index=False)
    print(
        f"{int((sizes.index >= 0).sum())} clusters over {len(a)} windows ({args.method}, {model})"
        + (f"; wrote {args.out}" if args.out else "")
    )
    return 0
