"""The virtual-time dispatch simulator: hand-checked cases, conservation, the workload, the CLI."""

from __future__ import annotations

import itertools
import json
import random
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks import dispatch_sim
from benchmarks.dispatch_sim import (END, GEN_TOKENS, HEADING, SIZE_WEIGHTS, SIZES, START, EdgeProfile, burst_windows,
                                     bursty_workload, eight_edges, load_profiles, main, offered_load, run_all,
                                     simulate, slowed_edges)
from pipelines.dispatch_policies import POLICIES, RandomPolicy, WeightedPolicy, WorkerLoad

PRICES = (0.0001, 0.0004)  # USD per 1000 prompt / completion tokens, the settings' defaults

# Four workers as measured-like on the 2-core VM (tok/s of prompt reading and generation).
EXAMPLE = [
    {"id": "qwen05-t2", "model": "Qwen2.5-0.5B", "threads": 2, "prompt_tps": 210, "gen_tps": 42, "overhead_ms": 150,
     "concurrency": 1, "queue": 2},
    {"id": "smollm-t2", "model": "SmolLM2-135M", "threads": 2, "prompt_tps": 900, "gen_tps": 150, "overhead_ms": 80,
     "concurrency": 1, "queue": 2},
    {"id": "gemma-t1", "model": "gemma-3-270m", "threads": 1, "prompt_tps": 300, "gen_tps": 50, "overhead_ms": 100,
     "concurrency": 1, "queue": 2},
    {"id": "qwen15-t1", "model": "Qwen2.5-1.5B", "threads": 1, "prompt_tps": 35, "gen_tps": 7.5, "overhead_ms": 300,
     "concurrency": 1, "queue": 2},
]


def edge(id: str = "e", concurrency: int = 1, queue: int = 0, prompt_tps: float = 100.0) -> EdgeProfile:
    # 100 prompt tokens take 1 s and the 8 generated tokens 1 s: a 100-token request is served in 2 s.
    return EdgeProfile(id, "m", 1, prompt_tps, 8.0, 0.0, concurrency, queue)


def on_cores(id: str, cpus: tuple[int, ...], threads: int = 1) -> EdgeProfile:
    # 100 prompt tokens take 0.5 s and the 8 generated tokens 0.5 s: a 100-token request takes 1 s alone.
    return EdgeProfile(id, "m", threads, 200.0, 16.0, 0.0, 1, 0, cpus)


@pytest.fixture
def profiles_file(tmp_path: Path) -> Path:
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps(EXAMPLE))
    return path


@pytest.fixture
def fleet(profiles_file: Path) -> list[EdgeProfile]:
    return eight_edges(load_profiles(profiles_file))


def test_profile_service_capacity_and_limit() -> None:
    p = EdgeProfile("a", "m", 2, 200.0, 40.0, 150.0, 2, 3)
    assert p.service_s(100, 8) == pytest.approx(0.15 + 0.5 + 0.2)
    assert p.capacity == 400.0
    assert p.limit == 5


def test_cpus_are_optional_in_the_profiles_file(tmp_path: Path) -> None:
    path = tmp_path / "profiles.json"
    path.write_text(json.dumps([EXAMPLE[0], {**EXAMPLE[1], "cpus": [1, 0]}, {**EXAMPLE[2], "cpus": []}]))
    assert [p.cpus for p in load_profiles(path)] == [(), (1, 0), ()]


def test_eight_edges_cycle_the_measured_workers(fleet: list[EdgeProfile]) -> None:
    assert [p.id for p in fleet] == [f"edge-{i}" for i in range(1, 9)]
    assert [p.model for p in fleet] == [e["model"] for e in EXAMPLE] * 2
    assert fleet[3].prompt_tps == 35 and fleet[7].queue == 2


@pytest.mark.parametrize("policy", list(POLICIES))
def test_one_edge_three_simultaneous_arrivals(policy: str) -> None:
    arrivals = [(0.0, 100)] * 3  # one runs, one queues, one finds no room
    r = simulate([edge(queue=1)], arrivals, policy, "reject", 0, *PRICES)
    assert (r.total, r.processed, r.rejected, r.redirected) == (3, 2, 1, 0)
    # Two latencies a <= b with p50 = (a+b)/2 = 3 and p95 = a + 0.95(b-a) = 3.9 are exactly 2 s and 4 s:
    # the first request's service time, the second waits for it and is served.
    assert r.latency_p50_s == pytest.approx(3.0)
    assert r.latency_p95_s == pytest.approx(3.9)
    assert r.per_edge == {"e": 2}
    c = simulate([edge(queue=1)], arrivals, policy, "cloud", 0, *PRICES)
    assert (c.processed, c.rejected, c.redirected) == (2, 0, 1)
    assert c.cloud_cost_usd == pytest.approx((100 * PRICES[0] + GEN_TOKENS * PRICES[1]) / 1000)


