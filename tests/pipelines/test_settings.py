from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.errors import ConfigError
from pipelines.settings import Settings, load_settings


def test_defaults_use_per_user_data_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ECQA_QDRANT_PATH")
    s = load_settings()
    assert s.collection == "squad" and s.top_k == 3 and s.hybrid and s.fusion == "convex"
    assert s.store == "edge" and s.effective_qdrant_path() == tmp_path / "xdg" / "ecqa" / "qdrant-edge"
    assert load_settings(store="local").effective_qdrant_path() == tmp_path / "xdg" / "ecqa" / "qdrant"


def test_env_overrides_defaults_and_flags_override_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECQA_TOP_K", "5")
    monkeypatch.setenv("ECQA_QDRANT_URL", "http://qdrant:6333")
    assert load_settings().top_k == 5
    assert load_settings(top_k=2).top_k == 2
    assert load_settings(top_k=None).top_k == 5  # an unset flag does not override
    assert load_settings().qdrant_url == "http://qdrant:6333"


def test_toml_file_is_read_below_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "ecqa.toml"
    cfg.write_text('collection = "docs"\ntop_k = 7\n')
    monkeypatch.setenv("ECQA_CONFIG", str(cfg))
    monkeypatch.setenv("ECQA_TOP_K", "4")
    s = load_settings()
    assert (s.collection, s.top_k) == ("docs", 4)


def test_invalid_value_is_one_clear_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECQA_TOP_K", "0")
    with pytest.raises(ConfigError) as exc:
        load_settings()
    msg = str(exc.value)
    assert "top_k" in msg and "ECQA_TOP_K" in msg and "\n" not in msg


def test_bad_collection_name_and_missing_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="collection"):
        load_settings(collection="bad name!")
    monkeypatch.setenv("ECQA_CONFIG", str(tmp_path / "nope.toml"))
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings()


def test_malformed_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    cfg = tmp_path / "ecqa.toml"
    cfg.write_text("top_k = = 3\n")
    monkeypatch.setenv("ECQA_CONFIG", str(cfg))
    with pytest.raises(ConfigError, match="TOML"):
        load_settings()


def test_secrets_are_redacted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECQA_QDRANT_API_KEY", "s3cr3t-key")
    s = load_settings()
    assert s.qdrant_api_key is not None and s.qdrant_api_key.get_secret_value() == "s3cr3t-key"
    assert "s3cr3t" not in repr(s) and "s3cr3t" not in str(s.redacted())
    assert s.redacted()["qdrant_api_key"] == "**********"


def test_every_field_is_described() -> None:
    assert all(f.description for f in Settings.model_fields.values())


@pytest.mark.parametrize(("env", "value"), [("ECQA_BUDGET_MS", "nan"), ("ECQA_BUDGET_MS", "inf"),
                                            ("ECQA_CACHE_THRESHOLD", "nan"), ("ECQA_DENSE_WEIGHT", "nan"),
                                            ("ECQA_CLOUD_READ_TIMEOUT_S", "inf")])
def test_non_finite_numbers_are_refused(monkeypatch: pytest.MonkeyPatch, env: str, value: str) -> None:
    """Defect #12.8: a NaN or infinite setting must not reach the cascade (or its JSON)."""
    monkeypatch.setenv(env, value)
    with pytest.raises(ConfigError) as exc:
        load_settings()
    msg = str(exc.value)
    assert env in msg and "finite" in msg and "\n" not in msg


def test_calibration_file_with_a_bad_threshold_is_refused(tmp_path: Path) -> None:
    import json

    from pipelines.calibration import DEFAULT_CALIBRATION, Calibration

    doc = json.loads(DEFAULT_CALIBRATION.read_text())
    path = tmp_path / "cal.json"
    for bad in (float("nan"), 2.0, -0.5, "0.5", None):
        doc["escalate"]["threshold"] = bad
        path.write_text(json.dumps(doc))
        with pytest.raises(ConfigError) as exc:
            Calibration.load(path)
        assert "escalate" in str(exc.value) or "not a finite number" in str(exc.value)
        assert "make calibrate" in str(exc.value) and "\n" not in str(exc.value)
    doc = json.loads(DEFAULT_CALIBRATION.read_text())
    del doc["cloud_edge"]["quality"]  # a model missing: never a default in its place
    path.write_text(json.dumps(doc))
    with pytest.raises(ConfigError, match="malformed .*make calibrate"):
        Calibration.load(path)


@pytest.mark.parametrize(("name", "fragment"), [("a" * 233, "233 bytes"), ("é" * 120, "240 bytes"),
                                                ("bad name", "characters other than")])
def test_collection_names_are_checked_in_bytes_and_charset(name: str, fragment: str) -> None:
    """Defect #12.6: the length that matters is the backing collection's folder name, in bytes."""
    with pytest.raises(ConfigError) as exc:
        load_settings(collection=name)
    msg = str(exc.value)
    assert fragment in msg and "ECQA_COLLECTION" in msg and "\n" not in msg
    assert load_settings(collection="a" * 232).collection == "a" * 232


def test_an_unknown_key_in_the_toml_file_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Found by the fuzz harness: a TOML key holding a line break was printed raw (two lines)."""
    cfg = tmp_path / "ecqa.toml"
    cfg.write_text('"top_k\\r\\nx" = 3\n')
    monkeypatch.setenv("ECQA_CONFIG", str(cfg))
    with pytest.raises(ConfigError) as exc:
        load_settings()
    msg = str(exc.value)
    assert "unknown setting 'top_k\\r\\nx'" in msg and "ecqa config show" in msg and "\n" not in msg and "\r" not in msg


def test_one_passage_length_for_both_tiers_that_keeps_every_dev_a_answer() -> None:
    """Finding 4: passages were cut at 900 characters on both tiers (6.8% of dev-a's answerable questions
    had every gold answer past it), and the cloud client and its benchmark said 1500: one setting now."""
    import json

    from haystack import Document

    import benchmarks.cloud_tier
    from cloud.cloud_answerer import CloudAnswerer
    from edge.prompt_builder import EdgePromptBuilder
    from pipelines.cloud_path import cloud_answerer_from

    assert [f for f in Settings.model_fields if "passage_chars" in f] == ["passage_chars"]
    s = load_settings(cloud_url="https://127.0.0.1:1")
    assert cloud_answerer_from(s).passage_chars == s.passage_chars == CloudAnswerer("u", "d").passage_chars
    assert EdgePromptBuilder().passage_chars == s.passage_chars == benchmarks.cloud_tier.PASSAGE_CHARS
    doc = Document(content="x" * 3000 + " Miret is the capital.")
    assert EdgePromptBuilder(s.passage_chars).run(documents=[doc])["passages"][0].text.endswith("capital.")
    data = json.loads((Path(__file__).resolve().parents[2] / "data" / "squad-v2-dev-a.json").read_text())
    ends = [min(a["answer_start"] + len(a["text"]) for a in q["answers"])
            for art in data["data"] for p in art["paragraphs"] for q in p["qas"] if q["answers"]]
    assert len(ends) == 1721 and max(ends) <= s.passage_chars
