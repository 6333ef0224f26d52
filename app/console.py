"""What every `ecqa` command shares: the consoles, JSON output, and turning user errors into one line."""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from pipelines.errors import USER_ERRORS

out = Console()
err = Console(stderr=True)
F = TypeVar("F", bound=Callable[..., Any])

AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")]


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


def fail(message: str, code: int = 2) -> None:
    err.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


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


