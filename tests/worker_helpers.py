"""Real `ecqa edge serve` processes for the dispatch tests (importable: tests/ is on sys.path)."""

from __future__ import annotations

import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

ECQA = str(Path(sys.executable).parent / "ecqa")
SMALL_MODEL = "smollm2-135m-instruct"  # the fastest model of the manifest: tests hold workers busy with it


class FleetFiles:
    """An authenticated fleet for tests: the project's CA (`cloud init`), the dispatcher's edge certificate and
    one worker certificate per worker (`edge init`), all real."""

    def __init__(self, directory: Path) -> None:
        from cloud.certs import init_material

        self.dir = directory
        init_material(directory, edges=["dispatcher"])

    def issue(self, wid: str) -> None:
        from cloud.certs import issue_workers

        issue_workers(self.dir, [wid], force=True)

    def seal(self) -> Any:
        from pipelines.fleet import SignedEntries

        return SignedEntries((self.dir / "ca.pem").read_bytes())

    def client_tls(self) -> ssl.SSLContext:
        from cloud.certs import load_edge_material

        return load_edge_material(self.dir, "dispatcher").ssl_context()

    def registry(self, folder: Path, ttl_s: float = 6.0) -> Any:
        from edge.registry import FileRegistry

        return FileRegistry(folder, ttl_s=ttl_s, seal=self.seal())

    def dispatcher(self, folder: Path, policy: str = "load-aware", ttl_s: float = 6.0, **kw: Any) -> Any:
        from pipelines.dispatch import Dispatcher

        return Dispatcher(self.registry(folder, ttl_s), policy, tls=self.client_tls(), **kw)


class Worker:
    """One `ecqa edge serve` child, its output read in threads (nothing it prints is lost).

    :param fleet: serve mutual TLS with a certificate of this fleet; None = `--insecure` (plain HTTP).
    """

    def __init__(self, wid: str, registry: Path, cores: str, *extra: str, ttl_s: float = 3.0,
                 model: str = SMALL_MODEL, fleet: FleetFiles | None = None) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "400", "ECQA_REGISTRY_TTL_S": str(ttl_s)}
        self.id = wid
        self.context: ssl.SSLContext | None = None
        if fleet is not None:
            fleet.issue(wid)
            env["ECQA_CLOUD_DIR"] = str(fleet.dir)
            self.context = fleet.client_tls()
        mode = () if fleet is not None else ("--insecure",)
        self.proc = subprocess.Popen(
            [ECQA, "edge", "serve", "--id", wid, "--registry", str(registry), "--model", model, "--cores", cores,
             "--threads", "1", *mode, *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
            text=True, env=env)
        self.lines: list[str] = []
        self.errors: list[str] = []
        for f, into in ((self.proc.stdout, self.lines), (self.proc.stderr, self.errors)):
            threading.Thread(target=lambda f=f, into=into: into.extend(iter(f.readline, "")), daemon=True).start()
        self.url = ""

    def wait_listening(self, timeout_s: float = 120.0) -> Worker:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if "listening on" in line:
                    self.url = line.split("listening on ", 1)[1].split()[0]
                    return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.proc.kill()
        raise AssertionError(f"worker {self.id} did not start: {''.join(self.lines)} {''.join(self.errors)}")

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/v1/health", timeout=5, context=self.context) as r:
            return json.loads(r.read())

    def wait_busy(self, timeout_s: float = 30.0) -> None:
        """Until it has a request in flight."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.health()["in_flight"] >= 1:
                return
            time.sleep(0.01)
        raise AssertionError(f"worker {self.id} never got busy")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)


def read_request(question: str, texts: list[str]) -> dict[str, Any]:
    return {"question": question, "documents": [{"id": f"d{i}", "content": t, "meta": {"title": "T"}, "score": 1.0}
                                                 for i, t in enumerate(texts)]}


def post(url: str, body: dict[str, Any], timeout_s: float = 120.0,
         context: ssl.SSLContext | None = None) -> tuple[int, dict[str, Any]]:
    req = urllib.request.Request(f"{url}/v1/read", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout_s, context=context) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
