"""The web UI in headless Chromium: the real UI server, the real SLM on the edge, the real gateway
with Qwen2.5-Coder-1.5B behind mutual TLS (fixtures in conftest.py). A screenshot per test lands in
test-artifacts/screenshots/."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from ui_helpers import ask, chart_stages, choose, history

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.network]


def test_ask_shows_answer_badge_passages_and_latency_chart(page: Any, ui_server: Any) -> None:
    choose(page, "policy", "edge")
    card = ask(page, "What is the capital of Zorvath Island?")
    assert card["badge"] == "edge" and card["badge_text"] == "edge"
    assert "Miret" in card["answer"]
    assert 0.0 <= card["confidence"] <= 1.0 and f"confidence {card['confidence']:.2f}" in card["text"]

    # Provenance: the passage that holds the answer comes first, with its title, score and the span marked.
    first = page.locator("#passages li.ecqa-passage").first
    assert "Zorvath Island" in first.locator(".ecqa-ptitle").inner_text()
    assert float(first.get_attribute("data-score")) > 0
    assert "Miret" in first.locator("mark").inner_text()
    assert page.locator("#passages li.ecqa-passage").count() == 3  # top-k

    # The chart: measured stages sum to the total the card shows; the prediction is the escalation's.
    measured = chart_stages(page, "measured")
    assert set(measured) >= {"embed", "retrieve", "edge generate"}
    total = float(page.locator('#latency-chart [data-row="measured"] .ecqa-total').inner_text().split()[0])
    assert sum(measured.values()) == pytest.approx(total, abs=1.0)
    predicted = chart_stages(page, "predicted")
    assert predicted["cloud"] > 0 and predicted["network up"] > 0 and predicted["edge generate"] > 0
    p_total = float(page.locator('#latency-chart [data-row="predicted"] .ecqa-total').inner_text().split()[0])
    assert sum(predicted.values()) == pytest.approx(p_total, abs=1.0)
    why = re.fullmatch(r"why: edge policy: never escalates; answer [01]\.\d\d ≥ 0\.00 → edge answer kept; "
                       r"predicted (\d+) ms if escalated, (within|over) budget (\d+) ms", card["why"])
    assert why, card["why"]
    assert abs(int(why.group(1)) - p_total) <= 1  # both rounded to whole ms from the same prediction
    assert int(why.group(3)) == ui_server.service.settings.budget_ms  # the configured Tmax, the slider's start
    assert why.group(2) == ("within" if int(why.group(1)) <= int(why.group(3)) else "over")
    assert page.locator("#latency-chart .ecqa-seg").first.is_visible()
    # Per-passage reading: where each passage's KV state came from (the store, or prefilled and stored), for each
    # passage the edge read: those the calibration's read plan keeps of the retrieved ones, by their scores.
    from pipelines.calibration import read_plan

    scores = [float(li.get_attribute("data-score")) for li in page.locator("#passages li.ecqa-passage").all()]
    read = read_plan(ui_server.service.settings.calibration_path).kept(scores)
    kv = page.locator("#latency-chart .ecqa-kv")
    sources = kv.get_attribute("data-kv").split(",")
    assert len(sources) == read and set(sources) <= {"hit", "miss", "live"}, (sources, scores)
    marks = " · ".join(rf"\[{i}\] (hit|miss|live)" for i in range(1, read + 1))
    assert re.search(rf"edge KV states: {marks} — restore \d+ ms, prefill \d+ ms \(\d+ tokens\)", kv.inner_text())
    assert "nothing left the device" in page.locator("#sent").inner_text()
    assert history(page, 1)[0][:3] == ["What is the capital of Zorvath Island?", card["answer"], "edge"]

    # The same question again: the answer cache, with the Ask button this time.
    again = ask(page, "What is the capital of Zorvath Island?", press_enter=False)
    assert again["badge"] == "cache" and again["answer"] == card["answer"]
    assert "cached answer of" in again["why"]
    assert page.locator('#latency-chart [data-row="predicted"]').count() == 0
    rows = history(page, 2)
    assert rows[0][2] == "cache" and rows[1][2] == "edge"

    # Without the cache the edge answers again (greedy decoding: the same answer).
    page.locator("#use-cache").get_by_role("checkbox").uncheck()
    fresh = ask(page, "What is the capital of Zorvath Island?")
    assert fresh["badge"] == "edge" and fresh["answer"] == card["answer"]
    assert [r[2] for r in history(page, 3)] == ["edge", "cache", "edge"]


def test_cloud_policy_over_wifi_shows_cloud_badge_and_what_was_sent(page: Any, ui_server: Any) -> None:
    choose(page, "network", "wifi")
    page.locator("#link").get_by_text("wifi link (30 ms RTT, 50 Mbit/s)").wait_for()
    try:
        choose(page, "policy", "cloud")
        card = ask(page, "Who founded the Brindlewick Orchestra?")
        assert card["badge"] == "cloud"
        assert card["why"].startswith("why: cloud policy: always escalates → escalated")
        sent = page.locator("#sent")
        payload = json.loads(sent.locator("pre.ecqa-sent").inner_text())
        assert payload["question"] == "Who founded the Brindlewick Orchestra?"
        # The founder's name stays on the device (pii "redact", the default): a placeholder went up instead.
        assert any(re.search(r"the cellist <PERSON_\d+>\.", p["text"]) for p in payload["passages"])
        assert "Amara Velt" not in sent.inner_text()
        size = sent.locator(".ecqa-sent-size").inner_text()
        bytes_up = int(size.split("sealed envelope ")[1].split(" bytes up")[0].replace(",", ""))
        assert 300 < bytes_up < len(json.dumps(payload)) + 200  # zstd + AES-GCM + framing
        measured = chart_stages(page, "measured")
        # Over the emulated wifi link a fresh TLS connection alone costs 3 round trips of 30 ms.
        assert measured["network up"] + measured["network down"] >= 85.0
        assert measured["cloud"] > 0 and "edge generate" not in measured  # the cloud policy skips the SLM
    finally:
        choose(page, "network", "none")
        page.locator("#link").get_by_text("direct → gateway").wait_for()
    assert ui_server.service.network == "none"


def test_cloud_down_shows_degraded_badge_with_the_edge_answer(page: Any, ui_server: Any) -> None:
    cloud = ui_server.cloud
    cloud.stop()
    try:
        choose(page, "policy", "cloud")
        card = ask(page, "Which river is fed by meltwater from the Kelvane glacier?")
        assert card["badge"] == "degraded" and "cloud unreachable" in card["text"]
        assert "cloud failed" in card["why"] and "edge answer, degraded" in card["why"]
        # The edge answered instead, from the passages it retrieved.
        assert page.locator("#passages li.ecqa-passage").first.locator(".ecqa-ptitle").inner_text() == "Zorvath Island"
        assert "edge generate" in chart_stages(page, "measured")
        assert "no reply came back" in page.locator("#sent").inner_text()
        assert history(page, 1)[0][2] == "degraded"
    finally:
        cloud.start()  # same port: the UI's cloud client reaches it again


def test_personal_data_leaves_as_placeholders_and_comes_back_in_the_answer(page: Any, placeholder_cloud: Any) -> None:
    question = "Did Jane Roe (jane.roe@example.org) pay with card 4111 1111 1111 1111?"
    values = ("Jane Roe", "jane.roe@example.org", "4111 1111 1111 1111")
    choose(page, "policy", "cloud")
    card = ask(page, question)
    assert card["badge"] == "cloud"

    # What was sent: placeholders, each marked, and not one of the values.
    sent = page.locator("#sent")
    shown = sent.inner_text()
    assert not [v for v in values if v in shown] and "4111" not in shown
    payload = json.loads(sent.locator("pre.ecqa-sent").inner_text())
    assert payload["question"] == "Did <PERSON_1> (<EMAIL_1>) pay with card <CARD_1>?"
    marks = sent.locator("pre.ecqa-sent mark.ecqa-pii").all_inner_texts()
    assert marks[:3] == ["<PERSON_1>", "<EMAIL_1>", "<CARD_1>"]  # the question comes first in the payload
    in_payload = re.findall(r"<[A-Z]+_\d+>", json.dumps(payload, ensure_ascii=False))
    assert sorted(marks) == sorted(in_payload)  # every placeholder marked, nothing else
    # The count line: distinct values removed per kind, as many as distinct placeholders of that kind.
    names = len({m for m in marks if m.startswith("<PERSON_")})
    line = sent.locator(".ecqa-redactions").inner_text()
    assert line.startswith(f"personal data: {names} name{'s' if names > 1 else ''}, 1 email, 1 card removed · "
                           "answer restored · places, organisations not looked for"), line
    assert sent.locator(".ecqa-redactions").get_attribute("data-removed") == str(names + 2)

    # The cloud answered "<PERSON_1>": no call it got held a value; the value is back on the device.
    assert placeholder_cloud.answer_calls and not [v for c in placeholder_cloud.calls for v in values if v in json.dumps(c)]
    assert card["answer"] == "Jane Roe"
    flag = page.locator("#answer-card .ecqa-restored")
    assert flag.inner_text() == "restored: personal data put back" and flag.is_visible()
    assert history(page, 1)[0][:3] == [question, "Jane Roe", "cloud"]


def test_empty_and_oversized_questions_show_a_message(page: Any) -> None:
    ask(page, "   ", press_enter=False)
    alert = page.locator("#answer-card [role=alert]")
    assert alert.inner_text() == "⚠ the question is empty — type a question"
    ask(page, "why " * 300)
    assert alert.inner_text() == "⚠ the question has 1199 characters, over 1000 — shorten it"
    assert history(page, 0) == [] and "Traceback" not in page.content()
    # The page still answers afterwards.
    choose(page, "policy", "edge")
    assert ask(page, "In which concert hall does the Brindlewick Orchestra perform?")["badge"] == "edge"


def test_index_tab_adds_an_upload_and_a_bad_file_changes_nothing(page: Any, tmp_path: Path) -> None:
    page.get_by_role("tab", name="Index").click()
    stats = page.locator("#index-stats")
    stats.locator('[data-field="passages"]').wait_for()
    before = int(stats.locator('[data-field="passages"] td').nth(1).inner_text().replace(",", ""))
    assert before >= 9

    bad = tmp_path / "broken.json"
    bad.write_text('{"data": [')
    page.locator("#index-files input[type=file]").set_input_files(str(bad))
    page.locator("#index-build").click()
    alert = page.locator("#index-message [role=alert]")
    alert.wait_for()
    assert "broken.json" in alert.inner_text() and " — " in alert.inner_text()
    assert int(stats.locator('[data-field="passages"] td').nth(1).inner_text().replace(",", "")) == before

    page.reload()  # a fresh session: nothing uploaded
    page.get_by_role("tab", name="Index").click()
    note = tmp_path / "kettles.md"
    note.write_text("# Kettles\n\nThe Quorble kettle whistles in B flat when the water boils.\n")
    page.locator("#index-files input[type=file]").set_input_files(str(note))
    page.locator("#index-build").click()
    page.locator("#index-message .ecqa-built").wait_for()
    assert f"indexed {before + 1} passages" in page.locator("#index-message").inner_text()
    assert stats.locator('[data-field="passages"] td').nth(1).inner_text() == f"{before + 1:,}"
    assert "kettles.md (text, 1 passages)" in stats.inner_text()
