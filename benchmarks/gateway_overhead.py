"""`make bench-gateway`: what the cloud gateway adds to a backend call, its http.server (before) against uvicorn +
Starlette (after), side by side in one run on one GatewayService.

Both servers serve the same :class:`cloud.gateway.GatewayService` (mutual TLS with the context of
``ServerMaterial.ssl_context()``, the same checks, sealing and replay window) in front of one zero-cost stub
backend at the process boundary (the embedded backend's own HTTP server, ``cloud.backend_server.BackendServer``,
with a reader that answers at once: ``benchmarks.cloud_tier._ZeroCost``). Each request is a dispatcher-sized sealed
envelope (a dev-a question, its paragraph and the next two, each cut at the ``passage_chars`` default), and it is
also sent straight to the stub (the same probe, answer and check requests the gateway makes): the gateway's
overhead is the difference, paired request by request. Over one kept-alive connection per server (as the edge's
httpx client sends them), and over a new connection (TCP + TLS 1.3 handshake with a client certificate) per
request. The client runs in a process of its own (its GIL is not the servers'), the three paths in a rotating
order per request, so a load change on the shared cores falls on all of them. Writes ``--out`` (JSON) and the
bench-gateway block of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import socket
import socketserver
import ssl
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import httpx

from benchmarks.cloud_tier import _ZeroCost
from benchmarks.markdown import publish
from cloud.backend import OpenAIBackend
from cloud.backend_server import BackendServer
from cloud.certs import (
    init_material,
    load_edge_material,
    load_server_material,
    peer_identity,
)
from cloud.envelope import new_request_id, now_ms, seal
from cloud.errors import TooLargeError
from cloud.gateway import GatewayService, make_server
from cloud.metrics import CONTENT_TYPE
from cloud.prompting import read_with
from cloud.wire import (
    ANSWER_PATH,
    DIRECTION_REQUEST,
    HEALTH_PATH,
    METRICS_PATH,
    AnswerRequest,
    refusal_body,
)
from eval.stats import percentile
from reading.prompts import PASSAGE_CHARS, Passage

START, END = "<!-- bench-gateway:start -->", "<!-- bench-gateway:end -->"
HEADING = "## Cloud gateway HTTP server — `make bench-gateway`"
SERVERS = ("http.server (before)", "uvicorn (after)")
LOADS = {"kept_alive": "kept-alive connection", "new_connection": "a new connection (TCP + mTLS handshake) each"}

logger = logging.getLogger(__name__)

# --- the baseline: cloud/gateway.py's http.server before issue 22 moved it to uvicorn ----------------------
HANDSHAKE_TIMEOUT_S = 10.0
IDLE_TIMEOUT_S = 30.0
_KNOWN_PATHS = (ANSWER_PATH, HEALTH_PATH, METRICS_PATH)
_SSL_REASON = {
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "no_client_cert",
    "CERTIFICATE_VERIFY_FAILED": "untrusted_client_cert",
    "TLSV1_ALERT_UNKNOWN_CA": "untrusted_client_cert",
}


class _Handler(BaseHTTPRequestHandler):
    server: _TLSServer
    protocol_version = "HTTP/1.1"
    server_version = "ecqa-gateway"
    sys_version = ""
    timeout = IDLE_TIMEOUT_S
    # Headers and body go out in two writes: with Nagle on, the second waits ~40 ms for a delayed ACK.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass  # requests are logged by the service (ids and reasons only)

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        # The stdlib's error page quotes the request line: send a fixed JSON text instead.
        self.close_connection = True
        self._send(code, refusal_body("malformed", "the HTTP request is malformed — use an HTTP/1.1 client such as httpx"))

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        path = getattr(self, "path", "")  # unset when the request line did not parse
        self.server.service.metrics.request(path if path in _KNOWN_PATHS else "other", status)
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _edge(self) -> str:
        conn = self.connection
        return peer_identity(conn.getpeercert()) if isinstance(conn, ssl.SSLSocket) else ""

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        service = self.server.service
        if self.path == HEALTH_PATH:
            self._send(200, json.dumps(service.health()).encode())
        elif self.path == METRICS_PATH:
            self._send(200, service.metrics.render().encode(), CONTENT_TYPE)
        else:
            self._send(404, refusal_body("not_found",
                                         f"no such endpoint — POST {ANSWER_PATH}, GET {HEALTH_PATH} or {METRICS_PATH}"))

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        service = self.server.service
        if self.path != ANSWER_PATH:
            self.close_connection = True
            self._send(404, refusal_body("not_found", f"no such endpoint — POST {ANSWER_PATH}"))
            return
        edge = self._edge()
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            service.metrics.refusal("malformed")
            self._send(411, refusal_body("malformed", "send the envelope with a Content-Length, not chunked"))
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
            if length < 0:
                raise ValueError(length)
        except ValueError:
            self.close_connection = True
            service.metrics.refusal("malformed")
            self._send(411, refusal_body("malformed", "a Content-Length header is required"))
            return
        if length > service.max_envelope_bytes:
            # Not read: the connection is closed after the refusal.
            self.close_connection = True
            service.metrics.refusal(TooLargeError.reason)
            logger.warning("refused request from edge %r: %s", edge, TooLargeError.reason)
            message = f"the envelope is over {service.max_envelope_bytes} bytes — send fewer or shorter passages"
            self._send(413, refusal_body(TooLargeError.reason, message))
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self.close_connection = True
            return
        status, reply = service.handle_answer(body, edge)
        self._send(status, reply)


class _TLSServer(ThreadingHTTPServer):
    """Threaded HTTP server that does each TLS handshake in the connection's own thread (a slow
    or hostile client cannot block ``accept``)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], ctx: ssl.SSLContext, service: GatewayService) -> None:
        self.ctx = ctx
        self.service = service
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves its own FQDN (a DNS lookup): not needed here.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(HANDSHAKE_TIMEOUT_S)
        try:
            tls = self.ctx.wrap_socket(request, server_side=True)
        except ssl.SSLError as exc:
            reason = _SSL_REASON.get(getattr(exc, "reason", "") or "", "tls_handshake")
            self.service.metrics.refusal(reason)
            logger.warning("TLS handshake with %s refused: %s (%s)", client_address[0], reason, getattr(exc, "reason", None))
            return
        except OSError as exc:  # the peer went away or timed out mid-handshake
            self.service.metrics.refusal("tls_handshake")
            logger.info("TLS handshake with %s failed: %s", client_address[0], type(exc).__name__)
            return
        with self._conns_lock:
            self._conns.add(tls)
        try:
            self.RequestHandlerClass(tls, client_address, self)  # type: ignore[arg-type]
        except (OSError, ssl.SSLError) as exc:
            logger.debug("connection from %s ended: %s", client_address[0], type(exc).__name__)
        finally:
            with self._conns_lock:
                self._conns.discard(tls)
            try:
                tls.close()
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        logger.exception("unexpected error serving %s", client_address[0])

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


