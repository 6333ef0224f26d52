"""CPU and memory of the edge and cloud processes, sampled in the background during an evaluation."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


@dataclass
class ResourceSampler:
    """Samples CPU% (100 = one core) and RSS (MiB) of process trees every ``interval_s``.

    :param pids: a name ("edge", "cloud") per root process; children are included.
    :param path: where samples are appended as JSON lines (one run's samples share ``run``).
    """

    pids: dict[str, int]
    path: Path
    interval_s: float = 0.5
    run: str = field(default_factory=lambda: time.strftime("%Y%m%dT%H%M%S"))
    samples: list[dict[str, Any]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> ResourceSampler:
        self._procs = {name: {p.pid: p for p in _tree(pid)} for name, pid in self.pids.items()}
        for procs in self._procs.values():
            for p in procs.values():
                _cpu(p)  # the first cpu_percent() call only sets the reference point
        self._t0 = time.monotonic()
        self._thread = threading.Thread(target=self._loop, name="resource-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _loop(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as fh:
            while not self._stop.wait(self.interval_s):
                row: dict[str, Any] = {"run": self.run, "t": round(time.monotonic() - self._t0, 3)}
                for name, root in self.pids.items():
                    procs = self._procs[name]
                    for p in _tree(root):  # children that appeared since (a backend started lazily)
                        if p.pid not in procs:
                            procs[p.pid] = p
                            _cpu(p)
                    cpu = rss = 0.0
                    for pid, p in list(procs.items()):
                        try:
                            cpu += p.cpu_percent(None)
                            rss += p.memory_info().rss / 2**20
                        except psutil.Error:
                            del procs[pid]
                    row[f"{name}_cpu"] = round(cpu, 1)
                    row[f"{name}_rss_mib"] = round(rss, 1)
                self.samples.append(row)
                fh.write(json.dumps(row) + "\n")
                fh.flush()


def _cpu(p: psutil.Process) -> None:
    try:
        p.cpu_percent(None)
    except psutil.Error:
        pass


def read_samples(path: Path) -> list[dict[str, Any]]:
    """The samples of the latest run in ``path`` (a resumed evaluation samples only its own part)."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    if not rows:
        return []
    last = rows[-1]["run"]
    return [r for r in rows if r["run"] == last]


def summarize_samples(samples: list[dict[str, Any]], names: list[str]) -> dict[str, dict[str, float]]:
    """Mean and max CPU% and max RSS per process tree."""
    out: dict[str, dict[str, float]] = {}
    for name in names:
        cpu = [s[f"{name}_cpu"] for s in samples if f"{name}_cpu" in s]
        rss = [s[f"{name}_rss_mib"] for s in samples if f"{name}_rss_mib" in s]
        if cpu:
            out[name] = {"samples": len(cpu), "cpu_mean_pct": round(sum(cpu) / len(cpu), 1),
                         "cpu_max_pct": max(cpu), "rss_max_mib": max(rss)}
    return out
