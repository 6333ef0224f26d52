"""HTML of the Ask and Index tabs, from an :class:`~app.ui_service.Answered` or a stats dict.

Plain HTML and CSS (no chart library, no web fonts): it renders offline, the same in every
browser, and the browser tests can read every number from the DOM (``data-stage``, ``data-ms``).
"""

from __future__ import annotations

import json
from html import escape
from typing import Any

from app.ui_service import STAGES, Answered
from pipelines import placeholders, privacy_line

CSS = """
.ecqa-card { border: 1px solid var(--border-color-primary); border-radius: 10px; padding: 14px 16px; }
.ecqa-head { display: flex; gap: 10px; align-items: center; flex-wrap: wrap; font-size: 0.95em; }
.ecqa-badge { display: inline-block; padding: 2px 10px; border-radius: 999px; font-weight: 600; color: #fff;
  letter-spacing: 0.02em; }
.ecqa-badge-edge { background: #15803d; } .ecqa-badge-cloud { background: #1d4ed8; }
.ecqa-badge-cache { background: #7c3aed; } .ecqa-badge-abstained { background: #6b7280; }
.ecqa-badge-degraded { background: #c2410c; }
.ecqa-flag { color: #c2410c; font-weight: 600; }
.ecqa-restored { color: #6d28d9; font-weight: 600; font-size: 0.92em; }
.ecqa-answer { font-size: 1.5em; font-weight: 600; margin: 10px 0 6px; }
.ecqa-none { font-style: italic; color: var(--body-text-color-subdued); font-size: 1.1em; }
.ecqa-why, .ecqa-muted { color: var(--body-text-color-subdued); font-size: 0.92em; }
.ecqa-error { border-color: #c2410c; color: #9a3412; background: #fff7ed; font-weight: 500; }
.ecqa-passages { margin: 0; padding-left: 1.4em; }
.ecqa-passages li { margin-bottom: 10px; }
.ecqa-passages mark { background: #fde68a; color: #111; padding: 0 2px; border-radius: 3px; }
.ecqa-ptitle { font-weight: 600; }
.ecqa-ptext { font-size: 0.92em; line-height: 1.45; }
.ecqa-sent { white-space: pre-wrap; font-size: 0.85em; max-height: 320px; overflow: auto; padding: 8px;
  background: var(--background-fill-secondary); border-radius: 6px; margin: 6px 0 0; }
.ecqa-sent mark.ecqa-pii { background: #ddd6fe; color: #111; padding: 0 2px; border-radius: 3px; }
.ecqa-redactions { font-size: 0.92em; margin-top: 4px; }
.ecqa-chart { font-size: 0.9em; }
.ecqa-row { display: grid; grid-template-columns: 150px 1fr 80px; gap: 8px; align-items: center; margin: 6px 0; }
.ecqa-track { position: relative; height: 22px; background: var(--background-fill-secondary); border-radius: 4px; }
.ecqa-bar { display: flex; height: 100%; border-radius: 4px; overflow: hidden; }
.ecqa-seg { height: 100%; min-width: 0; }
.ecqa-tmax { position: absolute; top: -3px; bottom: -3px; border-left: 2px dashed #b91c1c; }
.ecqa-legend { margin-top: 6px; border-collapse: collapse; }
.ecqa-legend th { text-align: left; font-weight: 600; padding: 1px 14px 1px 0; }
.ecqa-legend td { padding: 1px 14px 1px 0; }
.ecqa-legend td:nth-child(2), .ecqa-legend td:nth-child(3) { text-align: right; font-variant-numeric: tabular-nums; }
.ecqa-key { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 4px; vertical-align: -1px; }
.ecqa-history { width: 100%; border-collapse: collapse; font-size: 0.92em; }
.ecqa-history th, .ecqa-history td { text-align: left; padding: 4px 10px; border-bottom: 1px solid var(--border-color-primary); }
.ecqa-history .ecqa-badge { font-size: 0.85em; padding: 0 8px; }
.ecqa-num { text-align: right !important; font-variant-numeric: tabular-nums; }
.ecqa-legend, .ecqa-legend tr, .ecqa-legend th, .ecqa-legend td, .ecqa-stats, .ecqa-stats tr, .ecqa-stats td,
.ecqa-history, .ecqa-history tr, .ecqa-history th, .ecqa-history td { border: none !important; background: none !important; }
.ecqa-history th, .ecqa-history td { border-bottom: 1px solid var(--border-color-primary) !important; }
.ecqa-stats td { padding: 2px 12px 2px 0; vertical-align: top; }
"""

