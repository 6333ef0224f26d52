"""The Evaluation tab in real Chromium: a small evaluation runs in the UI process against the real
edge and the real gateway, then its tables and plots show, and they are there again on reopening."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.network]


@pytest.fixture
def eval_dir(ui_server: Any, tmp_path: Path) -> Iterator[Path]:
    """The UI's report folder, pointed at this test's temp folder (and put back after)."""
    service = ui_server.service
    before = service.settings
    service.settings = before.model_copy(update={"eval_dir": tmp_path / "eval"})
    yield tmp_path / "eval"
    service.settings = service.settings.model_copy(update={"eval_dir": before.eval_dir})


def _open_tab(page: Any) -> None:
    page.get_by_role("tab", name="Evaluation").click()
    page.locator("#eval-run").wait_for()


def _upload(page: Any, path: Path) -> None:
    """Upload ``path`` with the tab's button: the data box then names the kept copy."""
    page.locator("#eval-upload input[type=file], input[type=file]").first.set_input_files(str(path))
    expect(page.locator("#eval-data").get_by_role("textbox")).to_have_value(
        re.compile(rf"uploads/{re.escape(path.name)}$"), timeout=30_000)


def test_small_eval_shows_tables_and_plots_and_reopens_on_them(page: Any, eval_dir: Path, unseen_squad: Path) -> None:
    _open_tab(page)
    expect(page.locator("#eval-report")).to_contain_text("No saved report")
    _upload(page, unseen_squad)
    page.locator("#eval-n").locator("input").first.fill("2")
    page.locator("#eval-run").click()
    expect(page.locator("#eval-status")).to_contain_text("2 questions evaluated", timeout=300_000)
    report = page.locator("#eval-report")
    expect(report).to_contain_text("Table 1")
    expect(report).to_contain_text("always no-answer (baseline)")
    table = report.locator("table").first
    for name in ("edge", "cloud", "cascade"):
        expect(table).to_contain_text(name)
    expect(page.locator("#eval-plots img")).to_have_count(5, timeout=30_000)

    saved = json.loads((eval_dir / "ui" / "report.json").read_text())
    assert saved["n"] == 2 and set(saved["policies"]) == {"edge", "cloud", "cascade"}
    assert saved["policies"]["cloud"]["cloud_call_rate"] == 1.0
    f1 = f"{saved['policies']['cloud']['f1']:.1f}"
    expect(report).to_contain_text(f1)

    _plots_rendered(page)

    page.reload()  # a new visit opens on the latest saved report
    _open_tab(page)
    expect(page.locator("#eval-report")).to_contain_text("Table 2")
    expect(page.locator("#eval-plots img")).to_have_count(5, timeout=30_000)
    _plots_rendered(page)


def _plots_rendered(page: Any) -> None:
    """Every plot is a decoded PNG of real size, not a broken or empty image."""
    page.locator("#eval-plots").scroll_into_view_if_needed()
    page.wait_for_function("() => [...document.querySelectorAll('#eval-plots img')].every("
                           "i => i.complete && i.naturalWidth > 300 && i.naturalHeight > 200)", timeout=30_000)


def test_bad_eval_input_is_a_message(page: Any, eval_dir: Path, tmp_path: Path) -> None:
    _open_tab(page)
    bad = tmp_path / "notes.json"
    bad.write_text('{"hello": "world"}')
    _upload(page, bad)
    page.locator("#eval-run").click()
    expect(page.locator("#eval-status")).to_contain_text("SQuAD v2", timeout=60_000)
    expect(page.locator("#eval-status")).to_contain_text("⚠️")
    assert not (eval_dir / "ui" / "report.json").exists()
    # A path on the server outside the data and uploads folders is refused (one message whether it exists
    # or not: tests/app/test_ui_eval_requests.py).
    page.locator("#eval-data").get_by_role("textbox").fill("/etc/passwd")
    page.locator("#eval-run").click()
    expect(page.locator("#eval-status")).to_contain_text("cannot use this file", timeout=30_000)
    assert not (eval_dir / "ui").exists() or not any((eval_dir / "ui").iterdir())  # nothing left behind
