"""Explorer responsiveness on a large archive: map (50 k sampled points) and search latency.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/app_bench.py --n 1000000 --dim 256 [--browser]

Builds (or reuses, with --db) a database of ``n`` synthetic windows (clustered unit vectors,
1 h recordings at 4 sites with start times), then times what the app does:

* map: projection of a 50 k stratified sample (cold, then from the on-disk cache), building the
  WebGL figure, serialising it (what ``st.plotly_chart`` sends), and unpickling it (what an
  ``st.cache_data`` hit would cost; the app keeps the figure in ``st.cache_resource``);
* search: ``backend.run_search`` (FAISS index + recording join) for one positive, with a
  negative, and with a site filter;
* --browser: real Chromium load of the Map page with warm caches (navigation -> points drawn).

Targets (issue 6): map within 2 s once cached, search within 1 s, at 1 M windows.
"""

from __future__ import annotations

import argparse
import pickle
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import index  # noqa: E402
from explorer import plots  # noqa: E402
from explorer.app import backend  # noqa: E402

MODEL = "bench"
CHUNK = 20_000  # windows per add_embeddings commit
WINDOWS_PER_RECORDING = 720  # 1 h at 5 s
CLUSTERS = 64
MAP_POINTS = 50_000
REPEATS = 5
SITES = ("A", "B", "C", "D")


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Unit vectors (n, dim) float32 from a fixed Gaussian mixture."""
    centres = np.random.default_rng(0).standard_normal((CLUSTERS, dim)).astype(np.float32)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), np.float32)
    for i in range(0, n, 50_000):
        m = min(50_000, n - i)
        x = centres[rng.integers(0, CLUSTERS, m)] + rng.standard_normal((m, dim), dtype=np.float32)
        out[i : i + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def build(db_path: Path, n: int, dim: int) -> float:
    """Fill a database with n windows; return seconds taken (insert + FAISS index)."""
    t0 = time.perf_counter()
    db = index.connect(db_path)
    root = db.add_audio_root(db_path.parent)
    n_rec = -(-n // WINDOWS_PER_RECORDING)
    day0 = pd.Timestamp("2024-06-01 00:00:00")
    db.upsert_recordings(
        [
            {
                "audio_root": root,
                "path": f"{SITES[r % 4]}/rec{r:05d}.wav",
                "site": SITES[r % 4],
                "start_time": day0 + pd.Timedelta(hours=r),
                "duration_s": WINDOWS_PER_RECORDING * 5.0,
                "sample_rate": 32000,
                "channels": 1,
                "status": "ok",
            }
            for r in range(n_rec)
        ]
    )
    ids = db.recordings().sort_values("recording_id")["recording_id"].to_numpy()
    db.register_model(MODEL, {"name": MODEL, "dim": dim, "window_s": 5.0, "hop_s": 5.0})
    for i in range(0, n, CHUNK):
        m = min(CHUNK, n - i)
        w = np.arange(i, i + m)
        db.add_embeddings(
            MODEL,
            {
                "recording_id": ids[w // WINDOWS_PER_RECORDING],
                "start_s": (w % WINDOWS_PER_RECORDING) * 5.0,
                "end_s": (w % WINDOWS_PER_RECORDING) * 5.0 + 5.0,
                "vector": clustered(m, dim, seed=1 + i),
            },
        )
    db.build_index(MODEL)
    return time.perf_counter() - t0


def timed(fn, repeats: int = REPEATS) -> tuple[float, object]:
    """Median seconds over ``repeats`` calls, and the last result."""
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def bench_map(db) -> list[dict]:
    rows = []
    from index.projection import project

    t0 = time.perf_counter()
    project(db, MODEL, method="pca", sample=MAP_POINTS, use_cache=False)
    cold = time.perf_counter() - t0
    rows.append({"step": "map: PCA projection of a 50 k sample (cold, no cache)", "s": cold})
    points = backend.map_points(db, MODEL, "pca", MAP_POINTS)
    t, points = timed(lambda: backend.map_points(db, MODEL, "pca", MAP_POINTS), 3)
    rows.append({"step": "map: points from the on-disk cache + recording join", "s": t})
    for colour in ("site", "hour"):
        t, fig = timed(lambda c=colour: plots.scatter_map(points, color=c), 3)
        rows.append(
            {"step": f"map: build WebGL figure ({len(points)} points, by {colour})", "s": t}
        )
    t, spec = timed(lambda: fig.to_json(), 3)
    rows.append(
        {"step": f"map: serialise figure for the browser ({len(spec) / 1e6:.1f} MB)", "s": t}
    )
    blob = pickle.dumps(fig)
    t, _ = timed(lambda: pickle.loads(blob), 3)
    rows.append(
        {"step": "map: unpickle a cached figure (the app avoids it: cache_resource)", "s": t}
    )
    return rows


def bench_search(db, dim: int) -> list[dict]:
    queries = clustered(REPEATS * 4, dim, seed=999)
    rows = []
    cases = {
        "search: one positive, k=20": lambda q, _: [backend.Query("positive", "q", q)],
        "search: positive + negative, k=20": lambda q, n: [
            backend.Query("positive", "q", q),
            backend.Query("negative", "n", n),
        ],
    }
    for name, make in cases.items():
        times = []
        for i in range(REPEATS):
            qs = make(queries[2 * i], queries[2 * i + 1])
            t0 = time.perf_counter()
            hits = backend.run_search(db, MODEL, qs, k=20)
            times.append(time.perf_counter() - t0)
        assert len(hits) == 20
        rows.append({"step": name, "s": statistics.median(times)})
    where = backend.time_filter(["B"], None, (6, 18))
    times = []
    for i in range(REPEATS):
        q = [backend.Query("positive", "q", queries[i])]
        t0 = time.perf_counter()
        hits = backend.run_search(db, MODEL, q, k=20, where=where)
        times.append(time.perf_counter() - t0)
    assert set(hits["site"]) == {"B"}
    rows.append({"step": "search: site + hour filter, k=20", "s": statistics.median(times)})
    return rows


def _idle(pg) -> None:
    """Wait until Streamlit's 'running' indicator is gone."""
    pg.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")


