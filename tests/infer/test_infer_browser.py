"""The search page in a real browser: Debian's chromium, driven by Playwright, against `grace serve` on a
small trained run. Set GRACE_SCREENSHOT=PATH to keep the screenshot (docs/images/serve.png is made so)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from launch_helpers import free_port

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("GRACE_REQUIRE_BROWSER"):
    pytest.fail("GRACE_REQUIRE_BROWSER is set but no chromium is installed (scripts/setup_env.sh installs it)")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no chromium (apt-get install chromium)")


@pytest.fixture(scope="module")
def server(small_run):
    run, dataset_json = small_run
    port = free_port()
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "grace.cli", "serve", "--run", str(run), "--dataset",
                             str(dataset_json), "--port", str(port), "--num-beams", "5"],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                pytest.fail(f"grace serve exited: {proc.stdout.read()[-2000:]}")
            try:
                if urllib.request.urlopen(f"{url}/healthz", timeout=1).status == 200:
                    break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail("grace serve did not answer /healthz within 120 s")
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_page_shows_every_retrievers_thumbnails_and_the_generated_identifier(server, tmp_path):
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 720})
        page.goto(server)
        page.wait_for_selector("#retrievers:has-text('generative/structured')")
        page.fill("#query", "a small red circle")
        page.click("#search")
        for name in ("generative/structured", "clip_faiss"):
            page.wait_for_selector(f".column[data-retriever='{name}'] .hit img", timeout=60_000)
            assert page.locator(f".column[data-retriever='{name}'] .hit").count() == 5
        # thumbnails really loaded (decoded pixels), and the generative column shows the trie path
        page.wait_for_function("() => [...document.images].length > 0 && "
                               "[...document.images].every(img => img.complete && img.naturalWidth > 0)")
        generative = page.locator(".column[data-retriever='generative/structured']")
        assert generative.locator(".identifier code").first.inner_text().startswith("<L0_")
        assert generative.locator(".trie .piece").count() >= 5
        assert page.locator("#error").inner_text() == ""
        page.fill("#query", "")
        page.click("#search")
        page.wait_for_selector("#error:has-text('empty query')")  # bad input is reported on the page
        page.fill("#query", "a small red circle")
        page.click("#search")
        page.wait_for_selector(".column[data-retriever='clip_faiss'] .hit img")
        shot = Path(os.environ.get("GRACE_SCREENSHOT") or tmp_path / "serve.png")
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
