"""What the Ask tab computes and shows next to an answer: latency per stage (predicted against
measured), the tier badge, the marked answer span, escaping. Pure functions: no model, no browser."""

from __future__ import annotations

import json
import re
from html import unescape as html_unescape
from typing import Any

import pytest

from app import ui_render as render
from app.ui_service import (
    STAGES,
    Answered,
    cloud_unreachable,
    measured_stages,
    predicted_stages,
)
from pipelines.policies import CascadePolicy, LatencyPolicy, Signals

# The latency model's state (LatencyModel.snapshot()): wifi-like link, 50 Mbit/s = 6250 bytes/ms.
SNAPSHOT = {"edge_ms": 900.0, "rtt_ms": 30.0, "bandwidth_mbit": 50.0, "cloud_base_ms": 600.0,
            "cloud_ms_per_token": 25.0, "expected_tokens": 8.0, "cloud_ms_per_char": 0.25}


def escalated(**over: Any) -> dict[str, Any]:
    """An AskResult.to_json() of a question the cascade sent to the cloud."""
    data = {
        "question": "Who founded the Brindlewick Orchestra?", "answer": "Amara Velt", "tier": "cloud", "confidence": 0.81,
        "passages": [{"id": "a", "title": "Brindlewick <Orchestra>", "text": "Founded by <b>Amara Velt</b> in 1887.",
                      "score": 0.88, "source": "/tmp/gradio/3f2a/orchestra.json", "answer_span": [14, 24]}],
        "timings_ms": {"embed": 10.0, "retrieve": 5.0, "prompt": 1.0, "generate": 100.0, "parse": 1.0, "seal": 2.0,
                       "network": 60.0, "cloud": 300.0, "open": 1.0, "total": 485.0},
        "bytes_up": 1500, "bytes_down": 500,
        "sent": {"question": "Who founded the Brindlewick Orchestra?", "passages": [{"title": "t", "text": "x"}]},
        "decision": {"route": "cloud", "reason": "confidence 0.20 < 0.50 → escalated", "confidence": 0.2,
                     "threshold": 0.5, "predicted_total_ms": 980.0, "predicted_bytes_up": 1500, "predicted_fresh_chars": 160,
                     "measured_total_ms": 485.0,
                     "degraded": False, "policy": "cascade"},
    }
    data.update(over)
    return data


def answered(data: dict[str, Any], budget_ms: float = 4000.0) -> Answered:
    predicted = None if data["tier"] == "cache" else predicted_stages(data, SNAPSHOT)
    return Answered(data, measured_stages(data, SNAPSHOT), predicted, cloud_unreachable(data.get("decision")),
                    budget_ms, "wifi", 0.0)


def test_measured_stages_sum_to_the_total_and_split_the_network_time_as_the_model_expects() -> None:
    m = measured_stages(escalated(), SNAPSHOT)
    assert list(m) == list(STAGES)
    assert sum(m.values()) == pytest.approx(485.0)
    # One way: half the RTT plus the payload over the bandwidth — 15.24 ms up, 15.08 ms down.
    share_up = (15 + 1500 / 6250) / (30 + 2000 / 6250)
    assert m["network up"] == pytest.approx(60 * share_up + 2.0)  # + sealing
    assert m["network down"] == pytest.approx(60 * (1 - share_up) + 1.0)  # + opening
    assert (m["embed"], m["retrieve"], m["edge generate"], m["cloud"]) == (10.0, 5.0, 102.0, 300.0)
    assert m["other"] == pytest.approx(485.0 - 10 - 5 - 102 - 300 - 63)


def test_predicted_stages_add_up_to_the_policys_prediction() -> None:
    p = predicted_stages(escalated(), SNAPSHOT)  # the request size the prediction assumed
    assert sum(p.values()) == pytest.approx(980.0)
    assert p["cloud"] == 600.0 + 0.25 * 160 + 25.0 * 8.0  # fixed + the passages new to the cloud + decode
    assert p["network up"] == pytest.approx(15 + 1500 / 6250) and p["network down"] == pytest.approx(15 + 400 / 6250)
    assert (p["embed"], p["retrieve"]) == (10.0, 5.0) and p["edge generate"] > 0 and p["other"] == 0.0


def test_cloud_unreachable_follows_the_cascade_and_the_policies_reasons() -> None:
    wanted_cloud = Signals(0.2, 0.1, 0.5, 900.0, 4000.0, cloud_available=False)  # breaker open
    assert cloud_unreachable(CascadePolicy(0.5).decide(wanted_cloud).as_dict())
    assert cloud_unreachable(LatencyPolicy(0.5).decide(wanted_cloud).as_dict())
    confident = Signals(0.9, 0.1, 0.5, 900.0, 4000.0, cloud_available=False)
    assert not cloud_unreachable(CascadePolicy(0.5).decide(confident).as_dict())  # the edge answer was wanted
    assert not cloud_unreachable(escalated()["decision"])
    assert cloud_unreachable({**escalated()["decision"], "degraded": True, "route": "edge"})
    assert not cloud_unreachable(None)


