"""`ecqa eval` run the way an engineer runs it, on a SQuAD v2 file the project has never seen:
real MiniLM, real Qdrant, real Qwen2.5-Coder-0.5B on the edge, a real gateway with Qwen2.5-Coder-1.5B behind real TLS
over an emulated link. The report's figures are recomputed from the files it writes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_helpers import one_error_line
from official_squad_v2 import official_eval
from routing_helpers import calibration, record
from typer.testing import CliRunner

from app.cli import app
from edge.answer_cache import AnswerCache
from eval.replay import route_records
from eval.report import latency_stats
from pipelines.policies import CascadePolicy, CloudPolicy

runner = CliRunner()
ECQA = str(Path(sys.executable).parent / "ecqa")
PNG = b"\x89PNG\r\n\x1a\n"


def ecqa(*args: str):  # type: ignore[no-untyped-def]
    return runner.invoke(app, list(args))


# --- routing details: cache hits, degraded calls, stage sums ---------------------------------------
def _record(i: int, question: str, cloud: dict | None = None) -> dict:
    rec = record(i, True, "Miret", "Miret", edge_p=0.9)
    rec.update(question=question, retrieval_ms=40.0, embedding=[1.0, 0.0, 0.0])
    rec["edge"].update(timings={"embed": 10.0, "retrieve": 30.0}, total_ms=1000.0)
    rec["cloud"].update(timings={"seal": 1.0, "network": 50.0, "cloud": 600.0, "open": 1.0}, bytes_up=1000, bytes_down=300,
                        usage={"prompt_tokens": 500, "completion_tokens": 2}, total_ms=700.0)
    if cloud is not None:
        rec["cloud"] = cloud
    return rec


def test_repeated_question_is_a_cache_hit_and_stages_add_up() -> None:
    recs = [_record(0, "What is the capital?"), _record(1, "what is the capital"), _record(2, "Who founded it?")]
    routed = route_records(recs, CloudPolicy(), calibration(), 4000, cache=AnswerCache(16, 0.95))
    assert [r.route for r in routed] == ["cloud", "cache", "cloud"]
    assert routed[1].answer == "Miret" and routed[1].latency_ms < 5  # the exact level answers before retrieval
    assert routed[0].latency_ms == pytest.approx(40.0 + 700.0)  # retrieval, then the cloud call; no SLM
    assert routed[0].cloud_tokens == {"prompt": 500, "completion": 2}
    for r in routed:
        assert sum(r.stages.values()) == pytest.approx(r.latency_ms)


def test_failed_cloud_call_degrades_to_the_edge_answer() -> None:
    rec = _record(0, "What is the capital?", cloud={"error": "connection refused", "total_ms": 5.0})
    [r] = route_records([rec], CascadePolicy(threshold=0.0), calibration(), 4000)
    assert (r.route, r.answer, r.degraded, r.cloud_called) == ("edge", "Miret", True, True)
    assert r.latency_ms == pytest.approx(1000.0 + 5.0)


def test_latency_stats_percentiles() -> None:
    s = latency_stats([float(x) for x in range(1, 101)])
    assert s["mean"] == pytest.approx(50.5)
    assert s["p50"] == pytest.approx(50.5) and s["p95"] == pytest.approx(95.05) and s["p99"] == pytest.approx(99.01)


# --- bad input: one line, exit 2, before any work ---------------------------------------------------
def test_not_squad_file(tmp_path: Path) -> None:
    bad = tmp_path / "notes.json"
    bad.write_text(json.dumps({"hello": "world"}))
    line = one_error_line(ecqa("eval", "--data", str(bad), "--out", str(tmp_path / "out")))
    assert "SQuAD v2" in line


def test_unknown_policy_lists_the_valid_ones(unseen_squad: Path, tmp_path: Path) -> None:
    line = one_error_line(ecqa("eval", "--data", str(unseen_squad), "--policies", "edge,fastest", "--out", str(tmp_path / "o")))
    assert "fastest" in line
    for name in ("edge", "cloud", "cascade", "latency", "learned"):
        assert name in line


def test_unwritable_out_fails_before_any_work(unseen_squad: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    t0 = time.perf_counter()
    line = one_error_line(ecqa("eval", "--data", str(unseen_squad), "--out", str(blocker / "report")))
    assert "--out" in line and str(blocker) in line
    assert time.perf_counter() - t0 < 5  # no model loaded, nothing indexed
    assert not (tmp_path / "qdrant").exists()


@pytest.mark.parametrize("args, expect", [
    (["--limit", "0"], "--limit"),
    (["--network", "dialup"], "dialup"),
    (["--policies", ""], "--policies"),
    (["--extra-corpus", "/nonexistent/extra.json"], "extra corpus"),
])
def test_other_bad_options(args: list[str], expect: str, unseen_squad: Path, tmp_path: Path) -> None:
    line = one_error_line(ecqa("eval", "--data", str(unseen_squad), "--out", str(tmp_path / "o"), *args))
    assert expect in line


def test_out_folder_of_another_run_is_refused(unseen_squad: Path, tiny_squad: Path, tmp_path: Path) -> None:
    out = tmp_path / "o"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({"data_sha256": "0" * 64}))
    (out / "records.jsonl").write_text('{"id": "z1"}\n')
    line = one_error_line(ecqa("eval", "--data", str(unseen_squad), "--out", str(out)))
    assert "other data" in line and "data_sha256" in line
    assert (out / "records.jsonl").read_text() == '{"id": "z1"}\n'  # nothing stored is lost


def test_score_bad_predictions(unseen_squad: Path, tmp_path: Path) -> None:
    p = tmp_path / "p.json"
    p.write_text("[1, 2]")
    assert "official prediction format" in one_error_line(ecqa("score", str(p), "--data", str(unseen_squad)))
    p.write_text("{not json")
    assert "not JSON" in one_error_line(ecqa("score", str(p), "--data", str(unseen_squad)))


@pytest.mark.parametrize("command", ["eval", "score"])
def test_answers_as_a_string_is_one_line_naming_the_question(command: str, tmp_path: Path) -> None:
    """Defect #12.7: "answers": "Rollo" was an AttributeError traceback in both commands."""
    data = tmp_path / "rollo.json"
    qa = {"id": "q-rollo", "question": "Who founded Normandy?", "answers": "Rollo"}
    data.write_text(json.dumps({"data": [{"title": "Normans", "paragraphs": [{"context": "Rollo ...", "qas": [qa]}]}]}))
    preds = tmp_path / "p.json"
    preds.write_text('{"q-rollo": "Rollo"}')
    args = ["eval", "--data", str(data), "--out", str(tmp_path / "o")] if command == "eval" else \
        ["score", str(preds), "--data", str(data)]
    line = one_error_line(ecqa(*args))
    assert "'q-rollo'" in line and "'answers'" in line
    assert not (tmp_path / "o" / "records.jsonl").exists()  # nothing evaluated, nothing indexed