def bench_browser(db_path: Path) -> list[dict]:
    """Time Chromium from clicking 'Map' to the points being drawn, caches warm."""
    import socket
    import subprocess
    import urllib.request

    from playwright.sync_api import sync_playwright

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [
        sys.executable,
        "-m",
        "explorer.cli",
        "explore",
        "--db",
        str(db_path),
        "--port",
        str(port),
    ]
    proc = subprocess.Popen(cmd, cwd=Path(__file__).resolve().parents[1])
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path="/usr/bin/chromium",
                headless=True,
                args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync"],
            )
            pg = browser.new_page(viewport={"width": 1400, "height": 1000})
            pg.set_default_timeout(600_000)
            pg.goto(url)
            pg.get_by_role("heading", name="Archive").wait_for()
            nav = pg.get_by_test_id("stSidebarNav")
            times, base = [], []
            for _ in range(6):  # the first visit fills the caches
                t0 = time.perf_counter()
                nav.get_by_role("link", name="Map").click()
                pg.get_by_text("windows shown").wait_for()
                pg.locator(".js-plotly-plot .gl-container canvas").first.wait_for()
                _idle(pg)
                times.append(time.perf_counter() - t0)
                # baseline: a page with a form and no data, same navigation and waits
                t0 = time.perf_counter()
                nav.get_by_role("link", name="Clusters").click()
                pg.get_by_text("Run a clustering to browse it.").wait_for()
                _idle(pg)
                base.append(time.perf_counter() - t0)
            browser.close()
        rows.append(
            {"step": "browser: Map page, first visit of a fresh server (disk cache)", "s": times[0]}
        )
        rows.append(
            {"step": "browser: Map page, cached (median of 5)", "s": statistics.median(times[1:])}
        )
        rows.append({"step": "browser: Map page, cached (best of 5)", "s": min(times[1:])})
        rows.append(
            {
                "step": "browser: baseline page switch without a chart (median of 5)",
                "s": statistics.median(base[1:]),
            }
        )
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--db", type=Path, help="reuse (or create) the database here")
    ap.add_argument("--browser", action="store_true", help="also time the Map page in Chromium")
    args = ap.parse_args()
    tmp = None
    if args.db is None:
        tmp = tempfile.TemporaryDirectory(prefix="chorus-app-bench-")
        args.db = Path(tmp.name) / "bench.chorus"
    cpu = next(
        (
            ln.split(":", 1)[1].strip()
            for ln in open("/proc/cpuinfo")
            if ln.startswith("model name")
        ),
        platform.processor(),
    )
    print(
        f"# app bench: n={args.n:,} windows, dim={args.dim}, {cpu}, python {platform.python_version()}"
    )
    if not (args.db / "chorus.json").exists():
        print(f"building database at {args.db} ...", flush=True)
        print(f"built in {build(args.db, args.n, args.dim):.0f} s", flush=True)
    db = index.connect(args.db)
    print(f"windows: {db.windows(MODEL).count_rows():,}")
    rows = bench_map(db) + bench_search(db, args.dim)
    if args.browser:
        rows += bench_browser(args.db)
    print()
    print("| step | seconds |")
    print("|---|---:|")
    for r in rows:
        print(f"| {r['step']} | {r['s']:.3f} |")


if __name__ == "__main__":
    main()