def test_answer_card_badges() -> None:
    assert 'data-badge="cloud"' in render.answer_card(answered(escalated()))
    degraded = answered(escalated(tier="edge", decision={**escalated()["decision"], "degraded": True}))
    card = render.answer_card(degraded)
    assert 'data-badge="degraded"' in card and "cloud unreachable" in card
    abstained = render.answer_card(answered(escalated(tier="abstain", answer="")))
    assert 'data-badge="abstained"' in abstained and "no answer in the collection" in abstained


def test_passages_are_escaped_and_the_answer_span_marked() -> None:
    html = render.passages_html(answered(escalated()))
    assert "Founded by &lt;b&gt;<mark>Amara Velt</mark>&lt;/b&gt; in 1887." in html  # text[14:24], markup escaped
    assert "<b>Amara" not in html and "Brindlewick &lt;Orchestra&gt;" in html
    assert ">orchestra.json<" in html  # the file's name, not the upload's temporary folder
    # An abstention: the edge's withheld answer is not marked.
    assert "<mark>" not in render.passages_html(answered(escalated(tier="abstain", answer="")))


def test_sent_shows_what_left_the_device_and_its_size() -> None:
    html = render.sent_html(answered(escalated()))
    assert "1,500 bytes up" in html and "500 bytes down" in html and "Brindlewick Orchestra?" in html
    assert "nothing left the device: answered on the edge" in render.sent_html(
        answered(escalated(tier="edge", sent={}, bytes_up=0, bytes_down=0)))


def test_latency_chart_has_both_bars_and_tmax_on_scale_only_when_near() -> None:
    near = render.latency_chart(answered(escalated(), budget_ms=1000.0))
    assert 'data-row="predicted"' in near and 'data-row="measured"' in near and "ecqa-tmax" in near
    predicted_bar = near.split('data-row="predicted"')[1].split('data-row="measured"')[0]
    widths = [float(w) for w in re.findall(r"width:([0-9.]+)%", predicted_bar)]
    assert sum(widths) == pytest.approx(98.0, abs=0.01)  # 980 ms on a 1000 ms scale
    far = render.latency_chart(answered(escalated(), budget_ms=30000.0))
    assert "ecqa-tmax" not in far and "Tmax 30000 ms (off the scale)" in far
    cached = escalated(tier="cache", timings_ms={"total": 1.5}, decision={**escalated()["decision"], "route": "cache"})
    assert 'data-row="predicted"' not in render.latency_chart(answered(cached))


def test_history_table_is_newest_first_and_escaped() -> None:
    rows = [render.history_row(answered(escalated(question="<i>second</i>"))), render.history_row(answered(escalated()))]
    html = render.history_table(rows)
    assert html.index("&lt;i&gt;second") < html.index("Who founded") and "<i>second" not in html
    assert "no questions yet" in render.history_table([])


def test_the_chart_says_where_each_passage_kv_state_came_from() -> None:
    data = escalated(tier="edge", usage={"prefilled_tokens": 61},
                     timings_ms={**escalated()["timings_ms"], "restore": 3.2, "prefill": 240.0, "decode": 90.0})
    data["passages"] = [dict(data["passages"][0], kv=k) for k in ("hit", "miss", "hit")]
    html = render.latency_chart(answered(data))
    assert 'data-kv="hit,miss,hit"' in html
    text = re.sub(r"<[^>]+>", "", html)
    assert "edge KV states: [1] hit · [2] miss · [3] hit — restore 3 ms, prefill 240 ms (61 tokens), decode 90 ms" in text


def test_no_kv_line_for_the_joint_reading() -> None:
    assert "ecqa-kv" not in render.latency_chart(answered(escalated()))


def test_dispatch_line_names_the_worker_or_the_redirection_and_its_cost() -> None:
    assert render.dispatch_line({}) == ""  # the edge read in this process: nothing to say
    served = render.dispatch_line({"dispatch": {"policy": "load-aware", "worker": "edge-<2>", "worker_model": "q.gguf",
                                                "attempts": [{"worker": "edge-1", "outcome": "full"},
                                                             {"worker": "edge-<2>", "outcome": "served"}]}})
    assert 'data-worker="edge-&lt;2&gt;"' in served and "read by edge worker <b>edge-&lt;2&gt;</b> (q.gguf)" in served
    assert "edge-1 full" in served and "served" not in served.split("load-aware", 1)[1]
    moved = render.dispatch_line({"dispatch": {"policy": "random", "worker": None, "redirected": True,
                                               "cloud_cost_usd": 0.000126, "attempts": [{"worker": "a", "outcome": "full"}]}})
    assert 'data-redirected="1"' in moved and "a full → redirected to the cloud · cloud cost $0.000126" in moved


