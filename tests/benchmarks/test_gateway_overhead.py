"""`make bench-gateway`'s requests and report: dispatcher-sized answer requests from dev-a, the overhead paired request
by request, the ratios the after / before of the same cells, and the block rewritten in place from a saved run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import gateway_overhead
from benchmarks.gateway_overhead import END, SERVERS, START, markdown, payloads, ratios, summary
from cloud.wire import AnswerRequest
from reading.prompts import PASSAGE_CHARS

DEV_A = Path(__file__).resolve().parents[2] / "data" / "squad-v2-dev-a.json"


def test_requests_are_a_question_with_its_paragraph_and_the_next_two() -> None:
    out = payloads(DEV_A, 5)
    doc = json.loads(DEV_A.read_text())
    first = doc["data"][0]["paragraphs"][0]
    req = AnswerRequest.from_dict(out[0])
    assert len(out) == 5 and req.question == first["qas"][0]["question"] and len(req.passages) == 3
    assert req.passages[0].text == first["context"][:PASSAGE_CHARS] and req.max_tokens == 24
    assert all(len(p.text) <= PASSAGE_CHARS for p in req.passages)


def test_the_overhead_is_paired_request_by_request() -> None:
    ms = {"direct": [10.0, 20.0, 30.0], SERVERS[0]: [11.0, 22.0, 33.0], SERVERS[1]: [10.5, 20.5, 30.5]}
    cells = summary(ms)
    # Sorted latencies would pair 11 with 10 and so on too; the pairing shows on a shuffled one below.
    assert cells[SERVERS[0]]["overhead_p50"] == pytest.approx(2.0) and cells[SERVERS[1]]["overhead_p50"] == pytest.approx(0.5)
    shuffled = summary({"direct": [30.0, 10.0], SERVERS[0]: [31.0, 11.0], SERVERS[1]: [30.0, 10.0]})
    assert shuffled[SERVERS[0]]["overhead_p99"] == pytest.approx(1.0) and shuffled[SERVERS[1]]["overhead_mean"] == 0.0


def result() -> dict[str, Any]:
    def cell(scale: float) -> dict[str, float]:
        return {"n": 10, "p50": 5.0, "p99": 9.0, "overhead_p50": scale, "overhead_p99": 4 * scale, "overhead_mean": scale}

    loads = {load: {"direct": {"p50": 4.0, "p99": 8.0}, SERVERS[0]: cell(2.0 * k), SERVERS[1]: cell(1.0 * k)}
             for k, load in enumerate(gateway_overhead.LOADS, start=1)}
    res = {"when": "2026-01-01", "machine": "x86_64, 2 cores", "load": [0.1, 0.2], "n": 10, "fresh_n": 5,
           "loads": loads, "errors": {s: 0 for s in SERVERS}, "refusals": {}}
    res["ratios"] = ratios(res)
    return res


def test_ratios_divide_the_same_cell_of_the_two_servers() -> None:
    assert result()["ratios"] == {load: {"p50": 0.5, "p99": 0.5} for load in gateway_overhead.LOADS}


def test_the_block_has_every_row_and_is_rewritten_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    md = markdown(result(), "make bench-gateway")
    assert md.startswith(START) and md.rstrip().endswith(END)
    assert "| kept-alive connection | 4.00 · 8.00 | 5.00 · 9.00 | 5.00 · 9.00 | 2.00 · 8.00 | 1.00 · 4.00 | 0.50 · 0.50 |" in md
    assert md.count("| a new connection") == 1 and "Replies other than 200: 0." in md
    saved, bench_md = tmp_path / "gateway.json", tmp_path / "BENCHMARKS.md"
    saved.write_text(json.dumps(result()))
    bench_md.write_text(f"# Benchmarks\n\nbefore\n\n{START}\nstale block\n{END}\n\nafter\n")
    monkeypatch.setattr(sys, "argv", ["gateway_overhead", "--from-json", str(saved), "--benchmarks-md", str(bench_md)])
    gateway_overhead.main()
    text = bench_md.read_text()
    assert "stale block" not in text and text.count(START) == 1 and "before\n\n" in text and text.endswith("after\n")
    assert md.strip() in text
