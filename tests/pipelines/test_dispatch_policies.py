"""Each dispatch policy's choice on controlled loads (the same code the simulator runs)."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from pipelines.dispatch_policies import LoadAwarePolicy, WorkerLoad, make_policy


def w(id: str, capacity: float, in_flight: int = 0, limit: int = 3) -> WorkerLoad:
    return WorkerLoad(id, capacity, in_flight, limit)


def test_load_aware_picks_least_ratio_not_least_in_flight() -> None:
    # R_a = 2/100 = 0.02, R_b = 1/20 = 0.05, R_c = 0/10 = 0: c is idle, then a (more work but more capacity).
    order = LoadAwarePolicy().order([w("a", 100, 2), w("b", 20, 1), w("c", 10, 0)], random.Random(0))
    assert [x.id for x in order] == ["c", "a", "b"]


def test_load_aware_puts_full_workers_last_and_breaks_ties_by_capacity() -> None:
    order = make_policy("load-aware").order([w("a", 500, 3, 3), w("b", 50), w("c", 80)], random.Random(0))
    # b and c are idle: the faster first; a looks full (its advertised load may be stale): tried last.
    assert [x.id for x in order] == ["c", "b", "a"]
    assert [x.id for x in make_policy("load-aware").order([w("a", 50, 3, 3)], random.Random(0))] == ["a"]
    assert make_policy("load-aware").retry_when_full and not make_policy("random").retry_when_full


def test_random_is_uniform_and_blind_to_load() -> None:
    rng = random.Random(1)
    workers = [w("a", 1000, 3, 3), w("b", 1), w("c", 1)]
    first = Counter(make_policy("random").order(workers, rng)[0].id for _ in range(6000))
    for wid in "abc":  # the full, fast worker is picked as often as the idle slow ones
        assert abs(first[wid] / 6000 - 1 / 3) < 0.03, first


def test_weighted_follows_capacity_and_ignores_load() -> None:
    rng = random.Random(2)
    workers = [w("slow", 10), w("fast", 30, in_flight=3, limit=3)]
    first = Counter(make_policy("weighted").order(workers, rng)[0].id for _ in range(8000))
    assert abs(first["fast"] / 8000 - 0.75) < 0.03, first
    order = make_policy("weighted").order(workers, rng)
    assert sorted(x.id for x in order) == ["fast", "slow"]  # every worker stays in the order, for failover


def test_unknown_policy_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="random, weighted, load-aware"):
        make_policy("fastest")