# One colour per stage (colour-blind-safe Okabe-Ito palette, grey for "other").
COLOURS = {"embed": "#56B4E9", "retrieve": "#0072B2", "edge generate": "#009E73", "network up": "#E69F00",
           "cloud": "#CC79A7", "network down": "#D55E00", "other": "#999999"}
HELP = {"embed": "question embedding (MiniLM)", "retrieve": "hybrid search in Qdrant",
        "edge generate": "probe, answer and parsing by the edge model", "network up": "sealing and sending the request",
        "cloud": "the gateway: open, LLM, seal", "network down": "receiving and opening the reply",
        "other": "cache lookups, routing, a failed cloud call"}


def error_card(message: str) -> str:
    """A user mistake or a failure, as one line (never a traceback)."""
    return f'<div class="ecqa-card ecqa-error" role="alert">⚠ {escape(message)}</div>'


def answer_card(a: Answered) -> str:
    """Tier badge, confidence, the answer and the line that says why it went that way."""
    r = a.result
    badge = a.badge
    flag = ' <span class="ecqa-flag">cloud unreachable</span>' if a.degraded else ""
    if r.get("restored"):  # the cloud saw placeholders; what is shown has the values back, put in on the device
        flag += (' <span class="ecqa-restored" title="the cloud answered with placeholders; the values they stand for '
                 'were put back on this device">restored: personal data put back</span>')
    answer = (f'<div class="ecqa-answer">{escape(r["answer"])}</div>' if r["answer"]
              else '<div class="ecqa-answer ecqa-none">no answer in the collection</div>')
    total = r["timings_ms"]["total"]
    return (
        f'<div class="ecqa-card" data-tier="{escape(r["tier"])}">'
        f'<div class="ecqa-head"><span class="ecqa-badge ecqa-badge-{badge}" data-badge="{badge}">{badge}</span>{flag}'
        f'<span>confidence <b class="ecqa-confidence">{r["confidence"]:.2f}</b></span>'
        f'<span class="ecqa-muted">{total:.0f} ms · policy {escape(str((r.get("decision") or {}).get("policy", "")))}</span>'
        f"</div>{answer}"
        f'<div class="ecqa-why">why: {escape(why_line(a))}</div>{dispatch_line(r)}</div>'
    )


def dispatch_line(result: dict[str, Any]) -> str:
    """Which edge worker read the question, or why none did and what the redirection cost ('' without workers)."""
    d = result.get("dispatch")
    if not d:
        return ""
    tried = "".join(f" · {escape(str(x['worker']))} {escape(str(x['outcome']))}" for x in d.get("attempts", [])
                    if x.get("outcome") != "served")
    if d.get("redirected"):
        cost = f" · cloud cost ${d['cloud_cost_usd']:.6f}" if "cloud_cost_usd" in d else ""
        return (f'<div class="ecqa-dispatch ecqa-muted" data-worker="" data-redirected="1">no edge worker could take it '
                f'({escape(str(d.get("policy", "")))}){tried} → redirected to the cloud{cost}</div>')
    return (f'<div class="ecqa-dispatch ecqa-muted" data-worker="{escape(str(d["worker"]))}">read by edge worker '
            f'<b>{escape(str(d["worker"]))}</b> ({escape(str(d.get("worker_model", "")))}) · policy '
            f'{escape(str(d.get("policy", "")))}{tried}</div>')


