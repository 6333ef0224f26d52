"""Driving the web UI in Playwright (sync API): what a user does, and reading what the page shows."""

from __future__ import annotations

import socket
from typing import Any


def free_port() -> int:
    """A port of 127.0.0.1 that nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def choose(page: Any, elem_id: str, option: str) -> None:
    """Pick ``option`` in the Gradio dropdown ``#elem_id``."""
    page.locator(f"#{elem_id}").get_by_role("combobox").click()
    page.get_by_role("option", name=option, exact=True).click()
    page.locator(f"#{elem_id}").get_by_role("combobox").press("Escape")


def history(page: Any, rows: int) -> list[str]:
    """Wait until the session history table has ``rows`` rows; :returns: their cells' texts, newest first."""
    from playwright.sync_api import expect

    locator = page.locator("#history tbody tr")
    expect(locator).to_have_count(rows)
    return [r.locator("td").all_inner_texts() for r in locator.all()]


def ask(page: Any, question: str, *, press_enter: bool = True) -> dict[str, Any]:
    """Type ``question``, submit it (Enter, or the Ask button), wait for the answer card to change.

    :returns: what the answer card shows: ``badge``, ``answer``, ``confidence``, ``why``, ``text``.
    """
    shown = page.locator("#answer-card .ecqa-card")
    before = shown.evaluate("el => el.outerHTML") if shown.count() else ""
    box = page.locator("#question").get_by_role("textbox")
    box.fill(question)
    if press_enter:
        box.press("Enter")
    else:
        page.locator("#ask").click()
    # The card itself, not the component: Gradio's progress overlay changes the component meanwhile.
    page.wait_for_function(
        "before => { const el = document.querySelector('#answer-card .ecqa-card'); "
        "return el !== null && el.outerHTML !== before; }",
        arg=before,
    )
    return read_card(page)


def read_card(page: Any) -> dict[str, Any]:
    card = page.locator("#answer-card")
    out: dict[str, Any] = {"text": card.inner_text()}
    badge = card.locator(".ecqa-badge")
    if badge.count():
        out["badge"] = badge.get_attribute("data-badge")
        out["badge_text"] = badge.inner_text()
        out["answer"] = card.locator(".ecqa-answer").inner_text()
        out["confidence"] = float(card.locator(".ecqa-confidence").inner_text())
        out["why"] = card.locator(".ecqa-why").inner_text()
    return out


def chart_stages(page: Any, row: str) -> dict[str, float]:
    """ms per stage of one bar of the latency chart (``measured`` or ``predicted``)."""
    segs = page.locator(f'#latency-chart [data-row="{row}"] .ecqa-seg')
    return {segs.nth(i).get_attribute("data-stage"): float(segs.nth(i).get_attribute("data-ms"))
            for i in range(segs.count())}
