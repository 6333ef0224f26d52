"""Read input files (SQuAD v2 JSON, JSONL, plain text, Markdown) into passages to index."""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from indexing.chunking import split_passages
from indexing.errors import EmptyCorpusError, InputFileError, InputFormatError

logger = logging.getLogger(__name__)

# Suffix (lower-cased) → format name reported in SourceSummary.format.
FORMATS: dict[str, str] = {".json": "squad", ".jsonl": "jsonl", ".txt": "text", ".md": "text"}
SUPPORTED = ".json (SQuAD v2), .jsonl, .txt, .md"

_MD_TITLE = re.compile(r"^#[ \t]+(?P<title>.+?)(?:[ \t]+#+)?[ \t]*$")
_MD_FENCE = re.compile(r"^[ \t]{0,3}(```|~~~)")


@dataclass(frozen=True)
class SourceText:
    """One unit of retrieval as read from an input file, before it is embedded: a SQuAD paragraph, a JSONL record
    or a chunk of a text file (retrieved, it comes back as a :class:`reading.prompts.Passage`)."""

    text: str
    title: str
    source: str  # the input file's name as given (str(path))
    meta: dict[str, Any] = field(default_factory=dict)  # JSON-able extra fields, per format


@dataclass(frozen=True)
class SourceSummary:
    """How many passages one input file gave, and in which format it was read."""

    path: str
    format: str  # "squad" | "text" | "jsonl"
    passages: int

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form, for reports and ``--json`` output."""
        return asdict(self)


def load_passages(
    paths: Sequence[Path], chunk_chars: int = 1200, overlap_chars: int = 200
) -> tuple[list[SourceText], list[SourceSummary]]:
    """Load passages from files and directories (recursively), in the order given.

    :param paths: files (.json SQuAD v2, .jsonl, .txt, .md) or directories to search for such files.
    :param chunk_chars: max characters of a passage cut from .txt/.md files and from longer JSONL records.
    :param overlap_chars: characters of whole sentences repeated between neighbouring text chunks.
    :returns: the passages and one summary per file read. Duplicates are kept; the index builder dedups.
    :raises InputFileError: a path is missing, unreadable or not UTF-8.
    :raises InputFormatError: a file is malformed, not SQuAD v2, or has an unsupported extension.
    :raises EmptyCorpusError: a directory holds no supported file, or all inputs together hold no passage.
    :raises ValueError: ``chunk_chars`` < 1 or ``overlap_chars`` < 0.
    """
    if chunk_chars < 1 or overlap_chars < 0:
        raise ValueError(f"need chunk_chars >= 1 and overlap_chars >= 0, got {chunk_chars} and {overlap_chars}")
    if isinstance(paths, (str, os.PathLike)):
        # A lone path would otherwise be iterated character by character.
        paths = [Path(paths)]
    if not paths:
        raise EmptyCorpusError("no input paths given — pass SQuAD v2 .json, .jsonl, .txt or .md files or a folder")

    passages: list[SourceText] = []
    summaries: list[SourceSummary] = []
    for path in (Path(p) for p in paths):
        for file in _expand(path):
            loaded = _load_file(file, chunk_chars, overlap_chars)
            passages.extend(loaded)
            summaries.append(SourceSummary(path=str(file), format=FORMATS[file.suffix.lower()], passages=len(loaded)))
            logger.debug("loaded %s passages from %s", len(loaded), file)
    if not passages:
        names = ", ".join(str(p) for p in paths)
        raise EmptyCorpusError(
            f"no passages found in {names} — the inputs are empty; pass SQuAD v2 .json, "
            "JSONL with a 'text' per line, or non-empty .txt/.md files"
        )
    logger.info("loaded %s passages from %s files", len(passages), len(summaries))
    return passages, summaries


def _expand(path: Path) -> list[Path]:
    """The files to read for one argument: the file itself, or a folder's supported files in sorted order."""
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in FORMATS and p.is_file())
        if not files:
            raise EmptyCorpusError(f"{path} holds no supported file ({SUPPORTED}) — add some or pass the files directly")
        return files
    if not path.exists():
        raise InputFileError(f"{path}: no such file or directory — check the path")
    if path.suffix.lower() not in FORMATS:
        raise InputFormatError(
            f"{path} has an unsupported extension {path.suffix or '(none)'!r} — "
            f"supported are {SUPPORTED}; rename or convert the file"
        )
    return [path]


def _load_file(path: Path, chunk_chars: int, overlap_chars: int) -> list[SourceText]:
    """Read one file of a supported extension into passages."""
    text = _read_text(path)
    fmt = FORMATS[path.suffix.lower()]
    if fmt == "squad":
        return _load_squad(path, text)
    if fmt == "jsonl":
        return _load_jsonl(path, text, chunk_chars, overlap_chars)
    title = (_markdown_title(text) if path.suffix.lower() == ".md" else None) or path.stem
    return [
        SourceText(text=chunk, title=title, source=str(path), meta={"chunk_index": i})
        for i, chunk in enumerate(split_passages(text, chunk_chars, overlap_chars))
    ]


def _read_text(path: Path) -> str:
    """Contents of ``path`` as text; a leading byte-order mark is dropped."""
    try:
        raw = path.read_bytes()
    except PermissionError as exc:
        raise InputFileError(f"{path} cannot be read (permission denied) — check its permissions") from exc
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise InputFileError(f"{path} cannot be read ({reason}) — pass a regular, readable file") from exc
    try:
        # utf-8-sig: editors on Windows prepend a BOM, which json.loads would reject.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputFileError(
            f"{path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start}) — "
            f"convert it, e.g. `iconv -f latin1 -t utf-8 {path} > {path.stem}.utf8{path.suffix}`"
        ) from exc


