"""BENCHMARKS.md is assembled from blocks, each between two HTML comments and rewritten by one make target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def replace_block(path: Path, start: str, end: str, md: str, heading: str) -> None:
    """Replace the text between ``start`` and ``end`` (markers included in ``md``) in ``path``, or
    append ``md`` under ``heading`` when the file has no such block yet."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + md.rstrip("\n") + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n" + md.rstrip("\n") + "\n"
    path.write_text(text)


def publish(results: Any, out: Path | None, md: str, benchmarks_md: Path, start: str, end: str, heading: str) -> None:
    """A benchmark's last step: its results as JSON in ``out`` (None: re-rendered from a saved one, nothing
    to write), its block in BENCHMARKS.md, the block printed."""
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2))
    replace_block(benchmarks_md, start, end, md, heading)
    print(md)
