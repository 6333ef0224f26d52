"""PNG plots of an evaluation report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from eval.report import STAGES

COLORS = {"embed": "#8dd3c7", "retrieve": "#80b1d3", "edge_generate": "#fdb462", "seal_open": "#bebada",
          "network": "#fb8072", "cloud": "#b3de69", "other": "#bc80bd", "cache": "#ccebc5"}


def write_plots(report: dict[str, Any], samples: list[dict[str, Any]], out: Path) -> list[str]:
    """Write the report's PNGs into ``out``; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pol = report["policies"]
    names = list(pol)
    files: list[str] = []

    def save(fig: Any, name: str) -> None:
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        files.append(name)

    # Latency per configuration: mean bars, p95 whiskers.
    fig, ax = plt.subplots(figsize=(7, 3.8))
    means = [pol[n]["latency_ms"]["mean"] for n in names]
    p95 = [pol[n]["latency_ms"]["p95"] for n in names]
    ax.bar(names, means, color="#80b1d3", yerr=[[0] * len(names), [max(p - m, 0) for p, m in zip(p95, means)]],
           capsize=6, label="mean (whisker: p95)")
    ax.set_ylabel("latency per question (ms)")
    ax.set_title("Latency per configuration")
    ax.legend()
    save(fig, "latency.png")

    # Per-stage breakdown, stacked.
    fig, ax = plt.subplots(figsize=(7, 3.8))
    bottom = [0.0] * len(names)
    for stage in STAGES:
        vals = [pol[n]["stages_ms"].get(stage, 0.0) for n in names]
        if any(vals):
            ax.bar(names, vals, bottom=bottom, label=stage, color=COLORS.get(stage))
            bottom = [b + v for b, v in zip(bottom, vals)]
    ax.set_ylabel("mean ms per question")
    ax.set_title("Where the time goes")
    ax.legend(fontsize=8, ncol=2)
    save(fig, "stages.png")

    sweep = report.get("sweep") or []
    if sweep:
        base = report["baseline_no_answer"]["f1"]
        for x_key, x_label, name in (("latency_mean_ms", "mean latency (ms)", "sweep_latency.png"),
                                     ("cloud_call_rate", "cloud-call rate", "sweep_cloud_rate.png")):
            fig, ax = plt.subplots(figsize=(6, 3.8))
            xs = [r[x_key] for r in sweep]
            ax.plot(xs, [r["f1"] for r in sweep], marker="o", label="cascade, threshold sweep (no abstention)")
            for r in sweep[:: max(len(sweep) // 5, 1)]:
                ax.annotate(f"{r['threshold']:.3f}", (r[x_key], r["f1"]), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
            points: dict[tuple[float, float], list[str]] = {}  # policies on the same point share one label
            for n in names:
                x = pol[n]["latency_ms"]["mean"] if x_key == "latency_mean_ms" else pol[n]["cloud_call_rate"]
                points.setdefault((round(x, 3), round(pol[n]["f1"], 2)), []).append(n)
            for (x, y), group in points.items():
                ax.scatter([x], [y], marker="s", zorder=3)
                ax.annotate(", ".join(group), (x, y), fontsize=8, xytext=(4, -10), textcoords="offset points")
            ax.axhline(base, color="grey", linestyle="--", label=f"always no-answer ({base:.1f})")
            ax.set_xlabel(x_label)
            ax.set_ylabel("F1")
            ax.set_title(f"F1 against {x_label}")
            ax.legend(fontsize=8)
            save(fig, name)

    if samples:
        fig, ax = plt.subplots(figsize=(7, 3.4))
        t = [s["t"] for s in samples]
        for proc in ("edge", "cloud"):
            if f"{proc}_cpu" in samples[0]:
                ax.plot(t, [s.get(f"{proc}_cpu", 0.0) for s in samples], label=proc, linewidth=0.8)
        ax.set_xlabel("seconds into the run")
        ax.set_ylabel("CPU % (100 = one core)")
        ax.set_title("CPU over time")
        ax.legend()
        save(fig, "cpu.png")
    return files