def workers_html(loads: list[dict[str, Any]] | None) -> str:
    """The edge workers' live load: W_i of its limit as a bar, what each served and refused, and the
    replies of it this dispatcher could not use."""
    if loads is None:
        return ""
    if not loads:
        return '<div class="ecqa-muted" data-workers="0">no live edge worker — start one with <code>ecqa edge serve</code></div>'
    rows = []
    for w in loads:
        share = min(1.0, w["in_flight"] / max(w["limit"], 1))
        rows.append(f'<tr data-worker="{escape(str(w["id"]))}" data-in-flight="{w["in_flight"]}"><td>'
                    f'<b>{escape(str(w["id"]))}</b><br><span class="ecqa-muted">{escape(str(w["model"]))}</span></td>'
                    f'<td class="ecqa-num">{w["in_flight"]} / {w["limit"]}<div class="ecqa-track" style="height:6px">'
                    f'<div class="ecqa-bar" style="width:{share * 100:.0f}%;background:#0072B2"></div></div></td>'
                    f'<td class="ecqa-num">{w["capacity_tps"]:.0f}</td><td class="ecqa-num">{w["served"]}</td>'
                    f'<td class="ecqa-num">{w["rejected"]}</td><td class="ecqa-num">{w.get("bad_replies", 0)}</td></tr>')
    head = "".join(f"<th>{h}</th>" for h in ("worker", "load W_i", "tok/s C_i", "served", "refused", "bad replies"))
    return (f'<table class="ecqa-history" data-workers="{len(loads)}"><thead><tr>{head}</tr></thead>'
            f'<tbody>{"".join(rows)}</tbody></table>')


def why_line(a: Answered) -> str:
    """The policy's reason, plus the predicted time against Tmax when the reason does not say it."""
    d = a.result.get("decision") or {}
    reason = str(d.get("reason", "edge answer"))
    if a.result["tier"] == "cache" or "predicted" in reason:
        return reason
    predicted = float(d.get("predicted_total_ms", 0.0))
    relation = "within" if predicted <= a.budget_ms else "over"
    return f"{reason}; predicted {predicted:.0f} ms if escalated, {relation} budget {a.budget_ms:.0f} ms"


def passages_html(a: Answered) -> str:
    """The retrieved passages with title and score, the answer span marked in its passage."""
    items = []
    for p in a.result["passages"]:
        text = str(p.get("text", ""))
        # An abstention keeps the edge's withheld answer's span in the passages: not an answer to mark.
        span = p.get("answer_span") if a.result["answer"] else None
        if span:
            s, e = int(span[0]), int(span[1])
            body = f"{escape(text[:s])}<mark>{escape(text[s:e])}</mark>{escape(text[e:])}"
        else:
            body = escape(text)
        source = (f' · <span class="ecqa-muted" title="{escape(str(p["source"]))}">{escape(_file_name(p["source"]))}</span>'
                  if p.get("source") else "")
        mark = ' <span class="ecqa-flag">◀ answer</span>' if span else ""
        items.append(f'<li class="ecqa-passage" data-score="{float(p.get("score", 0.0)):.4f}">'
                     f'<span class="ecqa-ptitle">{escape(str(p.get("title", "")) or "(untitled)")}</span> '
                     f'<span class="ecqa-muted">score {float(p.get("score", 0.0)):.3f}</span>{source}{mark}'
                     f'<div class="ecqa-ptext">{body}</div></li>')
    if not items:
        return '<div class="ecqa-muted">no passages retrieved</div>'
    return f'<ol class="ecqa-passages">{"".join(items)}</ol>'


