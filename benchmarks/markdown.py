"""BENCHMARKS.md is assembled from blocks, each between two HTML comments and rewritten by one make target."""

from __future__ import annotations

from pathlib import Path


def replace_block(path: Path, start: str, end: str, md: str, heading: str) -> None:
    """Replace the text between ``start`` and ``end`` (markers included in ``md``) in ``path``, or
    append ``md`` under ``heading`` when the file has no such block yet."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        text = text[: text.index(start)] + md.rstrip("\n") + text[text.index(end) + len(end):]
    else:
        text = text.rstrip("\n") + f"\n\n{heading}\n\n" + md.rstrip("\n") + "\n"
    path.write_text(text)
