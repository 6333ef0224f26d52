"""`make bench-pii`'s pure parts: the seeded corpus (every planted value at its exact offsets), the scorer's matching
rule, the resumable run's complete prefix, and the block rewritten in place from a saved run."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from benchmarks.pii import (
    CARD_TYPES,
    END,
    GROUPS,
    LOCALES,
    NAMES_IN,
    NAMES_OUT,
    OTHER_NAME_LOCALES,
    START,
    STRUCTURED,
    Planted,
    Sample,
    _gold_redacted,
    _with_cloud,
    complete_prefix,
    corpus,
    markdown,
    plant,
    score,
)
from edge.pii import KINDS, NAME_LOCALES

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def small() -> list[Sample]:
    return corpus(seed=7, per_locale=3, names_per_locale=4, lookalikes_per_locale=20)


def test_every_planted_value_sits_at_its_offsets(small: list[Sample]) -> None:
    planted = [(s, p) for s in small for p in s.planted]
    assert planted and all(s.text[p.start:p.end] == p.value for s, p in planted)
    kinds = {p.kind for _, p in planted}
    assert kinds == {*STRUCTURED, "name"} and kinds <= set(KINDS)
    assert {s.group for s in small} == set(GROUPS)
    # Look-alikes plant nothing; every other sentence plants one value, or two names.
    assert all(not s.planted for s in small if s.group == "look-alikes")
    assert all(1 <= len(s.planted) <= 2 for s in small if s.group != "look-alikes")
    # Three values per structured kind and locale (national IDs: three per ID type, from their own locales).
    assert sum(1 for _, p in planted if p.kind == "email") == 3 * len(LOCALES)
    assert {p.source for _, p in planted if p.kind == "national_id"} >= {"US SSN", "UK NHS number", "ES NIF"}
    assert {p.source for _, p in planted if p.kind == "card"} <= set(CARD_TYPES)  # a card's row is its network
    assert all(s.form for s in small if s.group == "look-alikes") and not any(s.form for s in small if s.planted)
    # Some names carry a middle name, flagged.
    assert any(p.middle for _, p in planted) and all(len(p.value.split()) >= 3 for _, p in planted if p.middle)


def test_the_corpus_is_the_same_for_the_same_seed(small: list[Sample]) -> None:
    again = corpus(seed=7, per_locale=3, names_per_locale=4, lookalikes_per_locale=20)
    other = corpus(seed=8, per_locale=3, names_per_locale=4, lookalikes_per_locale=20)
    assert again == small and other != small


def test_the_held_out_name_locales_are_not_the_recognizers(small: list[Sample]) -> None:
    assert not set(OTHER_NAME_LOCALES) & set(NAME_LOCALES)
    outside = {s.locale for s in small if s.group == NAMES_OUT}
    inside = {s.locale for s in small if s.group == NAMES_IN}
    assert outside == set(OTHER_NAME_LOCALES) and inside <= set(NAME_LOCALES)


def test_phone_numbers_carry_libphonenumbers_verdict(small: list[Sample]) -> None:
    phones = [p for s in small for p in s.planted if p.kind == "phone"]
    assert phones and all(isinstance(p.valid, bool) for p in phones)
    assert all(p.valid for s in small for p in s.planted if p.kind != "phone")


def test_plant_refuses_a_template_with_the_wrong_number_of_slots() -> None:
    with pytest.raises(ValueError, match="2 slots for 1"):
        plant("{} and {}", [("name", "Ann Lee", "en_US")], "structured", "en_US")
    s = plant("Ask {} or {}.", [("name", "Ann Lee", "en_US"), ("email", "a@b.org", "en_US")], "structured", "en_US")
    assert s.text == "Ask Ann Lee or a@b.org." and [s.text[p.start:p.end] for p in s.planted] == ["Ann Lee", "a@b.org"]


def test_the_scorer_counts_overlaps_of_the_same_kind() -> None:
    text = "Mail ann@x.org or call 555-0100 now; see 1-80981-872-9."
    email = Planted("email", 5, 14, "ann@x.org", "en_US")
    phone = Planted("phone", 23, 31, "555-0100", "en_US")
    samples = [Sample(text, (email, phone), "structured", "en_US"), Sample("Nothing here.", (), "look-alikes", "en_US")]
    assert text[phone.start:phone.end] == "555-0100"
    found = [[("email", 5, 14), ("email", 5, 14),  # a duplicate counts once
              ("phone", 27, 31),  # overlaps the phone number: a hit, but not the whole value
              ("ip", 23, 31),  # on the phone number under another label: redacted, mislabelled
              ("phone", 41, 54)],  # the ISBN: a false alarm
             []]
    r = score(samples, found)
    e, p = r["kinds"]["email"], r["kinds"]["phone"]
    assert (e["planted"], e["hit"], e["covered"], e["found"], e["precision"]) == (1, 1, 1, 1, 1.0)
    assert (p["planted"], p["hit"], p["covered"], p["recall"], p["coverage"]) == (1, 1, 0, 1.0, 0.0)
    assert (p["found"], p["found_true"], p["found_clean"], p["precision"]) == (2, 1, 1, 0.5)
    assert r["kinds"]["ip"]["found_other"] == 1 and r["kinds"]["ip"]["precision"] == 0.0
    assert r["false_alarms"]["phone"] == [("1-80981-872-9", 1)]
    assert r["mislabelled"]["ip"] == [("phone: 555-0100", 1)]
    assert r["sources"]["phone: en_US"]["recall"] == 1.0


def test_a_miss_and_a_wrong_kind_lower_recall_but_not_redaction_by_any_kind() -> None:
    s = Sample("Call Ann Lee at 10.0.0.1.", (Planted("name", 5, 12, "Ann Lee", "fi_FI"),
                                              Planted("ip", 16, 24, "10.0.0.1", "en_US")), NAMES_OUT, "fi_FI")
    r = score([s], [[("phone", 16, 24)]])
    assert r["groups"][NAMES_OUT]["recall"] == 0.0 and r["groups"][NAMES_OUT]["recall_any"] == 0.0
    assert r["groups"]["ip"]["recall"] == 0.0 and r["groups"]["ip"]["recall_any"] == 1.0
    assert r["kinds"]["phone"]["precision"] == 0.0 and r["kinds"]["phone"]["found_clean"] == 0


def test_names_with_a_middle_name_have_their_own_row() -> None:
    s = Sample("Ask Henry David Thoreau.", (Planted("name", 4, 23, "Henry David Thoreau", "en_US", middle=True),),
               NAMES_IN, "en_US")
    r = score([s], [[("name", 4, 15)]])  # "Henry David": the surname is left
    row = r["groups"][f"{NAMES_IN}, middle name"]
    assert (row["recall"], row["coverage"]) == (1.0, 0.0) and r["groups"][NAMES_IN]["coverage"] == 0.0


def test_invalid_phone_numbers_are_kept_apart() -> None:
    s = [Sample("a 555 b", (Planted("phone", 2, 5, "555", "en_US", valid=False),), "structured", "en_US"),
         Sample("a 0201 b", (Planted("phone", 2, 6, "0201", "en_GB"),), "structured", "en_GB")]
    r = score(s, [[], [("phone", 2, 6)]])
    assert r["groups"]["phone"]["recall"] == 0.5 and r["groups"]["phone, valid"]["recall"] == 1.0
    assert r["sources"]["phone: en_US (not a valid number)"]["planted"] == 1


def test_an_unfinished_run_reports_its_complete_prefix_in_file_order() -> None:
    records = [{"id": i} for i in "abcde"]
    changed = {"b": {"counts": {"name": 1}, "key": "kb"}, "d": {"counts": {"name": 2}, "key": "kd"}}

    def read(key: str) -> dict[str, Any]:
        return {"off": {}, "redact": {}, "key": key}

    assert [r["id"] for r in complete_prefix(records, changed, {"b": read("kb")})] == ["a", "b", "c"]
    assert [r["id"] for r in complete_prefix(records, changed, {"b": read("kb"), "d": read("kd")})] == list("abcde")
    assert [r["id"] for r in complete_prefix(records, changed, {"b": {"id": "b", "error": "x", "key": "kb"}})] == ["a"]
    # A re-read made for another redacted payload (an older redactor) is stale.
    assert [r["id"] for r in complete_prefix(records, changed, {"b": read("old")})] == ["a"]


def test_a_reread_replaces_the_reading_and_keeps_the_records_timings() -> None:
    r = {"id": "q", "cloud": {"answer": "old", "reading": {"chosen": 0}, "f1": 0.0, "total_ms": 5000.0, "bytes_up": 900,
                              "confidence": 0.1, "p_answerable": 0.2}}
    read = {"answer": "new", "reading": {"chosen": 1}, "f1": 1.0, "total_ms": 1.0, "confidence": 0.9, "p_answerable": 0.8}
    out = _with_cloud(r, read)
    assert out["cloud"]["answer"] == "new" and out["cloud"]["f1"] == 1.0 and out["cloud"]["reading"] == {"chosen": 1}
    assert out["cloud"]["total_ms"] == 5000.0 and out["cloud"]["bytes_up"] == 900 and r["cloud"]["answer"] == "old"


def test_a_gold_answer_hidden_by_the_redaction_is_told_apart() -> None:
    read = {"values": {"<PERSON_1>": "Charles River", "<PERSON_2>": "India Company"}}
    assert _gold_redacted(read, {"answers": ["the Charles River"]})
    assert _gold_redacted(read, {"answers": ["", "Dutch East India Company"]})
    assert not _gold_redacted(read, {"answers": ["Boston"]}) and not _gold_redacted(read, {"answers": [""]})


def result() -> dict[str, Any]:
    counts = {"planted": 10, "hit": 9, "hit_any": 10, "covered": 9, "found": 11, "found_true": 9, "found_other": 1,
              "found_clean": 1, "recall": 0.9, "recall_any": 1.0, "coverage": 0.9, "precision": 9 / 11}
    groups = {k: counts for k in (*STRUCTURED, "phone, valid", NAMES_IN, NAMES_OUT)}
    groups["look-alikes"] = {**counts, "planted": 0, "found": 2, "found_true": 0, "recall": None}
    ci = [1.0, 2.0]
    row = {"f1": 60.0, "f1_ci95": ci, "has_ans_f1": 30.0, "no_ans_accuracy": 88.0, "changed_f1": 55.0}
    red = {**row, "f1": 59.0, "vs_off": -1.0, "vs_off_ci95": [-2.0, 0.5], "changed_vs_off_ci95": [-3.0, 1.0], "f1_up": 4,
           "f1_down": 9, "has_vs_off": -2.5, "has_vs_off_ci95": [-5.0, -0.1]}
    return {
        "when": "2026-12-07",
        "detection": {"samples": 100, "seed": 1, "groups": groups, "kinds": {**{k: counts for k in STRUCTURED}, "name": counts},
                      "sources": {"phone: it_IT": counts}, "missed_examples": {"phone: it_IT": ["0541978693"]},
                      "false_alarms": {"phone": [["1-80981-872-9", 1]]}, "false_alarm_counts": {"phone": 1},
                      "samples_by_group": {"look-alikes": 20}, "non_persons_taken": ["Victoria Falls"],
                      "non_persons_n": 40, "lookalike_forms": ["ISBN-10", "EAN-13"],
                      "false_alarm_forms": [["phone on ISBN-10", 1]], "mislabel_pairs": [["email on url", 3]]},
        "squad": {"contexts": {"n": 200, "spans": {"name": 150}, "texts_touched": {"name": 90}, "any_touched": 91,
                               "top_values": {"name": [["Norman French", 12]]}},
                  "questions": {"n": 1000, "spans": {"name": 20}, "texts_touched": {"name": 19}, "any_touched": 19}},
        "f1": {"n": 300, "answerable": 140, "changed": 152, "counts": {"name": 300}, "in_question": 9, "cloud_answer_differs": 12,
               "restored": 3, "off_equals_record": 150, "asked_n": 300, "worse": 14, "worse_gold_redacted": 9,
               "rows": {"always no-answer": {"f1": 53.0, "f1_ci95": ci}, "cloud/off": row, "cloud/redact": red,
                        "cascade/off": row, "cascade/redact": red, "cloud/records": row}},
        "latency": {"n": 300, "p50_ms": 12.0, "p95_ms": 30.0, "max_ms": 50.0, "chars_mean": 2100.0,
                    "cascade_p50_ms": 4000.0},
        "load": {"repeats": 3, "total_s": 4.0, "import_s": 3.0, "construct_s": 1.0, "first_find_s": 0.05},
    }


def test_the_block_names_the_command_the_rule_and_every_row() -> None:
    md = markdown(result())
    assert md.startswith(START) and md.rstrip().endswith(END) and "`make bench-pii`" in md
    assert "overlaps a planted span of the same kind" in md
    for needle in (f"| {NAMES_IN} | 10 | 90.0% |", f"| {NAMES_OUT} | 10 |", "| always no-answer | — | 53.0 |",
                   "| cloud only | redact | 59.0 |", "-1.0 (-2.0 – +0.5)", "«Victoria Falls»", "| phone: it_IT | 10 | 90.0% |",
                   "«Norman French» 12", "p50 12.0 ms", "0.30% of the",
                   "phone on ISBN-10 ×1", "email on url ×3", "10 of each of 2 forms",
                   "below it: email 90.0%", "phone 90.0% (it_IT 90.0%)",
                   "Cloud only with redaction: -1.0 F1 against off (-2.0 – +0.5), no measurable change",
                   "on the answerable ones -2.5 (-5.0 – -0.1), a measurable loss. The cascade with redaction",
                   "higher with redaction on 4, lower on 9",
                   "Of the 14 questions whose cloud answer (before keep / drop) scores lower with redaction, 9 have"):
        assert needle in md, needle


def test_from_json_rewrites_the_block_in_place(tmp_path: Path) -> None:
    saved = tmp_path / "results.json"
    saved.write_text(json.dumps(result()))
    md = tmp_path / "BENCHMARKS.md"
    md.write_text(f"# Benchmarks\n\nbefore\n\n{START}\nOLD BLOCK\n{END}\n\nafter\n")
    subprocess.run([sys.executable, "-m", "benchmarks.pii", "--from-json", str(saved), "--benchmarks-md", str(md)],
                   check=True, cwd=ROOT, capture_output=True, text=True)
    text = md.read_text()
    assert "OLD BLOCK" not in text and text.count(START) == 1 and "before" in text and text.rstrip().endswith("after")
    assert "| cascade | redact | 59.0 |" in text
