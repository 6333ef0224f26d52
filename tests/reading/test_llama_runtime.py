"""llama.cpp's run-time CPU dispatch: the right variant is loaded, a crash is one line, the wheel key."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from reading.llama_check import REBUILD_COMMAND, CheckFailed, check
from reading.llama_runtime import X86_VARIANTS, best_variant, cpu_flags, relevant_cpu_flags
from reading.model_manifest import DEFAULT_EDGE_MODEL
from reading.models import model_path

REPO = Path(__file__).resolve().parents[2]

ZEN4 = {"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2", "avx512f", "avx512cd", "avx512vl", "avx512dq", "avx512bw",
        "avx512vbmi", "avx512_vnni", "avx512_bf16"}
ALL = tuple(X86_VARIANTS)


@pytest.mark.parametrize(("flags", "expected"), [
    (ZEN4, "zen4"),  # AMD EPYC Zen 4: AVX-512 with VNNI and BF16, no AVX-VNNI, no AMX
    (ZEN4 | {"amx_tile", "amx_int8"}, "sapphirerapids"),  # Intel with AMX
    ({"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2"}, "haswell"),  # plain AVX2
    ({"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2", "avx_vnni"}, "alderlake"),
    ({"sse4_2", "avx", "f16c", "fma", "avx2", "bmi2", "avx512f"}, "haswell"),  # AVX-512F alone is not ggml's AVX512
    (set(), "x64"),
])
def test_the_best_variant_a_cpu_can_run(flags: set[str], expected: str) -> None:
    assert best_variant(flags, ALL) == expected
    assert set(X86_VARIANTS[expected]) <= flags


def test_no_variant_when_none_was_built_for_the_cpu() -> None:
    assert best_variant({"sse4_2"}, ("haswell", "zen4")) is None


@pytest.mark.slow
def test_one_generation_in_a_child_reports_the_variant_this_cpu_should_run() -> None:
    """The real portable wheel, the real default edge model: one token, and the loaded variant is the
    best of the built ones for this CPU's flags (ggml scores them; our table says which must win)."""
    proc = subprocess.run([sys.executable, "-m", "reading.llama_check", "--json"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert len(report["variants"]) >= 10, "the wheel must carry every x86-64 variant (GGML_CPU_ALL_VARIANTS)"
    assert report["cpu_variant"] in report["variants"]
    assert report["cpu_variant"] == best_variant(cpu_flags(), report["variants"])
    assert report["token"].strip()
    assert Path(report["model"]) == model_path(DEFAULT_EDGE_MODEL)


@pytest.mark.slow
def test_ecqa_doctor_names_the_loaded_variant() -> None:
    proc = subprocess.run([sys.executable, "-m", "app.cli", "doctor", "--json"], cwd=REPO, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["cpu_variant"] == best_variant(cpu_flags(), report["variants"])
    assert report["cpu_flags"] == relevant_cpu_flags()
    human = subprocess.run([sys.executable, "-m", "app.cli", "doctor"], cwd=REPO, capture_output=True, text=True,
                           timeout=300)
    assert human.returncode == 0 and report["cpu_variant"] in human.stdout


def _dying_python(tmp_path: Path, signal_name: str) -> str:
    """A stand-in interpreter that dies of a signal, as a build with the wrong instructions does
    (a fake at the process boundary; the real child is tested above)."""
    script = tmp_path / "python"
    script.write_text(f"#!/bin/sh\nkill -{signal_name} $$\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


@pytest.mark.parametrize("signal_name", ["ILL", "SEGV"])
def test_a_child_killed_by_a_signal_is_one_line_naming_it_the_flags_and_the_fix(tmp_path: Path, signal_name: str) -> None:
    with pytest.raises(CheckFailed) as info:
        check("model.gguf", python=_dying_python(tmp_path, signal_name))
    message = str(info.value)
    assert "\n" not in message
    assert f"SIG{signal_name}" in message
    assert REBUILD_COMMAND in message
    for flag in relevant_cpu_flags():
        assert flag in message


def test_the_make_check_exits_2_with_one_line_when_the_model_does_not_load(tmp_path: Path) -> None:
    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"GGUF" + os.urandom(64))
    proc = subprocess.run([sys.executable, "-m", "reading.llama_check", "--model", str(bad)], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and REBUILD_COMMAND in lines[0]


def _wheelhouse(*args: str) -> str:
    return subprocess.run(["make", "-s", "llama-wheelhouse", *args], cwd=REPO, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_the_cached_wheel_is_keyed_on_the_build_flags() -> None:
    default = _wheelhouse()
    assert default == _wheelhouse()  # stable
    assert "/ecqa/wheels/llama-cpp-" in default
    native = _wheelhouse("LLAMA_CMAKE_ARGS=-DGGML_NATIVE=ON")
    other_version = _wheelhouse("LLAMA_CPP_VERSION=0.3.35")
    assert len({default, native, other_version}) == 3
