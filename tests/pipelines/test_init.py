"""The door of pipelines/ (`from pipelines import …`): every name it lists is there, and it loads only what a name needs."""

from __future__ import annotations

import subprocess
import sys

import pytest

import pipelines
from pipelines.answer import build_cascade
from pipelines.settings import open_store

HEAVY = ("haystack", "torch", "sentence_transformers", "llama_cpp", "numpy")


def test_every_listed_name_is_the_modules_own() -> None:
    assert len(pipelines.__all__) == len(set(pipelines.__all__)) > 60
    for name in pipelines.__all__:
        assert getattr(pipelines, name) is not None, name
    assert pipelines.open_store is open_store and pipelines.build_cascade is build_cascade


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        pipelines.no_such_name  # noqa: B018
    with pytest.raises(ImportError):
        from pipelines import open_stores  # noqa: F401


def test_the_door_loads_only_the_module_a_name_needs() -> None:
    """`ecqa --help` and a bad flag's error import pipelines: haystack, torch and llama.cpp must not come with it."""
    code = ("import sys; import pipelines; from pipelines import get_profile, load_settings, open_store, "
            f"prompts_fingerprint; print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    light = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert light.stdout.strip() == "[]"
    code = f"import sys; from pipelines import EdgeQA; print(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    heavy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert "haystack" in heavy.stdout  # the check above can see a heavy import