def test_the_tables_fit_80_columns_whatever_the_figures(tmp_path: Path) -> None:
    """At 100.0 everywhere (5 questions can do it) the policy table ran 85 columns wide: rich cut
    "always no-answer" and every 100.0 to "100…"."""
    from rich.console import Console

    from app.cli_eval import print_report

    top = {"latency_ms": dict.fromkeys(("mean", "p50", "p95", "p99"), 123456.0), "cloud_call_rate": 1.0,
           "abstain_rate": 1.0, **dict.fromkeys(("precision", "recall", "f1", "exact", "has_ans_f1", "no_ans_accuracy"), 100.0)}
    report = {"policies": dict.fromkeys(("edge", "cloud", "cascade", "latency", "learned"), top), "n": 600,
              "baseline_no_answer": top, "config": {"network": "wifi"}, "files": {}}
    console = Console(width=80, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    print_report(report, tmp_path, console)
    text = console.export_text()
    assert "…" not in text and "always no-answer  100.0" in text
    tables = text.split("report: ")[0]  # the last line names the folder, however long its path
    assert max(len(line.rstrip()) for line in tables.splitlines()) <= 80


# --- a real run -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def report_dir(tmp_path_factory: pytest.TempPathFactory, unseen_squad: Path, tiny_squad: Path) -> Path:
    """All five policies on the 5 unseen questions (+ the tiny dev-a paragraphs as distractors), wifi link."""
    root = tmp_path_factory.mktemp("eval")
    env = {**os.environ, "XDG_DATA_HOME": str(root / "xdg"), "ECQA_QDRANT_PATH": str(root / "qdrant")}
    env = {k: v for k, v in env.items() if not k.startswith("ECQA_") or k == "ECQA_QDRANT_PATH"}
    out = root / "report"
    proc = subprocess.run([ECQA, "eval", "--data", str(unseen_squad), "--extra-corpus", str(tiny_squad), "--network",
                           "wifi", "--out", str(out)], capture_output=True, text=True, env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "always no-answer" in proc.stdout
    return out


@pytest.mark.slow
@pytest.mark.network
def test_report_schema_and_files(report_dir: Path) -> None:
    rep = json.loads((report_dir / "report.json").read_text())
    assert set(rep["policies"]) == {"edge", "cloud", "cascade", "latency", "learned"}
    for name, m in rep["policies"].items():
        for key in ("n", "exact", "f1", "precision", "recall", "has_ans_f1", "no_ans_accuracy", "cloud_call_rate",
                    "abstain_rate", "cache_hit_rate"):
            assert isinstance(m[key], (int, float)), (name, key)
        assert set(m["latency_ms"]) >= {"mean", "p50", "p95", "p99"}
        assert m["n"] == 5
    assert rep["baseline_no_answer"]["f1"] == pytest.approx(20.0)  # 1 of the 5 questions is unanswerable
    assert rep["policies"]["cloud"]["cloud_call_rate"] == 1.0 and rep["policies"]["edge"]["cloud_call_rate"] == 0.0
    assert rep["policies"]["cloud"]["cloud_tokens"]["prompt"] > 0
    assert rep["policies"]["cloud"]["cost_usd"]["total"] > 0 and rep["policies"]["edge"]["cost_usd"]["total"] == 0
    assert rep["resources"]["edge"]["rss_max_mib"] > 100 and rep["resources"]["cloud"]["rss_max_mib"] > 100
    assert set(rep["retrieval"]["recall_at"]) == {"1", "2", "3"}
    sweep = rep["sweep"]
    assert 2 <= len(sweep) <= 21 and [r["threshold"] for r in sweep] == sorted(r["threshold"] for r in sweep)
    # Threshold 0: every question escalates, the cascade's keep / drop model (both tiers' readings) decides
    # the cloud's answer; above 1: none does, and the edge answers or abstains as the edge policy does.
    assert sweep[0]["cloud_call_rate"] == 1.0 and sweep[-1]["cloud_call_rate"] == 0.0  # cloud for all … edge for all
    assert sweep[-1]["f1"] == pytest.approx(rep["policies"]["edge"]["f1"], abs=0.01)
    from eval.records import read_records
    from eval.replay import cloud_answer
    from pipelines.calibration import Calibration

    records = read_records(report_dir / "records.jsonl").values()
    cal = Calibration.load()  # the packaged one: the run's environment names none
    kept_all = 100 * sum(cloud_answer(r, cal, with_edge=True)[1] for r in records) / len(records)
    assert sweep[0]["f1"] == pytest.approx(kept_all, abs=0.01)
    md = (report_dir / "report.md").read_text()
    assert "Table 1" in md and "Table 2" in md and "always no-answer (baseline)" in md
    for plot in ("latency.png", "stages.png", "sweep_latency.png", "sweep_cloud_rate.png", "cpu.png"):
        data = (report_dir / plot).read_bytes()
        assert data.startswith(PNG) and len(data) > 5000, plot


@pytest.mark.slow
@pytest.mark.network
def test_report_figures_recomputed_from_predictions(report_dir: Path, unseen_squad: Path) -> None:
    rep = json.loads((report_dir / "report.json").read_text())
    dataset = json.loads(unseen_squad.read_text())["data"]
    for name, m in rep["policies"].items():
        preds = json.loads((report_dir / f"predictions-{name}.json").read_text())
        official = official_eval(dataset, preds)
        assert m["exact"] == pytest.approx(official["exact"], abs=0.01), name
        assert m["f1"] == pytest.approx(official["f1"], abs=0.01), name
        assert m["has_ans_f1"] == pytest.approx(official["HasAns_f1"], abs=0.01), name
        assert m["no_ans_accuracy"] == pytest.approx(official["NoAns_exact"], abs=0.01), name
        details = [json.loads(line) for line in (report_dir / f"details-{name}.jsonl").read_text().splitlines()]
        assert {d["id"]: d["answer"] for d in details} == preds
        lat = latency_stats([d["latency_ms"] for d in details])
        for k in ("mean", "p50", "p95"):
            assert m["latency_ms"][k] == pytest.approx(lat[k]), (name, k)
        assert m["cloud_call_rate"] == pytest.approx(sum(d["cloud_called"] for d in details) / len(details))
        assert m["abstain_rate"] == pytest.approx(sum(d["route"] == "abstain" for d in details) / len(details))
        scored = ecqa("score", str(report_dir / f"predictions-{name}.json"), "--data", str(unseen_squad), "--json")
        assert scored.exit_code == 0, scored.stderr
        assert json.loads(scored.stdout)["f1"] == pytest.approx(m["f1"], abs=0.01)


@pytest.mark.slow
def test_interrupted_run_resumes_without_redoing_questions(unseen_squad: Path, tmp_path: Path) -> None:
    out = tmp_path / "report"
    cmd = [ECQA, "eval", "--data", str(unseen_squad), "--policies", "edge", "--oracle-context", "--out", str(out)]
    env = {**os.environ, "XDG_DATA_HOME": str(tmp_path / "xdg")}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    records = out / "records.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if records.exists() and len(records.read_text().splitlines()) >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    assert "rerun the same command to resume" in stderr and "Traceback" not in stderr
    kept = [line for line in records.read_text().splitlines() if line.strip()]
    assert 2 <= len(kept) < 5
    assert not (out / "report.json").exists()

    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    lines = records.read_text().splitlines()
    assert lines[: len(kept)] == kept  # finished questions were neither lost nor redone
    ids = [json.loads(line)["id"] for line in lines]
    assert sorted(ids) == ["b1", "b2", "z1", "z2", "z3"]
    rep = json.loads((out / "report.json").read_text())
    assert rep["policies"]["edge"]["n"] == 5 and rep["config"]["oracle_context"] is True
    assert all(json.loads(line)["gold_rank"] == 1 for line in lines)  # the gold paragraph is the context


@pytest.mark.slow
@pytest.mark.network
def test_live_mode_answers_through_the_cascade_per_policy(unseen_squad: Path, tmp_path: Path) -> None:
    out = tmp_path / "live"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ECQA_")}
    env.update({"XDG_DATA_HOME": str(tmp_path / "xdg"), "ECQA_QDRANT_PATH": str(tmp_path / "qdrant")})
    cmd = [ECQA, "eval", "--data", str(unseen_squad), "--policies", "edge,cloud", "--live", "--out", str(out), "--json"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rep = json.loads(proc.stdout)
    assert rep["config"]["mode"] == "live" and rep["sweep"] == []
    dataset = json.loads(unseen_squad.read_text())["data"]
    for name in ("edge", "cloud"):
        rows = [json.loads(line) for line in (out / f"live-{name}.jsonl").read_text().splitlines()]
        assert sorted(r["id"] for r in rows) == ["b1", "b2", "z1", "z2", "z3"]
        for r in rows:
            assert sum(r["stages"].values()) == pytest.approx(r["latency_ms"])
        preds = json.loads((out / f"predictions-{name}.json").read_text())
        assert preds == {r["id"]: r["answer"] for r in rows}
        official = official_eval(dataset, preds)
        assert rep["policies"][name]["f1"] == pytest.approx(official["f1"], abs=0.01)
        assert rep["policies"][name]["exact"] == pytest.approx(official["exact"], abs=0.01)
    assert {r["route"] for r in map(json.loads, (out / "live-cloud.jsonl").read_text().splitlines())} == {"cloud"}
    assert rep["policies"]["cloud"]["cloud_tokens"]["prompt"] > 0 and rep["policies"]["edge"]["cloud_call_rate"] == 0
    before = {n: (out / f"live-{n}.jsonl").read_text() for n in ("edge", "cloud")}
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    assert {n: (out / f"live-{n}.jsonl").read_text() for n in ("edge", "cloud")} == before  # nothing answered twice


def test_live_and_oracle_context_do_not_combine(unseen_squad: Path, tmp_path: Path) -> None:
    line = one_error_line(ecqa("eval", "--data", str(unseen_squad), "--live", "--oracle-context", "--out", str(tmp_path / "o")))
    assert "--oracle-context" in line and "--live" in line


def test_records_of_other_models_or_prompts_are_not_resumed(unseen_squad: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """An output folder keeps the records of one model pair and one set of prompts: changing the cloud
    model, the passage lengths or the prompts' text makes the run refuse the folder."""
    from eval.harness import EvalConfig, fingerprint, prompts_fingerprint
    from pipelines.settings import load_settings

    cfg = EvalConfig(data=unseen_squad, out=tmp_path)
    base = fingerprint(cfg, load_settings(), "embedded")
    assert base["prompts_sha256"] == prompts_fingerprint() and len(base["prompts_sha256"]) == 16
    assert fingerprint(cfg, load_settings(cloud_model_path="gemma-3-270m"), "embedded") != base
    assert fingerprint(cfg, load_settings(passage_chars=1500), "embedded") != base
    assert fingerprint(cfg, load_settings(slm_reading="joint"), "embedded") != base
    assert fingerprint(cfg, load_settings(kv_type="f16"), "embedded") != base
    monkeypatch.setattr("eval.harness.prompts_fingerprint", lambda: "another-prompt")
    assert fingerprint(cfg, load_settings(), "embedded") != base
