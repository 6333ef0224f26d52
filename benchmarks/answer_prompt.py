"""Which answer prompt reads best with the cloud model? An experiment on the calibration split only.

The cloud model (Qwen2.5-Coder-1.5B-Instruct Q4_K_M) reads each answerable calibration-split question of dev-a
with its gold paragraph, greedy, three ways:

- ``chat``: the project's prompt (:func:`reading.prompts.messages` with the answer task, the model's chat template);
- ``completion``: the same passage and question as a plain completion, ``Passage: …\\nQuestion: …\\nAnswer:``,
  no template (what a base model would read);
- ``few-shot``: the base family's few-shot completion prompt (:func:`reading.prompts.base_prompt`).

Each reply goes through the project's :func:`reading.text.parse_answer` and is scored with SQuAD F1 against the
gold answers. A paired bootstrap over questions gives 95% intervals of the differences against ``chat``.
Nothing is fitted; no held-out question is read. One command::

    .venv/bin/python -m benchmarks.answer_prompt -n 80
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path
from typing import Any

import numpy as np

from eval.data import load_questions
from eval.squad_metrics import score_question
from eval.stats import paired_bootstrap_ci
from pipelines.calibration import in_calibration_split
from reading.model_manifest import DEFAULT_CLOUD_MODEL
from reading.models import resolve_gguf
from reading.prompts import ANSWER, BASE_STOP, QUESTION_MARKER, Passage, base_prompt, messages, one_line
from reading.reader import LlamaReader
from reading.text import parse_answer

VARIANTS = ("chat", "completion", "few-shot")


def prompt_of(reader: LlamaReader, variant: str, question: str, passage: Passage) -> tuple[str, tuple[str, ...]]:
    """The prompt text and its stop strings."""
    if variant == "chat":
        return reader.render(messages(question, [passage], ANSWER)), ()
    if variant == "completion":
        return f"Passage: {one_line(passage.text)}\n{QUESTION_MARKER}{one_line(question)}\nAnswer:", BASE_STOP
    return base_prompt(question, [passage], ANSWER), BASE_STOP


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/squad-v2-dev-a.json"))
    ap.add_argument("-n", type=int, default=80, help="answerable calibration-split questions (a seeded sample)")
    ap.add_argument("--seed", type=int, default=2027)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("bench/answer-prompt.json"))
    args = ap.parse_args()
    pool = [q for q in load_questions(args.data) if q.answers != ("",) and in_calibration_split(q.id)]
    questions = random.Random(args.seed).sample(pool, min(args.n, len(pool)))
    reader = LlamaReader(str(resolve_gguf("", DEFAULT_CLOUD_MODEL)), n_ctx=2048, n_threads=args.threads, family="chat")
    reader.warm_up()
    rows: list[dict[str, Any]] = []
    for i, q in enumerate(questions):
        passage = Passage(q.title, q.context)
        row: dict[str, Any] = {"id": q.id, "question": q.question, "answers": list(q.answers)}
        for variant in VARIANTS:
            prompt, stop = prompt_of(reader, variant, q.question, passage)
            t0 = time.perf_counter()
            gen = reader.generate(prompt, 24, stop)
            answer = parse_answer(gen.text, q.question, [q.context])
            row[variant] = {"reply": gen.text, "answer": answer, "f1": score_question(q, answer)["f1"],
                            "ms": (time.perf_counter() - t0) * 1000.0}
        rows.append(row)
        print(f"{i + 1}/{len(questions)} " + " · ".join(f"{v} {row[v]['f1']:.2f} {row[v]['answer'][:30]!r}"
                                                       for v in VARIANTS), flush=True)
    f1 = {v: np.array([r[v]["f1"] for r in rows]) for v in VARIANTS}
    summary = {v: {"f1": 100 * float(f1[v].mean()), "ms_median": float(np.median([r[v]["ms"] for r in rows]))}
               for v in VARIANTS}
    for v in VARIANTS[1:]:
        lo, hi = paired_bootstrap_ci(list(f1[v]), list(f1["chat"]), seed=7)
        summary[v]["vs_chat"] = {"diff": 100 * float((f1[v] - f1["chat"]).mean()), "lo": 100 * lo, "hi": 100 * hi}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"n": len(rows), "seed": args.seed, "summary": summary, "rows": rows}, indent=1))
    print(f"HasAns F1 on {len(rows)} answerable calibration-split questions, gold paragraph, {DEFAULT_CLOUD_MODEL}:")
    for v in VARIANTS:
        s = summary[v]
        vs = s.get("vs_chat")
        extra = f"   vs chat {vs['diff']:+.1f} [{vs['lo']:+.1f}, {vs['hi']:+.1f}]" if vs else ""
        print(f"  {v:10s} {s['f1']:5.1f}   median {s['ms_median']:.0f} ms{extra}")


if __name__ == "__main__":
    main()
