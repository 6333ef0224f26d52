"""`make bench-server`'s request and report: the 400 body is refused only after it is parsed whole, the ratios are
the after / before of the same cells, and the block is rewritten in place from a saved run."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks import server_overhead
from benchmarks.server_overhead import (
    END,
    SERVERS,
    START,
    markdown,
    ratios,
    read_400_body,
)
from edge.worker import MAX_BODY_BYTES, check_read_request


def test_the_read_body_is_dispatcher_sized_and_refused_only_at_its_last_field() -> None:
    body = read_400_body()
    payload = json.loads(body)
    assert 4_000 < len(body) < MAX_BODY_BYTES and len(payload["documents"]) == 3
    with pytest.raises(ValueError, match="bad documents"):
        check_read_request(payload)
    payload["documents"][-1]["score"] = 0.8
    assert check_read_request(payload)[0] == "Who was the leader of the Normans?"  # only that field was wrong


def result() -> dict[str, Any]:
    cell = {"n": 10, "errors": 0, "rps": 100.0, "mean": 1.0}
    keys = ("health/sequential", "health/concurrent", "read_400/sequential", "read_400/concurrent",
            "health/new connection")
    scale = dict(zip(SERVERS, (40.0, 0.5, 1.0, 2.0), strict=True))  # before, before + NODELAY, after, after + mTLS
    res = {"when": "2026-01-01", "machine": "x86_64, 2 cores", "load": [0.1, 0.2], "n": 10, "clients": 8,
           "fresh_n": 5, "rounds": 1,
           "servers": {s: {k: {**cell, "p50": k_ * scale[s], "p99": 2 * k_ * scale[s]}
                           for k_, k in enumerate(keys, start=1)} for s in SERVERS}}
    res["ratios"] = ratios(res)
    return res


def test_ratios_divide_the_same_cell_of_two_servers() -> None:
    r = result()["ratios"]["read_400/sequential"]
    assert r["after_over_before_p50"] == pytest.approx(1 / 40) and r["after_over_before_p99"] == pytest.approx(1 / 40)
    assert r["after_over_nodelay_p50"] == pytest.approx(2.0) and r["tls_over_plain_p99"] == pytest.approx(2.0)


def test_the_block_has_every_row_and_is_rewritten_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    md = markdown(result(), "make bench-server")
    assert md.startswith(START) and md.rstrip().endswith(END)
    assert md.count("| GET /v1/health |") == 4 and md.count("| POST /v1/read") == 3  # 3 latency rows + 1 throughput
    assert "| 0.025 · 0.025 |" in md  # after / before below 0.1 keeps 3 decimals
    saved, bench_md = tmp_path / "server.json", tmp_path / "BENCHMARKS.md"
    saved.write_text(json.dumps(result()))
    bench_md.write_text(f"# Benchmarks\n\nbefore\n\n{START}\nold\n{END}\n\nafter\n")
    monkeypatch.setattr(sys, "argv", ["server_overhead", "--from-json", str(saved), "--benchmarks-md", str(bench_md)])
    server_overhead.main()
    text = bench_md.read_text()
    assert "old" not in text and text.count(START) == 1 and "before\n\n" in text and text.endswith("after\n")
    assert md.strip() in text
