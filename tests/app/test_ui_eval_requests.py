"""The Evaluation tab's request handling without a browser (issue 22, finding 7): it read any path on the
server (`/etc/passwd`), said different things for missing and unreadable files (an existence oracle),
rounded a question count of 1.5 to 2, and left an empty report folder behind each refused run."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from app.ui_eval import BUNDLED, EvalFileError, eval_file, keep_upload, question_count, run_eval_request
from pipelines.settings import load_settings


@pytest.fixture
def service(tmp_path: Path) -> Any:
    return SimpleNamespace(settings=load_settings(eval_dir=tmp_path / "eval"), cascade=SimpleNamespace(cloud=None, edge=None),
                           store=None, lock=threading.Lock())


@pytest.mark.parametrize("path", ["/etc/passwd", "/etc/shadow", "/no/such/file.json", "/root", "", "   ",
                                  f"{BUNDLED.parent}/../pyproject.toml", f"{BUNDLED.parent}/missing.json", "a\x00b"])
def test_a_path_outside_the_data_and_uploads_folders_is_one_message(service: Any, path: str) -> None:
    status, tables, plots = run_eval_request(service, path, 2, ["edge"])
    assert status == (f"⚠️ cannot use this file — choose a SQuAD v2 .json file from {BUNDLED.parent} or upload one "
                      "with the button") and tables is None and plots is None
    assert not (Path(service.settings.eval_dir) / "ui").exists()  # nothing made


def test_the_bundled_file_and_uploads_are_usable(service: Any, tmp_path: Path) -> None:
    assert eval_file(service, str(BUNDLED)) == BUNDLED.resolve()
    outside = tmp_path / "mine squad?.json"
    outside.write_text("{}")
    with pytest.raises(EvalFileError):
        eval_file(service, str(outside))
    kept = keep_upload(service, str(outside))
    assert Path(kept).parent == Path(service.settings.eval_dir) / "uploads" and Path(kept).name == "mine_squad_.json"
    assert eval_file(service, kept) == Path(kept).resolve()


@pytest.mark.parametrize("count", [1.5, "10", True, float("nan"), 0, 201, None, [3]])
def test_a_count_that_is_not_a_whole_number_in_range_is_refused_not_rounded(service: Any, count: Any) -> None:
    with pytest.raises(EvalFileError, match="whole number of questions from 1 to 200"):
        question_count(count)
    assert run_eval_request(service, str(BUNDLED), count, ["edge"])[0].startswith("⚠️ choose a whole number")


def test_whole_counts_pass_as_ints() -> None:
    assert question_count(2.0) == 2 and question_count(200) == 200


@pytest.mark.parametrize("chosen", [[], None, "edge", ["sky"], [1]])
def test_policies_must_be_known_names(service: Any, chosen: Any) -> None:
    assert run_eval_request(service, str(BUNDLED), 2, chosen)[0] == "⚠️ choose at least one policy"


def test_a_refused_run_leaves_no_folder_behind(service: Any, tmp_path: Path) -> None:
    bad = tmp_path / "notes.json"
    bad.write_text(json.dumps({"hello": "world"}))
    kept = keep_upload(service, str(bad))
    status, tables, _ = run_eval_request(service, kept, 2, ["edge"])
    assert status.startswith("⚠️") and "SQuAD v2" in status and tables is None
    ui = Path(service.settings.eval_dir) / "ui"
    assert not ui.exists() or list(ui.iterdir()) == []