# --- the client side (a process of its own) -------------------------------------------------------------
def payloads(data: Path, n: int) -> list[dict[str, Any]]:
    """``n`` answer requests as the edge sends them: a dev-a question with its own paragraph and the next two."""
    doc = json.loads(data.read_text())
    paragraphs = [(a["title"], p) for a in doc["data"] for p in a["paragraphs"]]
    out: list[dict[str, Any]] = []
    for i, (_, para) in enumerate(paragraphs):
        for qa in para["qas"]:
            if len(out) == n:
                return out
            passages = [Passage(t, p["context"][:PASSAGE_CHARS])
                        for t, p in (paragraphs[(i + k) % len(paragraphs)] for k in range(3))]
            out.append(AnswerRequest(qa["question"], tuple(passages), 24).to_dict())
    return out


def _measure(target: dict[str, Any], cloud_dir: str, requests: list[dict[str, Any]], fresh_n: int) -> dict[str, Any]:
    """Per load, per request: the direct call and each server's, in a rotating order (ms); and replies not 200."""
    material = load_edge_material(Path(cloud_dir), "bench")
    tls = material.ssl_context()
    direct = OpenAIBackend(target["stub"])
    direct.warm_up()
    kept = {name: httpx.Client(verify=tls, trust_env=False, timeout=30.0) for name in SERVERS}
    errors = {name: 0 for name in SERVERS}

    def via(name: str, payload: dict[str, Any], fresh: bool) -> float:
        body = seal(payload, material.aes, rid=new_request_id(), edge=material.name, direction=DIRECTION_REQUEST,
                    ts_ms=now_ms()).to_bytes()  # sealed before the clock starts: the edge's cost, not the gateway's
        url = target["urls"][name] + ANSWER_PATH
        headers = {"Content-Type": "application/json"}
        t0 = time.perf_counter()
        if fresh:
            with httpx.Client(verify=tls, trust_env=False, timeout=30.0) as client:
                status = client.post(url, content=body, headers=headers).status_code
        else:
            status = kept[name].post(url, content=body, headers=headers).status_code
        ms = (time.perf_counter() - t0) * 1000.0
        errors[name] += status != 200
        return ms

    def straight(payload: dict[str, Any]) -> float:
        req = AnswerRequest.from_dict(payload)
        t0 = time.perf_counter()
        read_with(direct, req.question, req.passages, req.max_tokens)
        return (time.perf_counter() - t0) * 1000.0

    for payload in requests[:5]:  # warm every path (connections, the stub's prefix, the service) outside the timing
        straight(payload)
        for name in SERVERS:
            via(name, payload, False)
    paths = ("direct", *SERVERS)
    out: dict[str, Any] = {}
    for load, n in (("kept_alive", len(requests)), ("new_connection", min(fresh_n, len(requests)))):
        ms: dict[str, list[float]] = {p: [] for p in paths}
        for i, payload in enumerate(requests[:n]):
            for path in paths[i % 3:] + paths[: i % 3]:
                ms[path].append(straight(payload) if path == "direct" else via(path, payload, load == "new_connection"))
        out[load] = ms
    for client in kept.values():
        client.close()
    direct.close()
    out["errors"] = errors
    return out


