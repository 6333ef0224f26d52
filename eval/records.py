"""Per-question records: each question answered once on the edge and once in the cloud, with
measured timings, appended to a JSONL file as it goes (a rerun skips finished questions).

Calibration (`make calibrate`) fits the routing models on these records, and the cascade
benchmark replays every policy's routing over them: a policy's answer and latency are those of
the route it takes, composed from the measured edge and cloud runs of the same question.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from haystack import Document

from eval.data import load_questions
from eval.squad_metrics import Question, score_question
from pipelines import open_store
from pipelines.calibration import in_calibration_split
from pipelines.cascade import CloudClient
from pipelines.cloud_path import cloud_client_from
from pipelines.edge_pipeline import EdgeQA, Retrieved
from pipelines.index import document_id, index_files
from pipelines.settings import load_settings
from pipelines.stack import embedded_stack

Progress = Callable[[int, int], None]


def read_records(path: Path) -> dict[str, dict[str, Any]]:
    """Records by question id; a torn last line (a crash mid-write) is ignored."""
    out: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return out
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        out[rec["id"]] = rec
    return out


def run_records(questions: list[Question], edge: EdgeQA, cloud: CloudClient | None, path: Path,
                cloud_timeout_s: float = 60.0, progress: Progress | None = None,
                oracle_context: bool = False) -> dict[str, dict[str, Any]]:
    """Answer every question not yet in ``path`` on the edge and in the cloud; return all records.

    Each record is appended and flushed as soon as it is complete, so an interruption loses at
    most the question in flight. A record whose cloud call failed (a timeout on a busy machine) is
    read again: its new line supersedes the old one.
    """
    done = read_records(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    todo = [q for q in questions if q.id not in done or (cloud is not None and failed(done[q.id]))]
    with path.open("a") as fh:
        for i, q in enumerate(todo):
            rec = answer_once(q, edge, cloud, cloud_timeout_s, oracle_context)
            fh.write(json.dumps(rec) + "\n")
            fh.flush()
            done[q.id] = rec
            if progress:
                progress(len(questions) - len(todo) + i + 1, len(questions))
    return done


def gold_passage(q: Question, edge: EdgeQA) -> Retrieved:
    """The question's own paragraph as the only retrieved passage (``--oracle-context``)."""
    emb = edge.embedder.run(question=q.question)
    doc = Document(id=document_id(q.title, q.context), content=q.context,
                   meta={"title": q.title, "source": "gold paragraph"}, score=1.0)
    return Retrieved(emb["embedding"], [doc], {**emb["timings"], "retrieve": 0.0})


def answer_once(q: Question, edge: EdgeQA, cloud: CloudClient | None, cloud_timeout_s: float,
                oracle_context: bool = False) -> dict[str, Any]:
    t0 = time.perf_counter()
    retrieved = gold_passage(q, edge) if oracle_context else edge.retrieve(q.question)
    t_retrieved = time.perf_counter()
    ans = edge.generate(q.question, retrieved)
    t_edge = time.perf_counter()
    gold_id = document_id(q.title, q.context)
    ids = retrieved.ids
    rec: dict[str, Any] = {
        "id": q.id,
        "question": q.question,
        "answers": list(q.answers),
        "has_answer": q.has_answer,
        "gold_rank": ids.index(gold_id) + 1 if gold_id in ids else None,
        "passages": [d.content or "" for d in retrieved.documents],
        "passage_ids": ids,
        "titles": [str(d.meta.get("title", "")) for d in retrieved.documents],
        "scores": [round(float(d.score or 0.0), 5) for d in retrieved.documents],
        # each passage's fused, dense and per-term BM25 scores: the retrieval signals of the routing models
        "passage_scores": [asdict(s) for s in ans.scores],
        "embedding": [round(float(x), 5) for x in retrieved.embedding],  # for the answer cache in replay
        "retrieval_ms": (t_retrieved - t0) * 1000.0,
        "edge": {
            "answer": ans.answer,
            "reading": ans.reading.to_json(),  # every passage's raw signals: the routing models' features come from these
            "features": ans.features,
            "timings": {**retrieved.timings, **ans.timings},
            "usage": ans.usage,
            "total_ms": (t_edge - t0) * 1000.0,
            "f1": score_question(q, ans.answer)["f1"],
        },
    }
    if cloud is not None:
        passages = retrieved.passages
        t1 = time.perf_counter()
        try:
            reply = cloud.ask(q.question, passages, timeout_s=cloud_timeout_s)
        except Exception as exc:  # recorded, not raised: one bad call must not stop a long run
            rec["cloud"] = {"error": str(exc)[:200], "total_ms": (time.perf_counter() - t1) * 1000.0}
        else:
            rec["cloud"] = {
                "answer": reply.answer,
                "confidence": reply.confidence,
                "p_answerable": reply.p_answerable,
                "reading": reply.reading.to_json(),
                "timings": reply.timings,
                "bytes_up": reply.bytes_up,
                "bytes_down": reply.bytes_down,
                "usage": reply.usage,
                "total_ms": (time.perf_counter() - t1) * 1000.0,
                "f1": score_question(q, reply.answer)["f1"],
            }
    return rec


def failed(record: dict[str, Any]) -> bool:
    """Did the record's cloud call fail?"""
    return "error" in record.get("cloud", {})


def labelled(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records with a cloud answer, as used for fitting and replay."""
    return [r for r in records if "cloud" in r and "error" not in r["cloud"]]


def main() -> None:
    """`python -m eval.records`: records for the calibration split and for held-out dev-a questions."""
    import argparse
    import tempfile


    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--data", type=Path, default=Path("data/squad-v2-dev-a.json"))
    ap.add_argument("--extra", type=Path, default=Path("data/squad-v2-extra-paragraphs.json"))
    ap.add_argument("--calibration-n", type=int, default=None,
                    help="the first N calibration-split questions (default: all of them)")
    ap.add_argument("--eval-n", type=int, default=0, help="the first N held-out questions (default: none; "
                    "`ecqa eval --skip-calibration-split` records and reports those)")
    ap.add_argument("--network", default="wifi")
    ap.add_argument("--out", type=Path, default=Path("bench"))
    ap.add_argument("--qdrant", type=Path, default=None, help="index folder (default OUT/qdrant); runs may share one")
    args = ap.parse_args()
    questions = load_questions(args.data)
    calib = [q for q in questions if in_calibration_split(q.id)][: args.calibration_n]  # None: all
    held_out = [q for q in questions if not in_calibration_split(q.id)][: args.eval_n]
    args.out.mkdir(parents=True, exist_ok=True)
    qdrant = args.qdrant or args.out / "qdrant"
    with open_store(load_settings(qdrant_path=qdrant)) as store:
        index_files(load_settings(), store, [args.data, args.extra], collection="eval")
    with tempfile.TemporaryDirectory() as tmp, embedded_stack(Path(tmp), network=args.network) as stack:
        s = load_settings(qdrant_path=qdrant, collection="eval", cloud_url=stack.cloud_url, cloud_dir=stack.cloud_dir)
        with open_store(s) as store:
            edge = EdgeQA(s, store).warm_up()
            cloud = cloud_client_from(s)

            def show(done: int, total: int) -> None:
                print(f"{done}/{total}", flush=True)

            if calib:
                run_records(calib, edge, cloud, args.out / "records-calibration.jsonl", progress=show)
            if held_out:
                run_records(held_out, edge, cloud, args.out / "records-eval.jsonl", progress=show)


if __name__ == "__main__":
    main()
