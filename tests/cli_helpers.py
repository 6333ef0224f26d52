"""Assertions shared by the CLI tests (importable: tests/ is on sys.path through tests/conftest.py)."""

from __future__ import annotations


def one_error_line(result) -> str:  # type: ignore[no-untyped-def]
    """The single "error: … — how to fix" line of a CLI run that failed as a user mistake (exit 2)."""
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ") and "Traceback" not in result.stderr
    assert " — " in lines[0]  # every message says how to fix it
    return lines[0]