def test_workers_panel_shows_each_load_against_its_limit() -> None:
    assert render.workers_html(None) == ""
    assert 'data-workers="0"' in render.workers_html([]) and "ecqa edge serve" in render.workers_html([])
    html = render.workers_html([{"id": "a", "model": "m", "in_flight": 3, "limit": 3, "capacity_tps": 210.4,
                                 "served": 7, "rejected": 2, "bad_replies": 5},
                                {"id": "b", "model": "n", "in_flight": 0, "limit": 2, "capacity_tps": 90.0, "served": 0,
                                 "rejected": 0, "bad_replies": 0}])
    assert "<th>bad replies</th>" in html and '>2</td><td class="ecqa-num">5</td></tr>' in html
    assert 'data-workers="2"' in html and 'data-worker="a" data-in-flight="3"' in html
    assert "width:100%" in html and "width:0%" in html and ">3 / 3<" in html and ">210<" in html


def redacted(**over: Any) -> dict[str, Any]:
    """An escalated question that carried personal data, as the cascade gives it to the UI: the values are
    placeholders in what was sent, only their counts come with it, and the answer has them put back."""
    question = "Did <PERSON_1> (<EMAIL_1>) pay with card <CARD_1>?"
    sent = {"question": question, "passages": [
        {"title": "Payments & <refunds>", "text": "<PERSON_1> paid <script>alert(1)</script> & <EMAIL_1> wrote."}]}
    data = {"question": "Did Jane Roe (jane.roe@example.org) pay with card 4111 1111 1111 1111?", "answer": "Jane Roe",
            "sent": sent, "redactions": {"card": 1, "email": 1, "name": 1}, "restored": True,
            "pii_undetected": ["place", "organization"]}
    return escalated(**{**data, **over})


def test_sent_marks_each_placeholder_and_keeps_the_rest_escaped() -> None:
    html = render.sent_html(answered(redacted()))
    pre = html.split('<pre class="ecqa-sent">', 1)[1].split("</pre>", 1)[0]
    marks = re.findall(r'<mark class="ecqa-pii">(.*?)</mark>', pre)
    assert marks == ["&lt;PERSON_1&gt;", "&lt;EMAIL_1&gt;", "&lt;CARD_1&gt;", "&lt;PERSON_1&gt;", "&lt;EMAIL_1&gt;"]
    # The passage's own markup stays text: only our <mark> tags are tags.
    assert set(re.findall(r"</?([a-z]+)", pre)) == {"mark"}
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; " in pre and "Payments &amp; &lt;refunds&gt;" in pre
    assert "&amp;lt;" not in pre  # escaped once, not twice
    # Take the tags out and unescape: exactly the JSON that was sent.
    text = html_unescape(re.sub(r"</?mark[^>]*>", "", pre))
    assert json.loads(text) == redacted()["sent"]


def test_sent_counts_each_kind_removed_and_says_what_was_not_looked_for() -> None:
    html = render.sent_html(answered(redacted()))
    line = re.search(r'<div class="ecqa-redactions" data-removed="3">(.*?)</div>', html)
    assert line, html
    assert line.group(1) == ("personal data: 1 name, 1 email, 1 card removed · answer restored · "
                             "places, organisations not looked for (no verified NER model)")
    two = render.sent_html(answered(redacted(redactions={"name": 2, "phone": 3}, restored=False, pii_undetected=[])))
    assert ">personal data: 2 names, 3 phone numbers removed</div>" in two and 'data-removed="5"' in two
    clean = render.sent_html(answered(escalated()))  # nothing to redact: no placeholder, no mark
    assert 'data-removed="0">personal data: no personal data found</div>' in clean and "<mark" not in clean
    # Nothing sent: no count line either.
    assert "ecqa-redactions" not in render.sent_html(answered(escalated(tier="edge", sent={}, bytes_up=0, bytes_down=0)))


def test_no_personal_value_reaches_the_sent_panel() -> None:
    html = render.sent_html(answered(redacted()))
    for value in ("Jane Roe", "jane.roe@example.org", "4111 1111 1111 1111", "4111"):
        assert value not in html


def test_answer_card_flags_a_restored_answer() -> None:
    card = render.answer_card(answered(redacted()))
    flag = re.search(r'<span class="ecqa-restored"[^>]*>(.*?)</span>', card)
    assert flag and flag.group(1) == "restored: personal data put back"
    assert '<div class="ecqa-answer">Jane Roe</div>' in card
    assert "ecqa-restored" not in render.answer_card(answered(redacted(restored=False)))
    assert "ecqa-restored" not in render.answer_card(answered(escalated()))  # a result of before the redaction
