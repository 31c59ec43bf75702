"""The viewer in a real browser: Debian's Chromium driven by Playwright (pointed at the system
browser; `playwright install` is never needed). Opens the page, picks a run, steps with the
keyboard, and checks the board, the policy bars, the disagreement jumps and the value chart
(one point per step). Keeps a screenshot: $LAB2048_ARTIFACTS/viewer.png, else in pytest's
temporary directory (the path is printed).

Skips only when Chromium or Playwright is missing here; with LAB2048_REQUIRE_BROWSER=1 (set
by .ci/run, which installs both) a missing browser fails instead."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from annotated import Server, annotate, sidecar, small_dataset, tiny_init

CHROMIUM = Path(os.environ.get("LAB2048_CHROMIUM", "/usr/bin/chromium"))
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _need_browser():
    why = ""
    if not CHROMIUM.exists():
        why = f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            why = "Playwright for Python is not installed (pip install playwright)"
    if why and os.environ.get("LAB2048_REQUIRE_BROWSER") == "1":
        pytest.fail(f"{why}, and LAB2048_REQUIRE_BROWSER=1")
    if why:
        pytest.skip(why)


def test_page_in_a_real_browser(tmp_path):
    _need_browser()
    from playwright.sync_api import sync_playwright

    from lab2048.annotate.files import open_annotations
    from lab2048.viewer.app import ViewerApp
    from lab2048.viewer.data import ViewerData

    ds = small_dataset(tmp_path / "ds")
    sc = sidecar(ds, tmp_path / "values")
    annotate(tiny_init(tmp_path / "init"), ds, tmp_path / "ann")
    pol = np.concatenate(open_annotations(ds, tmp_path / "ann").policy)
    run2 = pol[pol["run_id"] == 2]
    disagree = np.flatnonzero(run2["model_move"] != run2["teacher_move"])
    steps = np.concatenate([np.load(p) for p in sorted(ds.glob("steps-*.npy"))])
    boards = steps["board"][steps["run_id"] == 2]
    artifacts = Path(os.environ.get("LAB2048_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "viewer.png"

    with Server(ViewerApp(ViewerData(ds, tmp_path / "ann", sc))) as server, \
            sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 950})
            errors = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(server.url)
            page.wait_for_selector("#runs tbody tr")
            assert page.locator("#runs tbody tr").count() == 3
            page.select_option("select[name=sort]", "steps")
            page.wait_for_function("document.querySelector('#runs tbody tr').dataset.run"
                                   " === '3'")
            page.click("#runs tbody tr[data-run='2']")
            page.wait_for_selector("#board .cell")
            assert page.locator("#board .cell").count() == 16
            assert page.inner_text("#step-label") == "step 0"
            for key in ("ArrowRight", "ArrowRight", "l", "l", "h"):
                page.keyboard.press(key)
            assert page.inner_text("#step-label") == "step 3"
            assert page.input_value("#scrubber") == "3"
            cells = page.locator("#board .cell").all_inner_texts()
            b = int(boards[3])
            expected = [(b >> (60 - 4 * i)) & 15 for i in range(16)]
            assert cells == [str(2 ** e) if e else "" for e in expected]
            bars = page.locator("#moves .policy-bar")
            assert bars.count() == 4
            widths = [float(bars.nth(i).evaluate("e => e.getBoundingClientRect().width"))
                      for i in range(4)]
            assert sum(widths) == pytest.approx(100, abs=4)  # 100 px for probability 1
            for line in ("value", "return"):
                points = page.get_attribute(f"#rails polyline.{line}", "points").split()
                assert len(points) == 453, line  # one point per step of the run
            assert page.locator("#strip line.d").count() == len(disagree)
            page.keyboard.press("]")
            nxt = int(disagree[disagree > 3][0])
            assert page.inner_text("#step-label") == f"step {nxt}"
            page.keyboard.press("[")
            prev = disagree[disagree < nxt]
            assert page.inner_text("#step-label") == f"step {int(prev[-1]) if len(prev) else nxt}"
            page.wait_for_selector("#dist rect", state="attached")
            assert page.locator("#dist rect").count() > 0
            assert "error V − G" in page.inner_text("#rails-info")
            page.screenshot(path=str(shot), full_page=True)
            assert not errors, errors
        finally:
            browser.close()
    print(f"viewer screenshot: {shot}")
    assert shot.stat().st_size > 10_000