def summary(ms: dict[str, list[float]]) -> dict[str, Any]:
    """Per server: its latency and its overhead over the direct call of the same request (ms, p50/p99/mean)."""
    out: dict[str, Any] = {"direct": {"p50": percentile(ms["direct"], 50), "p99": percentile(ms["direct"], 99)}}
    for name in SERVERS:
        diff = [v - d for v, d in zip(ms[name], ms["direct"], strict=True)]
        out[name] = {"n": len(diff), "p50": percentile(ms[name], 50), "p99": percentile(ms[name], 99),
                     "overhead_p50": percentile(diff, 50), "overhead_p99": percentile(diff, 99),
                     "overhead_mean": sum(diff) / max(len(diff), 1)}
    return out


# --- the servers (this process) -------------------------------------------------------------------------
def run_benchmark(data: Path, n: int, fresh_n: int) -> dict[str, Any]:
    """Both servers on one GatewayService in front of one stub backend, measured from a client process."""
    requests = payloads(data, n)
    stub = BackendServer("127.0.0.1", 0, _ZeroCost(), "zero-cost")  # type: ignore[arg-type]
    stub.start()
    with tempfile.TemporaryDirectory() as tmp:
        cloud_dir = Path(tmp) / "cloud"
        init_material(cloud_dir, edges=["bench"])  # a throwaway CA: server and client certificates
        material = load_server_material(cloud_dir)
        backend = OpenAIBackend(stub.url)
        backend.warm_up()
        # One service, its replay window in memory (a nonce is fresh for both servers: each request is sealed anew).
        service = GatewayService(material.keyring, backend)
        before = _TLSServer(("127.0.0.1", 0), material.ssl_context(), service)
        after = make_server(service, material.ssl_context())
        threading.Thread(target=before.serve_forever, kwargs={"poll_interval": 0.2}, daemon=True).start()
        after.start()
        urls = {SERVERS[0]: f"https://127.0.0.1:{before.server_address[1]}",
                SERVERS[1]: f"https://127.0.0.1:{after.server_address[1]}"}
        try:
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                raw = pool.submit(_measure, {"stub": stub.url, "urls": urls}, str(cloud_dir), requests, fresh_n).result()
        finally:
            before.shutdown()
            before.close_connections()
            before.server_close()
            after.server_close()
            backend.close()
            stub.shutdown()
            stub.server_close()
    refusals = {k: v for k, v in service.metrics.refusals().items() if v}
    return {"loads": {load: summary(raw[load]) for load in LOADS}, "errors": raw["errors"], "refusals": refusals}


