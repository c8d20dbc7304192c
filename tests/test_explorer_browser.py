"""Real-browser test: ``chorus explore`` on a fixture database, driven by Playwright + Debian's
Chromium. Visits every page, runs a search, clicks a label button, trains a probe, clusters, bulk
labels and undoes, edits on the Labels page, runs an Agile round, validates windows on the
Density page, draws the Activity heatmaps, opens a second session that finds the last map and
clustering again, checks that the page asks no host but the app's own, and saves screenshots under tests/artifacts/ (gitignored; or
``$CHORUS_SCREENSHOTS``) for a person to look at."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = [pytest.mark.browser, pytest.mark.slow]  # ~40 s: starts a server and Chromium

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(
    os.environ.get("CHORUS_SCREENSHOTS") or Path(__file__).resolve().parent / "artifacts"
)
LOCAL_HOSTS = ("127.0.0.1", "localhost")
REPO = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 90  # Streamlit start on a busy 2-core machine
STEP_TIMEOUT_MS = 120_000  # one page action (first map / probe training) on a busy machine
VIEWPORT = (1400, 1000)  # px
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _requirements() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} is missing (apt-get install -y chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright (Python) is not installed"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_healthy(url: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"chorus explore exited with {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise TimeoutError(f"chorus explore did not answer on {url} within {START_TIMEOUT_S} s")


def _hoot_clip(path: Path) -> str:
    """A 4 s query clip with one hoot over noise, like a user's recording of the call."""
    import numpy as np
    import soundfile as sf
    from test_explorer_app import SR, _hoot

    x = 0.02 * np.random.default_rng(7).standard_normal(4 * SR)
    call = _hoot(SR)
    x[SR : SR + call.size] += 0.3 * call
    sf.write(path, x.astype(np.float32), SR)
    return str(path)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    reason = _requirements()
    if reason:
        pytest.skip(reason)
    from test_explorer_app import _label_calls, make_fixture_db

    db_path, truth = make_fixture_db(tmp_path_factory.mktemp("explorer_browser"))
    _label_calls(db_path, truth, "hoot")
    port = _free_port()
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS="1")
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
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    url = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(url, proc)
        yield url, truth, _hoot_clip(db_path.parent / "hoot_query.wav")
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
        ARTIFACTS.mkdir(exist_ok=True)
        (ARTIFACTS / "explore_server.log").write_bytes(out or b"")


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    if ARTIFACTS.exists():
        for png in ARTIFACTS.glob("*.png"):
            png.unlink()
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": VIEWPORT[0], "height": VIEWPORT[1]})
        pg.set_default_timeout(STEP_TIMEOUT_MS)
        errors: list[str] = []
        outside: list[str] = []  # requests to any other host (the app must work offline)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.on("request", lambda r: None if _is_local(r.url) else outside.append(r.url))
        pg.goto(server[0])
        yield pg
        browser.close()
    assert not errors, f"JavaScript errors in the page: {errors}"
    assert not outside, f"requests to other hosts: {outside[:5]}"


def _is_local(url: str) -> bool:
    from urllib.parse import urlparse

    parsed = urlparse(url)
    return parsed.scheme in ("data", "blob", "about") or parsed.hostname in LOCAL_HOSTS


def _settle(pg) -> None:
    """Wait until Streamlit has finished the current run (no spinner, no 'Running' status)."""
    pg.wait_for_timeout(500)
    pg.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')",
        timeout=STEP_TIMEOUT_MS,
    )
    pg.wait_for_timeout(300)


def _goto(pg, title: str, heading: str | None = None) -> None:
    pg.get_by_test_id("stSidebarNav").get_by_role("link", name=title).click()
    default = title if title != "Search" else "Search by example"
    pg.get_by_role("heading", name=heading or default).wait_for()
    _settle(pg)


def _no_exception(pg) -> None:
    assert pg.get_by_test_id("stException").count() == 0, pg.get_by_test_id(
        "stException"
    ).first.inner_text()


def _fill(pg, box: str, text: str) -> None:
    """Type into a labelled text box and commit it (Enter), as a user does."""
    field = pg.get_by_role("textbox", name=box)
    field.fill(text)
    field.press("Enter")
    _settle(pg)


def _lasso_everything(pg) -> None:
    """Draw a lasso around the whole map (the figure's default drag mode)."""
    drag = pg.locator(".js-plotly-plot .nsewdrag").first
    drag.wait_for()
    box = drag.bounding_box()
    x0, y0 = box["x"] + 3, box["y"] + 3
    x1, y1 = box["x"] + box["width"] - 3, box["y"] + box["height"] - 3
    pg.mouse.move(x0, y0)
    pg.mouse.down()
    for x, y in ((x1, y0), (x1, y1), (x0, y1), (x0, y0 + 5)):
        pg.mouse.move(x, y, steps=15)
    pg.mouse.up()
    _settle(pg)