def sent_html(a: Answered) -> str:
    """Exactly what left the device for an escalated question, its size, the placeholders that stand for personal
    data marked in it, and how many values of each kind they replaced (counts only: the values never reach here)."""
    r = a.result
    if not r.get("sent") and a.degraded:
        return ('<div class="ecqa-muted ecqa-nothing-sent">the cloud call failed (see why): no reply came back, '
                'the edge answered</div>')
    if not r.get("sent"):
        where = "from the answer cache" if r["tier"] == "cache" else "on the edge"
        return f'<div class="ecqa-muted ecqa-nothing-sent">nothing left the device: answered {where}</div>'
    plain = json.dumps(r["sent"], ensure_ascii=False, indent=2)
    size = len(json.dumps(r["sent"], ensure_ascii=False, separators=(",", ":")).encode())
    redactions = dict(r.get("redactions") or {})
    privacy = escape(privacy_line(redactions, bool(r.get("restored")), r.get("pii_undetected") or (),
                                  r.get("pii") or "redact"))
    return (f'<div class="ecqa-sent-size">{size:,} bytes of JSON → sealed envelope <b>{r["bytes_up"]:,} bytes up</b> '
            f'(zstd + AES-256-GCM, mutual TLS); reply <b>{r["bytes_down"]:,} bytes down</b></div>'
            f'<div class="ecqa-redactions" data-removed="{sum(redactions.values())}">personal data: {privacy}</div>'
            f'<pre class="ecqa-sent">{marked_placeholders(plain)}</pre>')


def marked_placeholders(text: str) -> str:
    """``text`` HTML-escaped, each placeholder (``<PERSON_1>``) in a ``mark.ecqa-pii``: the spans are found in the
    raw text and every piece is escaped on its own, so no markup of the text survives and none of ours is escaped."""
    out: list[str] = []
    end = 0
    for s, e in placeholders(text):
        out.append(f'{escape(text[end:s])}<mark class="ecqa-pii">{escape(text[s:e])}</mark>')
        end = e
    out.append(escape(text[end:]))
    return "".join(out)


def latency_chart(a: Answered) -> str:
    """Stacked bars per stage: the latency model's prediction if escalated, and what was measured."""
    rows = [("measured", a.measured)]
    if a.predicted is not None:
        rows.insert(0, ("predicted if escalated", a.predicted))
    longest = max(sum(v.values()) for _, v in rows)
    # Tmax on the same scale when it is near the bars; a 4 s budget would squash 300 ms bars.
    show_tmax = a.budget_ms <= 2 * longest
    scale = max(longest, a.budget_ms if show_tmax else 0.0, 1e-9)
    out = ['<div class="ecqa-chart">']
    for label, stages in rows:
        total = sum(stages.values())
        segs = "".join(
            f'<div class="ecqa-seg" data-stage="{name}" data-ms="{ms:.1f}" title="{name}: {ms:.0f} ms — {HELP[name]}" '
            f'style="width:{100 * ms / scale:.3f}%;background:{COLOURS[name]}"></div>'
            for name, ms in stages.items() if ms > 0
        )
        tmax = (f'<div class="ecqa-tmax" title="Tmax {a.budget_ms:.0f} ms" style="left:{100 * a.budget_ms / scale:.3f}%"></div>'
                if show_tmax else "")
        out.append(f'<div class="ecqa-row" data-row="{label.split()[0]}"><span>{label}</span>'
                   f'<div class="ecqa-track"><div class="ecqa-bar">{segs}</div>{tmax}</div>'
                   f'<b class="ecqa-total">{total:.0f} ms</b></div>')
    # The legend is a table: the numbers behind each segment, predicted next to measured.
    head = "<th>predicted</th>" if a.predicted is not None else ""
    body = []
    for n in STAGES:
        p = (a.predicted or {}).get(n, 0.0)
        if a.measured[n] <= 0 and p <= 0:
            continue
        pred = f"<td>{p:.0f}</td>" if a.predicted is not None else ""
        body.append(f'<tr data-stage="{n}"><td><i class="ecqa-key" style="background:{COLOURS[n]}"></i>{n}</td>{pred}'
                    f'<td>{a.measured[n]:.0f}</td><td class="ecqa-muted">{HELP[n]}</td></tr>')
    budget = f"Tmax {a.budget_ms:.0f} ms" + (" (dashed line)" if show_tmax else " (off the scale)")
    out.append(f'<table class="ecqa-legend"><tr><th>stage (ms)</th>{head}<th>measured</th><th></th></tr>{"".join(body)}'
               f'</table>{kv_line(a.result)}<div class="ecqa-muted">{budget} · link {escape(a.network)}</div></div>')
    return "".join(out)