# --- report ---------------------------------------------------------------------------------------------
def ratios(res: dict[str, Any]) -> dict[str, dict[str, float]]:
    """after / before of the overhead's p50 and p99, per load."""
    return {load: {q: cells[SERVERS[1]][f"overhead_{q}"] / cells[SERVERS[0]][f"overhead_{q}"] for q in ("p50", "p99")}
            for load, cells in res["loads"].items()}


def markdown(res: dict[str, Any], command: str) -> str:
    rat = res["ratios"]

    def pair(cell: dict[str, Any], key: str = "") -> str:
        return " · ".join(f"{cell[key + q]:.2f}" for q in ("p50", "p99"))

    errors = sum(res["errors"].values())
    lines = [
        START,
        "",
        (f"Generated by `{command}` on {res['when']} ({res['machine']}; load average {res['load'][0]:.1f} at the "
         f"start, {res['load'][1]:.1f} at the end"
         + (": another process shared the cores" if res["load"][0] >= 0.5 else "") + "). One GatewayService behind "
         "both servers at once, in front of one zero-cost stub backend; each request a sealed dev-a question with 3 "
         f"passages ({res['n']} on kept-alive connections, {res['fresh_n']} on a new connection each), also sent "
         "straight to the stub (the same 7 backend calls) in a rotating order from a client process of its own. "
         f"Replies other than 200: {errors}."),
        "",
        "The gateway's overhead: its request's latency minus the direct call's, request by request (ms, p50 · p99):",
        "",
        "| connection | direct to the backend | http.server (before) | uvicorn (after) | overhead before | overhead after "
        "| after / before |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for load, label in LOADS.items():
        cells = res["loads"][load]
        old, new = cells[SERVERS[0]], cells[SERVERS[1]]
        lines.append(f"| {label} | {pair(cells['direct'])} | {pair(old)} | {pair(new)} | {pair(old, 'overhead_')} | "
                     f"{pair(new, 'overhead_')} | {pair(rat[load])} |")
    lines += [
        "",
        ("http.server (before) is the gateway's server before the move (a thread per connection, the handshake in "
         "it), kept in `benchmarks/gateway_overhead.py` as this baseline. uvicorn (after) is `cloud.gateway.make_server` "
         "(h11 on one event-loop thread, the TLS handshake on it too, each answer in a thread). The overhead holds the "
         "gateway's TLS, HTTP, envelope opening and checks, the replay window and the reply's sealing; the backend's "
         "own time cancels out. A cloud read takes seconds (`make bench-cloud`): both overheads are a small part of it."),
        "",
        END,
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=Path("data/squad-v2-dev-a.json"))
    ap.add_argument("--n", type=int, default=600, help="requests per path on kept-alive connections")
    ap.add_argument("--fresh-n", type=int, default=300, help="requests per path on a new connection each")
    ap.add_argument("--out", type=Path, default=Path("bench/gateway.json"))
    ap.add_argument("--benchmarks-md", type=Path, default=Path("BENCHMARKS.md"))
    ap.add_argument("--command", default="make bench-gateway")
    ap.add_argument("--from-json", type=Path, help="only re-render BENCHMARKS.md from a previous --out file")
    args = ap.parse_args()
    if args.from_json:
        res = json.loads(args.from_json.read_text())
        publish(res, None, markdown(res, args.command), args.benchmarks_md, START, END, HEADING)
        return
    load0 = os.getloadavg()[0]
    res: dict[str, Any] = {"when": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                           "n": args.n, "fresh_n": min(args.fresh_n, args.n)}
    print(f"direct + {len(SERVERS)} gateways × ({args.n} kept-alive, {res['fresh_n']} new connections)…", flush=True)
    res.update(run_benchmark(args.data, args.n, args.fresh_n))
    res["load"] = [load0, os.getloadavg()[0]]
    res["ratios"] = ratios(res)
    publish(res, args.out, markdown(res, args.command), args.benchmarks_md, START, END, HEADING)


if __name__ == "__main__":
    main()