def _drag_box(pg, x_from: float, x_to: float) -> None:
    """Drag a box over the span picker's spectrogram between two fractions of its width."""
    drag = pg.locator(".js-plotly-plot .nsewdrag").first
    drag.wait_for()
    box = drag.bounding_box()
    y0, y1 = box["y"] + 0.2 * box["height"], box["y"] + 0.8 * box["height"]
    pg.mouse.move(box["x"] + x_from * box["width"], y0)
    pg.mouse.down()
    pg.mouse.move(box["x"] + x_to * box["width"], y1, steps=15)
    pg.mouse.up()
    _settle(pg)


def _shot(pg, name: str) -> None:
    """Screenshot of the whole page: Streamlit scrolls inside its main block, so grow the
    viewport to the content's height first."""
    height = pg.evaluate(
        "() => document.querySelector('[data-testid=\"stMainBlockContainer\"]').scrollHeight"
    )
    pg.set_viewport_size({"width": VIEWPORT[0], "height": min(int(height) + 150, 8000)})
    pg.wait_for_timeout(500)
    pg.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    pg.set_viewport_size({"width": VIEWPORT[0], "height": VIEWPORT[1]})


def test_every_page_search_label_probe_and_clusters(page, server):
    pg = page
    pg.get_by_role("heading", name="Archive").wait_for()
    _settle(pg)
    assert pg.get_by_test_id("stMetricValue").first.inner_text() == "6"  # readable, as chorus info
    _no_exception(pg)
    _shot(pg, "1_archive")

    _goto(pg, "Map")
    pg.locator(".js-plotly-plot").first.wait_for()
    _no_exception(pg)
    _shot(pg, "2_map")
    _lasso_everything(pg)
    pg.get_by_role("heading", name="36 selected windows").wait_for()
    pg.get_by_test_id("stImage").first.wait_for()
    _no_exception(pg)
    assert pg.get_by_role("textbox", name="Label to write").input_value() == ""
    _fill(pg, "Label to write", "wind")
    pg.get_by_role("button", name="positive (36)").click()
    _settle(pg)
    pg.get_by_text("Write 'wind' as positive on 36 windows?").wait_for()
    _shot(pg, "2b_map_selection")
    pg.get_by_role("button", name="Yes, label 36 windows").click()
    _settle(pg)
    pg.get_by_text("Stored 36 × positive 'wind'.").wait_for()
    pg.get_by_role("button", name="Undo: Stored 36 × positive 'wind'").click()
    _settle(pg)
    pg.get_by_text(re.compile("Undone: Stored 36")).wait_for()

    _goto(pg, "Search")
    pg.get_by_test_id("stFileUploaderDropzoneInput").set_input_files(server[2])
    pg.get_by_text("hoot_query.wav").first.wait_for()
    pg.get_by_role("button", name="Add clip to the query").click()
    _settle(pg)
    pg.get_by_text("positive: upload: hoot_query.wav").wait_for()
    pg.get_by_role("tab", name="Pick a span of a recording").click()
    _drag_box(pg, 0.02, 0.14)  # about 0.6-4.2 s of the first recording: background only
    sel = pg.get_by_text(re.compile(r"Span used: \d+\.\d+–\d+\.\d+ s"))
    sel.wait_for()
    for _ in range(60):  # the dragged span replaces the slider's default (0-5 s)
        if sel.inner_text() != "Span used: 0.00–5.00 s":
            break
        pg.wait_for_timeout(500)
    start, end = map(float, re.findall(r"\d+\.\d+", sel.inner_text()))
    assert 0.0 <= start < 1.5 and 3.0 < end < 5.0
    pg.get_by_role("button", name="Add span as negative").click()
    _settle(pg)
    pg.get_by_text(re.compile(r"negative: \S+\.wav @ \d\.\d–\d\.\d s")).first.wait_for()
    pg.get_by_test_id("stFormSubmitButton").get_by_role("button", name="Search").click()
    _settle(pg)
    pg.get_by_role("heading", name="12 results").wait_for()
    pg.get_by_test_id("stImage").first.wait_for()
    _no_exception(pg)
    _shot(pg, "3_search_results")
    _fill(pg, "Label to write", "sweep")
    # the first result card's "positive" button (its key is hit-<window_id>-positive)
    pg.locator("[class*='st-key-hit-'][class*='-positive'] button").first.click()
    _settle(pg)
    pg.get_by_text("Stored 1 × positive 'sweep'").wait_for()
    _shot(pg, "4_search_labelled")

    _goto(pg, "Classify")
    pg.get_by_test_id("stMain").get_by_test_id("stSelectbox").first.click()
    pg.get_by_role("option", name="hoot").click()
    pg.get_by_role("button", name="Train probe").click()
    _settle(pg)
    pg.get_by_text("Average precision (CV)").wait_for()
    pg.locator(".js-plotly-plot").first.wait_for()
    _no_exception(pg)
    _shot(pg, "5_classify")

    _goto(pg, "Clusters")
    pg.get_by_role("button", name="Run clustering").click()
    _settle(pg)
    pg.get_by_text("clusters over 36 windows").wait_for()
    pg.get_by_test_id("stImage").first.wait_for()
    _no_exception(pg)
    _shot(pg, "6_clusters")

    _goto(pg, "Agile")
    _fill(pg, "Sound to model", "hoot")
    pg.get_by_role("button", name="Find similar windows").click()
    _settle(pg)
    pg.get_by_text("Batch: 0 of 9 windows marked").wait_for()
    for i, kind in enumerate(("positive", "positive", "negative", "negative")):
        card = f"[class*='st-key-ag-'][class*='-{kind}']:not([class*='st-key-ag-key-'])"
        pg.locator(f"{card} button").nth(i % 2 + 2 * (kind == "negative")).click()
        _settle(pg)
    pg.get_by_text("Batch: 4 of 9 windows marked").wait_for()
    pg.keyboard.press("n")  # the key row: N marks the next unmarked window negative
    _settle(pg)
    pg.get_by_text("Batch: 5 of 9 windows marked").wait_for()
    pg.get_by_role("button", name="Retrain").click()
    _settle(pg)
    pg.get_by_text(re.compile("Round 1: hoot")).wait_for()
    pg.locator(".js-plotly-plot").first.wait_for()
    _no_exception(pg)
    _shot(pg, "7_agile")

    _goto(pg, "Labels")
    pg.get_by_test_id("stDataFrame").first.wait_for()
    _no_exception(pg)
    pg.get_by_text("Select all").click()
    _settle(pg)
    pg.get_by_role("button", name=re.compile(r"Delete \d+ selected")).click()
    _settle(pg)
    pg.get_by_text(re.compile(r"Deleted \d+ label\(s\)")).first.wait_for()
    pg.get_by_role("button", name=re.compile(r"Undo: Deleted")).click()
    _settle(pg)
    pg.get_by_test_id("stDataFrame").first.wait_for()
    _no_exception(pg)
    _shot(pg, "8_labels")

    _goto(pg, "Density", "Call density")
    pg.get_by_text("Validations done").wait_for()
    pg.get_by_role("button", name="Start validating").click()
    _settle(pg)
    pg.get_by_text(re.compile(r"Batch: 0 of \d+ windows answered")).wait_for()
    for i, kind in enumerate(("positive", "negative", "skip")):
        # the i-th card's button (a button with a tooltip also has a hidden twin)
        pg.locator(f"[class*='st-key-dn-'][class*='-{kind}'] button:visible").nth(i).click()
        _settle(pg)
    pg.get_by_text(re.compile(r"Batch: 2 of \d+ windows answered")).wait_for()
    pg.get_by_role("button", name=re.compile("Undo: Stored 1 × negative")).wait_for()
    pg.get_by_test_id("stImage").first.wait_for()
    _no_exception(pg)
    _shot(pg, "9_density")

    _goto(pg, "Activity")
    pg.locator(".js-plotly-plot").nth(1).wait_for()
    pg.get_by_role("button", name="Table (CSV): site × hour").wait_for()
    _no_exception(pg)
    _shot(pg, "10_activity")
    assert shutil.disk_usage(ARTIFACTS).free > 0


def test_a_new_session_opens_with_the_last_map_and_clustering(page, server):
    """Another browser (a new Streamlit session) opens where the first one left off."""
    pg = page
    _goto(pg, "Map")
    pg.get_by_text("hour", exact=True).click()  # colour by hour of day
    _settle(pg)
    _goto(pg, "Clusters")
    pg.get_by_text("clusters over 36 windows").wait_for()
    fresh = pg.context.browser.new_page(viewport={"width": VIEWPORT[0], "height": VIEWPORT[1]})
    fresh.set_default_timeout(STEP_TIMEOUT_MS)
    fresh.goto(server[0])
    fresh.get_by_role("heading", name="Archive").wait_for()
    _settle(fresh)
    _goto(fresh, "Clusters")
    fresh.get_by_text("clusters over 36 windows").wait_for()  # reopened, not run again
    fresh.get_by_text(re.compile(r"Finished clusterings of spectral")).wait_for()
    _no_exception(fresh)
    _goto(fresh, "Map")
    assert fresh.get_by_role("radio", name="hour", exact=True).is_checked()
    assert not fresh.get_by_role("radio", name="site", exact=True).is_checked()
    _no_exception(fresh)
    _shot(fresh, "11_map_new_session")
    fresh.close()
