"""What every `ecqa` command shares: the consoles, JSON output, and turning user errors into one line."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from pipelines.errors import USER_ERRORS

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])


def stop_on_ctrl_c() -> None:
    """Make Ctrl-C (SIGINT) and SIGTERM raise KeyboardInterrupt in a long-running command.

    A process started in the background by a non-interactive shell inherits SIGINT as ignored,
    and Python then installs no handler: "Ctrl-C stops" must not depend on how we were started.
    """
    import signal

    def _interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, _interrupt)


# What str.splitlines breaks on, shown escaped: a path or name quoted in a message keeps it one line.
_LINE_BREAKS = {c: repr(chr(c))[1:-1] for c in (0x0A, 0x0B, 0x0C, 0x0D, 0x1C, 0x1D, 0x1E, 0x85, 0x2028, 0x2029)}


def print_error(message: str) -> None:
    """The one red line of a user error. Paths and names quoted in ``message`` are text: "[/x]" is not
    rich markup (it raised MarkupError) and a line break in a file name does not start a second line."""
    err.print(f"[bold red]error:[/] {escape(message.translate(_LINE_BREAKS))}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> None:
    print_error(message)
    raise typer.Exit(code)


def progress_bar(label: str, *extra: ProgressColumn, as_json: bool = False) -> Progress:
    """A long command's progress on stderr: ``label``, the bar, done/total, ``extra`` columns, elapsed time
    and ETA. Under ``--json`` it shows nothing, so stdout and stderr stay clean for scripts."""
    return Progress(TextColumn(label), BarColumn(), MofNCompleteColumn(), *extra, TimeElapsedColumn(), TextColumn("ETA"),
                    TimeRemainingColumn(), console=err, transient=as_json, disable=as_json)


def print_files(what: str, directory: Path, files: Iterable[tuple[str, int]]) -> None:
    """The files a command wrote into ``directory`` and their modes, the private ones (0600) marked."""
    table = Table("file", "mode", title=f"{what} in {escape(str(directory))}")
    for rel, mode in files:
        table.add_row(rel, f"{mode:o}" + (" (private)" if mode == 0o600 else ""))
    out.print(table)


def emit_json(data: Any) -> None:
    """Plain JSON on stdout: rich would soft-wrap long strings on a narrow console."""
    typer.echo(json.dumps(data, indent=2, ensure_ascii=False))


def user_errors(fn: F) -> F:
    """Turn the project's user errors into one red line and exit code 2; Ctrl-C into 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted — nothing was changed (an unfinished index build is discarded)", 130)

    return wrapper  # type: ignore[return-value]


