"""Screenshots of a run's report page and the index, at desktop width, in headless Chromium (the README's pictures).

    python scripts/screenshot_reports.py RUNS_DIR RUN_NAME [--out docs/figures]

Writes ``report_index.png`` (the top of ``RUNS_DIR/index.html``) and ``report_run.png`` (the top of
``RUNS_DIR/RUN_NAME/report.html``, down to ``--height`` pixels). Run ``nrecur run`` (or ``nrecur report
RUNS_DIR``) first.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path)
    parser.add_argument("run")
    parser.add_argument("--out", type=Path, default=Path("docs/figures"))
    parser.add_argument("--width", type=int, default=1400)
    parser.add_argument("--height", type=int, default=2200, help="pixels of the run page shown")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("no chromium on PATH (scripts/install.sh installs Debian's package)")
    pages = {"report_index.png": args.runs / "index.html", "report_run.png": args.runs / args.run / "report.html"}
    for path in pages.values():
        if not path.is_file():
            sys.exit(f"{path} does not exist: run `nrecur report {args.runs}` first")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": args.width, "height": 900})
        for name, path in pages.items():
            page.goto(path.resolve().as_uri())
            height = min(page.evaluate("document.body.scrollHeight"), args.height)
            page.screenshot(path=str(args.out / name), full_page=True, clip={"x": 0, "y": 0, "width": args.width, "height": height})
            print(f"{args.out / name}: {args.width}×{height} px of {path}")
        browser.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
