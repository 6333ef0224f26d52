"""Which edge worker reads a question: Random, Weighted (by capacity C_i) or Load-Aware (least R_i = W_i / C_i).

The same code picks for the real dispatcher (:mod:`pipelines.dispatch`) and for the virtual-time
simulator (:mod:`benchmarks.dispatch_sim`), so the simulator predicts what the dispatcher does.

- ``random``: any live worker, uniformly; blind to load.
- ``weighted``: a live worker with probability proportional to its capacity C_i; blind to load.
- ``load-aware``: the live worker with the least R_i = W_i / C_i among those with room (W_i below
  its admission limit); ties go to the larger C_i. Workers that look full come last, not never: the
  load a dispatcher sees may be a heartbeat old, and a worker that is really full refuses at once.

A load-blind pick that finds its worker full is not retried elsewhere (that is what being blind
to load costs); a load-aware pick that finds its worker full (its view of W_i was stale) tries the
next worker with room. Every policy fails over to the next worker when one dies mid-request.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class WorkerLoad:
    """What a policy knows of one worker.

    :param id: the worker's registry id.
    :param capacity: C_i, the tokens per second it reads (its own measurement x its concurrency).
    :param in_flight: W_i, requests it has admitted (running and queued).
    :param limit: the most requests it admits at once (concurrency + queue).
    """

    id: str
    capacity: float
    in_flight: int
    limit: int

    @property
    def ratio(self) -> float:
        """R_i = W_i / C_i."""
        return self.in_flight / max(self.capacity, 1e-9)

    @property
    def has_room(self) -> bool:
        return self.in_flight < self.limit


class DispatchPolicy(ABC):
    """Orders the workers a request tries."""

    name: str = ""
    retry_when_full: bool = False  # try the next worker when the first one refuses for being full

    @abstractmethod
    def order(self, workers: Sequence[WorkerLoad], rng: random.Random) -> list[WorkerLoad]:
        """The workers in the order to try (the first is the pick); [] when none can be tried."""


class RandomPolicy(DispatchPolicy):
    name = "random"

    def order(self, workers: Sequence[WorkerLoad], rng: random.Random) -> list[WorkerLoad]:
        out = sorted(workers, key=lambda w: w.id)
        rng.shuffle(out)
        return out


class WeightedPolicy(DispatchPolicy):
    name = "weighted"

    def order(self, workers: Sequence[WorkerLoad], rng: random.Random) -> list[WorkerLoad]:
        # Weighted sampling without replacement (Efraimidis-Spirakis keys u^(1/w)): the first pick
        # is worker i with probability C_i / sum C, and the rest follow in the same way.
        keyed = [(rng.random() ** (1.0 / max(w.capacity, 1e-9)), w.id, w) for w in sorted(workers, key=lambda w: w.id)]
        return [w for _, _, w in sorted(keyed, key=lambda t: (-t[0], t[1]))]


class LoadAwarePolicy(DispatchPolicy):
    name = "load-aware"
    retry_when_full = True

    def order(self, workers: Sequence[WorkerLoad], rng: random.Random) -> list[WorkerLoad]:
        return sorted(workers, key=lambda w: (not w.has_room, w.ratio, -w.capacity, w.id))


POLICIES: dict[str, type[DispatchPolicy]] = {p.name: p for p in (RandomPolicy, WeightedPolicy, LoadAwarePolicy)}


def make_policy(name: str) -> DispatchPolicy:
    """The policy called ``name``.

    :raises ValueError: an unknown name (the message lists the known ones).
    """
    try:
        return POLICIES[name]()
    except KeyError:
        raise ValueError(f"unknown dispatch policy {name!r} — use one of: {', '.join(POLICIES)}") from None