def kv_line(result: dict[str, Any]) -> str:
    """Where each passage's prompt-prefix KV state came from when the edge read it (per-passage reading):
    "hit" (the passage KV store), "miss" (prefilled, then stored), "live" (still in the cache)."""
    states = [str(p["kv"]) for p in result.get("passages", []) if p.get("kv")]
    if not states:
        return ""
    t, usage = result.get("timings_ms", {}), result.get("usage", {})
    marks = " · ".join(f'<span class="ecqa-kv-{k}" data-passage="{i}">[{i}] {k}</span>' for i, k in enumerate(states, 1))
    tokens = f' ({int(usage["prefilled_tokens"])} tokens)' if "prefilled_tokens" in usage else ""
    return (f'<div class="ecqa-kv" data-kv="{",".join(states)}">edge KV states: {marks} — restore '
            f'{t.get("restore", 0.0):.0f} ms, prefill {t.get("prefill", 0.0):.0f} ms{tokens}, '
            f'decode {t.get("decode", 0.0):.0f} ms</div>')


def _file_name(path: Any) -> str:
    """The file's name: uploads live under a random temporary folder that says nothing to a reader."""
    return str(path or "").replace("\\", "/").rsplit("/", 1)[-1]


def history_row(a: Answered) -> list[Any]:
    r = a.result
    return [r["question"], r["answer"] or "(no answer)", a.badge, round(r["timings_ms"]["total"])]


def history_table(rows: list[list[Any]]) -> str:
    """The session's questions, newest first."""
    head = "".join(f"<th>{h}</th>" for h in ("question", "answer", "tier", "latency ms"))
    body = "".join(
        f'<tr><td>{escape(str(q))}</td><td>{escape(str(ans))}</td>'
        f'<td><span class="ecqa-badge ecqa-badge-{escape(str(tier))}">{escape(str(tier))}</span></td>'
        f'<td class="ecqa-num">{ms}</td></tr>'
        for q, ans, tier, ms in rows
    )
    empty = '<tr><td colspan="4" class="ecqa-muted">no questions yet</td></tr>' if not rows else ""
    return f'<table class="ecqa-history"><thead><tr>{head}</tr></thead><tbody>{body}</tbody>{empty and f"<tfoot>{empty}</tfoot>"}</table>'


def stats_html(info: dict[str, Any]) -> str:
    """``ecqa index stats`` as a small table."""
    rows = [("collection", info["collection"]), ("passages", f'{info["documents"]:,}'),
            ("version", info["backing_collection"]), ("embedder", f'{info["model"]} ({info["dimension"]}-d)'),
            ("hybrid (dense + BM25)", "yes" if info.get("hybrid") else "no"), ("built at", info["built_at"])]
    rows += [("source", f'{_file_name(s.get("path"))} ({s.get("format")}, {s.get("passages")} passages)')
             for s in info.get("sources", [])]
    body = "".join(f'<tr data-field="{escape(k)}"><td class="ecqa-muted">{escape(k)}</td><td>{escape(str(v))}</td></tr>'
                   for k, v in rows)
    return f'<table class="ecqa-stats">{body}</table>'


def build_message(report: dict[str, Any]) -> str:
    if report["added"] == 0:
        return (f'<div class="ecqa-card ecqa-built">collection <b>{escape(report["collection"])}</b> already holds all '
                f'{report["already_indexed"]} passages — nothing added</div>')
    return (f'<div class="ecqa-card ecqa-built">indexed <b>{report["documents"]:,}</b> passages into '
            f'<b>{escape(report["collection"])}</b> ({report["added"]} new, {report["already_indexed"]} already indexed, '
            f'{report["duplicates"]} duplicates skipped) in {report["seconds"]:.1f} s</div>')