def test_cloud_cost_is_priced_per_redirected_request() -> None:
    # One slot, no queue: the 50-token request runs, the 500- and 300-token ones go to the cloud.
    r = simulate([edge()], [(0.0, 50), (0.1, 500), (0.2, 300)], "load-aware", "cloud", 0, 2.0, 5.0)
    assert r.redirected == 2
    assert r.cloud_cost_usd == pytest.approx((800 * 2.0 + 2 * GEN_TOKENS * 5.0) / 1000)


def test_load_aware_takes_the_idle_edge_where_random_may_pick_the_busy_one() -> None:
    edges = [edge("a"), edge("b")]
    arrivals = [(0.0, 100), (0.5, 100)]  # the second arrives while the first is being served
    rejected_by_random = 0
    for seed in range(40):
        la = simulate(edges, arrivals, "load-aware", "reject", seed, *PRICES)
        assert (la.processed, la.rejected, la.per_edge) == (2, 0, {"a": 1, "b": 1})
        rd = simulate(edges, arrivals, "random", "reject", seed, *PRICES)
        # The same two draws the simulator makes: a rejection exactly when both picks are the same edge.
        rng, loads = random.Random(seed), [WorkerLoad("a", 100.0, 0, 1), WorkerLoad("b", 100.0, 0, 1)]
        same = RandomPolicy().order(loads, rng)[0].id == RandomPolicy().order(loads, rng)[0].id
        assert rd.rejected == int(same)
        rejected_by_random += rd.rejected
    assert 10 <= rejected_by_random <= 30  # about half the seeds pick the busy edge


def test_weighted_first_pick_follows_capacity() -> None:
    loads = [WorkerLoad("small", 100.0, 0, 3), WorkerLoad("big", 300.0, 0, 3)]
    rng = random.Random(7)
    firsts = Counter(WeightedPolicy().order(loads, rng)[0].id for _ in range(4000))
    assert abs(firsts["small"] / 4000 - 0.25) < 0.03
    assert abs(firsts["big"] / 4000 - 0.75) < 0.03


def test_conservation_between_overflow_modes(fleet: list[EdgeProfile]) -> None:
    arrivals = bursty_workload(600, 0.8, fleet, seed=3)
    for name in POLICIES:
        rej = simulate(fleet, arrivals, name, "reject", 3, *PRICES)
        cloud = simulate(fleet, arrivals, name, "cloud", 3, *PRICES)
        assert rej.total == cloud.total == len(arrivals)
        assert rej.processed + rej.rejected == rej.total and rej.redirected == 0 and rej.cloud_cost_usd == 0
        assert cloud.processed + cloud.redirected == cloud.total and cloud.rejected == 0
        assert rej.rejected > 0 and rej.rejected == cloud.redirected
        assert rej.per_edge == cloud.per_edge and sum(rej.per_edge.values()) == rej.processed
        assert rej.latency_p95_s == cloud.latency_p95_s
        # Completion tokens only: the cost is the redirected count times the completion price.
        gen_only = simulate(fleet, arrivals, name, "cloud", 3, 0.0, 1000.0)
        assert gen_only.cloud_cost_usd == pytest.approx(cloud.redirected * GEN_TOKENS)