def read_squad(path: Path, text: str | None = None) -> list[dict[str, Any]]:
    """The validated ``data`` articles of a SQuAD v2 file (each with a string title and paragraphs).

    :raises InputFileError: unreadable or not UTF-8.
    :raises InputFormatError: malformed JSON, or JSON that is not SQuAD v2.
    """
    text = _read_text(path) if text is None else text
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputFormatError(
            f"{path} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}) — fix or re-export the file"
        ) from exc

    def not_squad(what: str) -> InputFormatError:
        return InputFormatError(f"{path} is JSON but not SQuAD v2 ({what}) — pass a SQuAD v2 file")

    articles = doc.get("data") if isinstance(doc, dict) else None
    if not isinstance(articles, list):
        raise not_squad("no 'data' list of articles with 'paragraphs'")
    for a, article in enumerate(articles):
        if not isinstance(article, dict) or not isinstance(article.get("paragraphs"), list):
            raise not_squad(f"article {a} in 'data' has no 'paragraphs' list")
        article_title = article.get("title")
        if not isinstance(article_title, str):
            raise not_squad(f"article {a} in 'data' has no string 'title'")
        if has_lone_surrogate(article_title):
            raise InputFormatError(f"{path}: the title of article {a} {LONE_SURROGATE_FIX}")
        for i, paragraph in enumerate(article["paragraphs"]):
            if not isinstance(paragraph, dict) or not isinstance(paragraph.get("context"), str):
                raise InputFormatError(
                    f"{path}: paragraph {i} of article {article_title!r} has no string 'context' — "
                    "every SQuAD paragraph needs its text under 'context'"
                )
            if has_lone_surrogate(paragraph):
                raise InputFormatError(f"{path}: paragraph {i} of article {article_title!r} {LONE_SURROGATE_FIX}")
    return articles


# json.loads turns an escape like "\ud800" without its pair into a str that is no Unicode text: it
# cannot be encoded, hashed or stored, so such a record is refused where it is read.
LONE_SURROGATE_FIX = ("holds an escaped lone surrogate (like \\ud800), which is no character — "
                      "fix that escape or re-export the file as UTF-8")


def has_lone_surrogate(value: Any) -> bool:
    """Does a JSON value hold an unpaired UTF-16 surrogate anywhere (keys included)?"""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _load_squad(path: Path, text: str) -> list[SourceText]:
    """One passage per SQuAD paragraph; the context is kept verbatim so answer offsets stay valid."""
    passages: list[SourceText] = []
    for article in read_squad(path, text):
        article_title = article["title"]
        for i, paragraph in enumerate(article["paragraphs"]):
            context = paragraph["context"]
            if not context.strip():
                logger.warning("%s: skipping empty paragraph %s of article %r", path, i, article_title)
                continue
            passages.append(
                SourceText(
                    text=context,
                    title=article_title.replace("_", " "),
                    source=str(path),
                    meta={"article": article_title, "paragraph_index": i},
                )
            )
    return passages


def _load_jsonl(path: Path, text: str, chunk_chars: int = 1200, overlap_chars: int = 200) -> list[SourceText]:
    """Passages from each non-blank line holding a JSON object with a non-empty 'text': the record's text
    as one passage, or cut like a text file when longer than ``chunk_chars`` (a 50 MB record was one
    50 MB passage: gigabytes at build time, all of it in every answer that retrieved it)."""
    passages: list[SourceText] = []
    # split("\n") rather than splitlines(): JSON strings may hold U+2028, which splitlines breaks on.
    for n, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise InputFormatError(
                f"{path}: line {n} is not valid JSON ({exc.msg} at column {exc.colno}) — "
                "write one JSON object per line"
            ) from exc
        if not isinstance(record, dict):
            raise InputFormatError(
                f"{path}: line {n} is not a JSON object — write one object per line, like {{\"text\": \"…\"}}"
            )
        if has_lone_surrogate(record):
            raise InputFormatError(f"{path}: line {n} {LONE_SURROGATE_FIX}")
        body = record.get("text")
        if not isinstance(body, str) or not body.strip():
            raise InputFormatError(
                f"{path}: line {n} has no non-empty string 'text' — put the passage under \"text\""
            )
        title = record.get("title")
        if title is not None and not isinstance(title, str):
            raise InputFormatError(f"{path}: line {n} has a 'title' that is not a string — make it a string or drop it")
        meta: dict[str, Any] = {"line": n} if "id" not in record else {"id": record["id"], "line": n}
        if len(body) <= chunk_chars:
            passages.append(SourceText(text=body, title=title or path.stem, source=str(path), meta=meta))
            continue
        passages.extend(SourceText(text=chunk, title=title or path.stem, source=str(path), meta={**meta, "chunk_index": i})
                        for i, chunk in enumerate(split_passages(body, chunk_chars, overlap_chars)))
    return passages


def _markdown_title(text: str) -> str | None:
    """Text of the first level-1 ATX heading (``# Title``) outside code fences, if any."""
    in_fence = False
    for line in text.splitlines():
        if _MD_FENCE.match(line):
            in_fence = not in_fence
            continue
        if not in_fence and (match := _MD_TITLE.match(line)):
            return match.group("title").strip()
    return None
