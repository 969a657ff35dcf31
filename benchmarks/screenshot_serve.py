"""Screenshot of the `grace serve` page for the README: serve a run, search in headless chromium, save a PNG.

    python benchmarks/screenshot_serve.py --run runs/demo --query "red heart" --out docs/images/serve.png
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_serve import free_port, start_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True)
    parser.add_argument("--dataset", type=Path, default=None)
    parser.add_argument("--query", default="red heart")
    parser.add_argument("--k", type=int, default=5)
    parser.add_argument("--num-beams", type=int, default=10)
    parser.add_argument("--out", type=Path, default=Path("docs/images/serve.png"))
    parser.add_argument("--width", type=int, default=1280)
    args = parser.parse_args()
    args.max_batch, args.window_ms = 32, 5.0
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        raise SystemExit("no chromium on PATH (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    port = free_port()
    proc = start_server(args, port)
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=chromium, headless=True, args=["--no-sandbox"])
            page = browser.new_page(viewport={"width": args.width, "height": 800})
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector("#retrievers:has-text('loaded')")
            page.fill("#query", args.query)
            page.fill("#k", str(args.k))
            page.click("#search")
            page.wait_for_selector(".column .hit img")
            page.wait_for_function("() => [...document.images].every(img => img.complete && img.naturalWidth > 0)")
            args.out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.out), full_page=True)
            browser.close()
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