def test_bursty_workload(fleet: list[EdgeProfile]) -> None:
    a = bursty_workload(3600, 0.8, fleet, seed=11)
    assert a == bursty_workload(3600, 0.8, fleet, seed=11)
    assert a != bursty_workload(3600, 0.8, fleet, seed=12)
    times = [t for t, _ in a]
    assert times == sorted(times) and 0 <= times[0] and times[-1] < 3600
    # Offered load recomputed here: each request costs 1 / sum_i(c_i / service_i) seconds of the fleet.
    work = sum(1 / sum(p.concurrency / p.service_s(s) for p in fleet) for _, s in a)
    assert abs(work / 3600 - 0.8) < 0.08
    assert offered_load(a, fleet, 3600) == pytest.approx(work / 3600)
    sizes = Counter(s for _, s in a)
    assert set(sizes) == set(SIZES)
    assert abs(sizes[50] / len(a) - SIZE_WEIGHTS[0]) < 0.02
    windows = burst_windows(3600, 11)
    in_burst_s = sum(e - s for s, e in windows)
    assert in_burst_s == pytest.approx(720)  # 60 s in every 300 s
    inside = sum(any(s <= t < e for s, e in windows) for t in times)
    rate_in, rate_out = inside / in_burst_s, (len(a) - inside) / (3600 - in_burst_s)
    assert 2.5 < rate_in / rate_out < 3.5  # burst_factor 3


def test_load_aware_rejects_least_on_eight_edges_in_seconds(fleet: list[EdgeProfile]) -> None:
    arrivals = bursty_workload(3600, 0.8, fleet, seed=0)
    t0 = time.perf_counter()
    results = run_all(fleet, arrivals, 0, PRICES)
    assert time.perf_counter() - t0 < 30
    by = {(r.policy, r.overflow): r for r in results}
    assert len(by) == 6
    assert by["load-aware", "reject"].rejected < by["weighted", "reject"].rejected < by["random", "reject"].rejected
    assert by["load-aware", "cloud"].cloud_cost_usd < by["random", "cloud"].cloud_cost_usd


def test_two_edges_on_one_core_run_at_half_speed() -> None:
    """Two 1-thread edges pinned to core 0, each serving one 1 s request (load-aware sends them apart).

    Both at t=0: core 0's demand is 2, each runs at 1/2 and its 1 s of work takes 2 s: both complete
    at 2.0, latencies 2.0. The second at t=0.5: the first runs alone on [0, 0.5] (0.5 s of work left),
    then both at 1/2; the first's 0.5 left takes 1.0 s, so it completes at 1.5 (latency 1.5), when the
    second has done 0.5 of its 1 s; its 0.5 left runs alone and completes at 2.0 (latency 2.0 - 0.5 = 1.5).
    """
    edges = [on_cores("a", (0,)), on_cores("b", (0,))]
    assert slowed_edges(edges) == {0, 1}
    both = simulate(edges, [(0.0, 100), (0.0, 100)], "load-aware", "reject", 0, *PRICES)
    assert (both.processed, both.rejected, both.per_edge) == (2, 0, {"a": 1, "b": 1})
    assert both.latency_p50_s == both.latency_p95_s == both.latency_p99_s == 2.0
    # Two latencies x <= y with p50 = (x+y)/2 = 1.5 and p95 = 1.5 are both 1.5: completions at 1.5 and 2.0.
    late = simulate(edges, [(0.0, 100), (0.5, 100)], "load-aware", "reject", 0, *PRICES)
    assert (late.processed, late.per_edge) == (2, {"a": 1, "b": 1})
    assert late.latency_p50_s == late.latency_p95_s == 1.5
    # Edge a's slot frees at exactly 1.5, so a third request arriving then is admitted (queue 0) and shares
    # core 0 with b's 0.5 left: b completes at 2.5 (latency 2.0), the third at 3.0 (latency 1.5). Three
    # latencies [1.5, 1.5, 2.0] give p50 1.5 and p95 1.5 + 0.9 x 0.5. Arriving at 1.4, a is still busy.
    probe = simulate(edges, [(0.0, 100), (0.5, 100), (1.5, 100)], "load-aware", "reject", 0, *PRICES)
    assert (probe.processed, probe.rejected, probe.per_edge) == (3, 0, {"a": 2, "b": 1})
    assert (probe.latency_p50_s, probe.latency_p95_s) == (1.5, pytest.approx(1.95))
    early = simulate(edges, [(0.0, 100), (0.5, 100), (1.4, 100)], "load-aware", "reject", 0, *PRICES)
    assert (early.processed, early.rejected) == (2, 1)
    # Never busy at once: each runs alone at full speed, as on cores of its own.
    apart = simulate(edges, [(0.0, 100), (1.0, 100), (3.0, 50)], "load-aware", "reject", 0, *PRICES)
    alone = simulate([on_cores("a", ()), on_cores("b", ())], [(0.0, 100), (1.0, 100), (3.0, 50)], "load-aware",
                     "reject", 0, *PRICES)
    assert apart == alone and apart.latency_p95_s == 1.0


