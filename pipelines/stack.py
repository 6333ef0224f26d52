"""The whole stack on embedded defaults for evaluation runs: cloud material, a gateway process
(`ecqa cloud serve`, embedded backend) and, optionally, an emulated link in front of it."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from netem.link import LinkEmulator
from pipelines.errors import PipelineError

_URL = re.compile(r"listening on (https://[0-9A-Za-z.\-\[\]:]+)")


@dataclass(frozen=True)
class Stack:
    """Where the edge reaches the cloud in this run."""
    cloud_url: str  # through the link emulator when one runs
    gateway_url: str  # direct
    cloud_dir: Path
    network: str | None
    pid: int = 0  # the gateway process (its embedded backend runs in it or under it)


def _ecqa() -> list[str]:
    return [sys.executable, "-m", "app.cli"]


@contextlib.contextmanager
def embedded_stack(workdir: Path, network: str | None = None, startup_timeout_s: float = 240.0, *,
                   cloud_dir: Path | None = None, port: int = 0) -> Iterator[Stack]:
    """Start a gateway with the embedded backend (and a link emulator for ``network``); stop both after.

    :param cloud_dir: the cloud material, made on first use; default ``workdir/cloud``.
    :param port: the gateway's port, 0 = any free one.
    :raises PipelineError: the gateway did not come up in time (its last output is in the message).
    """
    cloud_dir = cloud_dir or workdir / "cloud"
    if not (cloud_dir / "aes.key").exists():
        subprocess.run([*_ecqa(), "cloud", "init", "--dir", str(cloud_dir)], check=True, capture_output=True, text=True)
    proc = subprocess.Popen([*_ecqa(), "cloud", "serve", "--dir", str(cloud_dir), "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env={**os.environ, "COLUMNS": "400"})
    lines: list[str] = []
    url: list[str] = []

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            m = _URL.search(line)
            if m and not url:
                url.append(m.group(1))

    threading.Thread(target=pump, daemon=True).start()
    emulator = None
    try:  # the wait too: Ctrl-C while the gateway starts must stop it
        deadline = time.monotonic() + startup_timeout_s
        while not url and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        if not url:
            raise PipelineError(f"the cloud gateway did not start: {' | '.join(lines[-3:]) or 'no output'} — run "
                                "`ecqa cloud serve` by hand to see why")
        gateway_url = url[0]
        cloud_url = gateway_url
        if network:

            host, gw_port = gateway_url.removeprefix("https://").rsplit(":", 1)
            emulator = LinkEmulator(network, (host, int(gw_port)))
            emulator.start()
            cloud_url = f"https://127.0.0.1:{emulator.address[1]}"
        yield Stack(cloud_url, gateway_url, cloud_dir, network, proc.pid)
    finally:
        if emulator is not None:
            emulator.stop()
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
