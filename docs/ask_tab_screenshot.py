"""Take docs/ask-tab.png: ask a question in a running UI (`make run`) and screenshot the Ask tab.

    .venv/bin/python docs/ask_tab_screenshot.py [--url http://127.0.0.1:7860/] [--question Q]
        [--policy cascade] [--network wifi] [--no-cache] [--first Q ...] [--out docs/ask-tab.png]

It prints the time from pressing Enter to the answer card, next to the cascade's own total.
Needs Debian's chromium (`make chromium`).
"""

from __future__ import annotations

import argparse
import shutil
import time

from playwright.sync_api import sync_playwright


def choose(page, elem_id: str, option: str) -> None:  # type: ignore[no-untyped-def]
    page.locator(f"#{elem_id}").get_by_role("combobox").click()
    page.get_by_role("option", name=option, exact=True).click()
    page.locator(f"#{elem_id}").get_by_role("combobox").press("Escape")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://127.0.0.1:7860/")
    ap.add_argument("--question", default="What is the capital of the Yuan dynasty?")
    ap.add_argument("--policy", default="cascade")
    ap.add_argument("--network", default="wifi")
    ap.add_argument("--no-cache", action="store_true", help="untick the answer cache first")
    ap.add_argument("--first", nargs="*", default=[], help="questions to ask before (they fill the history)")
    ap.add_argument("--out", default="docs/ask-tab.png")
    args = ap.parse_args()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(120_000)
        page.goto(args.url)
        choose(page, "policy", args.policy)
        choose(page, "network", args.network)
        page.locator("#link").get_by_text("direct" if args.network == "none" else f"{args.network} link").wait_for()
        if args.no_cache:
            page.locator("#use-cache").get_by_role("checkbox").uncheck()
        box = page.locator("#question").get_by_role("textbox")
        for n, question in enumerate([*args.first, args.question], 1):
            box.fill(question)
            t0 = time.perf_counter()
            box.press("Enter")
            page.wait_for_function("n => document.querySelectorAll('#history tbody tr').length === n", arg=n)
            browser_ms = (time.perf_counter() - t0) * 1000
        total = page.locator('#latency-chart [data-row="measured"] .ecqa-total').inner_text()
        print(f"{page.locator('#answer-card .ecqa-badge').inner_text()}: "
              f"{page.locator('#answer-card .ecqa-answer').inner_text()!r} — Enter to answer card {browser_ms:.0f} ms, "
              f"cascade total {total}")
        for row in page.locator("#history tbody tr").all():  # every question asked: answer, tier, latency
            print(" | ".join(c.inner_text() for c in row.locator("td").all()))
        page.locator("#history").scroll_into_view_if_needed()
        page.screenshot(path=args.out, full_page=True)
        browser.close()


if __name__ == "__main__":
    main()