def test_threads_spread_demand_over_their_cores() -> None:
    """Edge a's 2 threads on cores 0 and 1 put 2/2 = 1 on each; edge b's 1 thread on core 1 puts 1 there.

    Both busy: core 1's demand is 1 + 1 = 2, so both run at 1/2 (a takes its slowest core) and their
    1 s requests from t=0 both complete at 2.0. Edge b on core 2 instead: nothing shared, 1.0 each.
    With a's 1 thread on cores 0 and 1 (1/2 on each), core 1's demand is 1.5: both complete at 1.5.
    """
    arrivals = [(0.0, 100), (0.0, 100)]
    shared = simulate([on_cores("a", (0, 1), threads=2), on_cores("b", (1,))], arrivals, "load-aware", "reject", 0,
                      *PRICES)
    assert shared.per_edge == {"a": 1, "b": 1}
    assert shared.latency_p50_s == shared.latency_p95_s == 2.0
    apart = [on_cores("a", (0, 1), threads=2), on_cores("b", (2,))]
    assert slowed_edges(apart) == set()
    assert simulate(apart, arrivals, "load-aware", "reject", 0, *PRICES).latency_p95_s == 1.0
    half = simulate([on_cores("a", (0, 1)), on_cores("b", (1,))], arrivals, "load-aware", "reject", 0, *PRICES)
    assert half.latency_p50_s == half.latency_p95_s == pytest.approx(1.5)


def test_distinct_cores_give_the_same_results_as_cores_of_its_own(fleet: list[EdgeProfile]) -> None:
    arrivals = bursty_workload(600, 0.8, fleet, seed=5)
    # Each edge its own cores, one per thread (edges 1-2 take cores 0-1 and 2-3, edge 3 core 4, ...).
    firsts = itertools.accumulate((p.threads for p in fleet), initial=0)
    distinct = [replace(p, cpus=tuple(range(k, k + p.threads))) for p, k in zip(fleet, firsts)]
    assert distinct[0].cpus == (0, 1) and distinct[2].cpus == (4,) and slowed_edges(distinct) == set()
    # Edges i and i+4 (the same measured worker) on one 2-core machine: two 2-thread workers put 2 on each
    # core and slow each other; two 1-thread workers spread over both cores put 1/2 + 1/2 = 1, never slowed.
    paired = [replace(p, cpus=(2 * (i % 4), 2 * (i % 4) + 1)) for i, p in enumerate(fleet)]
    assert slowed_edges(paired) == {0, 1, 4, 5}
    for name in POLICIES:
        for overflow in ("reject", "cloud"):
            own = simulate(fleet, arrivals, name, overflow, 5, *PRICES)
            assert simulate(distinct, arrivals, name, overflow, 5, *PRICES) == own
            crowded = simulate(paired, arrivals, name, overflow, 5, *PRICES)
            assert crowded.total == crowded.processed + crowded.rejected + crowded.redirected
            assert sum(crowded.per_edge.values()) == crowded.processed < own.processed
            assert crowded.latency_p50_s > own.latency_p50_s


def test_docstring_profiles_example_loads_and_shares_core_1(tmp_path: Path) -> None:
    doc = dispatch_sim.__doc__ or ""
    path = tmp_path / "profiles.json"
    path.write_text(doc[doc.index("    [{"):doc.index("}]") + 2])
    profiles = load_profiles(path)
    assert [p.cpus for p in profiles] == [(0,), (1,), (1,)]
    assert slowed_edges(profiles) == {1, 2}


