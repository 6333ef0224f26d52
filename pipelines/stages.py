"""One split of a question's time into stages, for every report of it (the UI's chart, `ecqa eval --live`).

The stages add up to ``timings_ms["total"]``: embed, retrieve, edge_generate (prompt + SLM + parse),
seal_open (the redaction of personal data, sealing, opening the reply), network (the request time minus the
gateway's own), cloud (the gateway), and the rest —
routing, features, cache lookups, a failed cloud call — as "other" ("cache" for a cache hit).
The replay of recorded answers (:mod:`eval.replay`) feeds a record's measured times through this same
function, so a replayed answer and a live one are split alike.
"""

from __future__ import annotations

from collections.abc import Mapping

EDGE_KEYS = ("prompt", "generate", "parse")


def split_stages(timings_ms: Mapping[str, float], route: str) -> dict[str, float]:
    """ms per stage of one answer; the stages that did not run are left out, the rest sums to the total."""
    t = timings_ms
    stages = {k: float(t[k]) for k in ("embed", "retrieve") if k in t}
    edge_ms = sum(t.get(k, 0.0) for k in EDGE_KEYS)
    if edge_ms:
        stages["edge_generate"] = edge_ms
    if "seal" in t or "open" in t:
        stages["seal_open"] = t.get("seal", 0.0) + t.get("open", 0.0)
    stages.update({k: float(t[k]) for k in ("network", "cloud") if k in t})
    stages["cache" if route == "cache" else "other"] = max(t["total"] - sum(stages.values()), 0.0)
    return stages