def test_main_writes_json_chart_and_block(profiles_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)  # no ecqa.toml here: the settings' default prices
    md_path, chart = tmp_path / "BENCHMARKS.md", tmp_path / "docs" / "dispatch" / "policies.png"
    md_path.write_text("")
    argv = ["--profiles", str(profiles_file), "--duration-s", "600", "--mean-load", "0.8", "--out",
            str(tmp_path / "out"), "--benchmarks-md", str(md_path), "--chart", str(chart), "--note", "a note"]
    assert main(argv) == 0
    assert main(argv) == 0  # a second run replaces the block
    text = md_path.read_text()
    assert text.count(START) == text.count(END) == text.count(HEADING) == 1
    assert "![dispatch policies](docs/dispatch/policies.png)" in text and "a note" in text
    assert "| edge-8 | Qwen2.5-1.5B | 1 | 35 | 7.5 | 1 | 2 | 35 |" in text
    sim = json.loads((tmp_path / "out" / "sim.json").read_text())
    assert sim["prices_per_1k"] == list(PRICES) and len(sim["profiles"]) == 8
    res = {(r["policy"], r["overflow"]): r for r in sim["results"]}
    for name in POLICIES:
        rej, cloud = res[name, "reject"], res[name, "cloud"]
        row = (f"| {name} | {rej['total']} | {rej['processed']} | {rej['rejected']} | {cloud['redirected']} | "
               f"{cloud['cloud_cost_usd']:.4f} | {rej['latency_p95_s']:.2f} |")
        assert row in text
    printed = capsys.readouterr().out
    assert printed.count(START) == 2 and text[text.index(START):text.index(END) + len(END)] in printed
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and chart.stat().st_size > 5000
    # make bench-tables: the block re-rendered from the run's record, without simulating, is the same block
    md_path.write_text(text.replace("| random |", "| edited |"))
    assert main(["--from-json", str(tmp_path / "out" / "sim.json"), "--benchmarks-md", str(md_path), "--chart",
                 str(chart), "--note", "a note"]) == 0
    assert md_path.read_text() == text


@pytest.mark.parametrize(("content", "expected"), [
    ("{not json", "is not JSON"),
    ("[]", "non-empty JSON list"),
    (json.dumps([{k: v for k, v in EXAMPLE[0].items() if k != "gen_tps"}]), "entry 1 has"),
    (json.dumps([{**EXAMPLE[0], "prompt_tps": "fast"}]), "prompt_tps='fast'"),
    (json.dumps([{**EXAMPLE[0], "concurrency": 0}]), "concurrency=0"),
    (json.dumps([EXAMPLE[0], EXAMPLE[0]]), "repeats an id"),
    (json.dumps([{**EXAMPLE[0], "cpu": [0]}]), "entry 1 has"),
    (json.dumps([{**EXAMPLE[0], "cpus": 0}]), "cpus=0"),
    (json.dumps([{**EXAMPLE[0], "cpus": [0, 0]}]), "cpus=[0, 0]"),
    (json.dumps([{**EXAMPLE[0], "cpus": [-1]}]), "cpus=[-1]"),
    (json.dumps([{**EXAMPLE[0], "cpus": [1.5]}]), "cpus=[1.5]"),
    (json.dumps([{**EXAMPLE[0], "cpus": [True]}]), "cpus=[True]"),
    (json.dumps([{**EXAMPLE[0], "cpus": [[0]]}]), "cpus=[[0]]"),
])
def test_bad_profiles_file(tmp_path: Path, content: str, expected: str) -> None:
    path = tmp_path / "bad.json"
    path.write_text(content)
    with pytest.raises(ValueError) as info:
        load_profiles(path)
    msg = str(info.value)
    assert expected in msg and str(path) in msg and " — " in msg and "\n" not in msg


def test_cli_bad_profiles_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{not json")
    assert main(["--profiles", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: profiles file") and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_the_simulated_dispatcher_weighs_the_advertised_speed_not_the_service_speed(tmp_path: Path) -> None:
    """Weighted picks by C_i as the worker advertised it; the service still takes prompt_tps."""
    a = replace(edge("a", prompt_tps=100.0), advertised_tps=10.0)
    b = replace(edge("b", prompt_tps=100.0), advertised_tps=30.0)
    assert (a.capacity, b.capacity, a.service_s(100)) == (10.0, 30.0, edge("a").service_s(100))
    arrivals = [(t * 10.0, 50) for t in range(4000)]  # far apart: every edge is idle at each arrival
    res = dispatch_sim.simulate([a, b], arrivals, "weighted", "reject", 3, 0.0, 0.0)
    assert abs(res.per_edge["b"] / 4000 - 0.75) < 0.03, res.per_edge
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{**{k: v for k, v in a.__dict__.items() if k != "cpus"}, "advertised_tps": -1}]))
    with pytest.raises(ValueError, match="advertised_tps=-1"):
        dispatch_sim.load_profiles(path)
