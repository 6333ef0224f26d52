"""`make bench-server`: what the edge worker's HTTP server costs, http.server (before) against uvicorn +
Starlette (after), plain and with mutual TLS, side by side in one run on one EdgeWorker.

The worker is real (SmolLM2-135M loaded, concurrency 1, queue 2: the CLI's defaults) and never reads: the
requests measure the server stack alone —

- ``GET /v1/health`` (the worker's entry as JSON), and
- ``POST /v1/read`` with a dispatcher-sized body (a question and 3 passages of 1,500 characters, ~5 KB)
  refused with 400 by ``check_read_request`` after the whole body was read and parsed,

each over a kept-alive connection (as the dispatcher's httpx client sends them): N sequential requests,
then 8 clients at once; and ``GET /v1/health`` on a new connection per request (the TLS handshake's cost).
The clients run in a process of their own (their GIL is not the servers'); every configuration is
measured in each of ``--rounds`` rounds, in a rotating order, so a load change on the shared cores falls on
all of them. Writes ``--out`` (JSON) and the bench-server block of BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import logging
import os
import platform
import ssl
import tempfile
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from benchmarks.markdown import publish
from cloud.certs import init_material, load_edge_material, load_server_material
from edge.answer_parser import AnswerParser
from edge.prompt_builder import EdgePromptBuilder
from edge.reader import EdgeReader
from edge.registry import WorkerEntry
from edge.slm_generator import SlmGenerator
from edge.worker import (
    LISTEN_BACKLOG,
    MAX_BODY_BYTES,
    SOCKET_TIMEOUT_S,
    EdgeWorker,
    make_server,
)
from eval.stats import percentile

START, END = "<!-- bench-server:start -->", "<!-- bench-server:end -->"
HEADING = "## Edge worker HTTP server — `make bench-server`"
SMALL_MODEL = "smollm2-135m-instruct"
SERVERS = ("http.server (before)", "http.server + TCP_NODELAY", "uvicorn (after)", "uvicorn + mTLS (after)")
REQUESTS = {"health": "GET /v1/health", "read_400": "POST /v1/read, refused 400 (~5 KB body)"}

logger = logging.getLogger(__name__)


# --- the baseline: edge/worker.py's http.server before issue 22 moved it to uvicorn (commit a6593d4) ------
class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = SOCKET_TIMEOUT_S

    def log_message(self, fmt: str, *args: Any) -> None:
        logger.debug(fmt, *args)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # http.server's name
        if self.path == "/v1/health":
            self._send(200, self.server.worker.snapshot().to_json())
        else:
            self._send(404, {"error": "not_found", "message": "use GET /v1/health or POST /v1/read"})

    def do_POST(self) -> None:
        if self.path != "/v1/read":
            self._send(404, {"error": "not_found", "message": "use POST /v1/read"})
            return
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 < length <= MAX_BODY_BYTES:
            self.close_connection = True
            self._send(413 if length > MAX_BODY_BYTES else 400,
                       {"error": "bad_request", "message": f"send a JSON body of 1 byte to {MAX_BODY_BYTES} bytes"})
            return
        try:
            raw = self.rfile.read(length)
        except OSError:
            self.close_connection = True
            return
        if len(raw) < length:
            self.close_connection = True
            return
        try:
            payload = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            self._send(400, {"error": "bad_request", "message": "the body is not JSON (or nested too deep)"})
            return
        try:
            status, body = self.server.worker.read(payload)
        except Exception as exc:
            logger.exception("read failed")
            status, body = 500, {"error": "internal", "message": f"the worker failed ({type(exc).__name__})"}
        self._send(status, body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], worker: EdgeWorker, handler: type[_Handler] = _Handler) -> None:
        self.worker = worker
        super().__init__(address, handler)


class _NoDelayHandler(_Handler):
    """Not the baseline: the same server with Nagle's algorithm off, which separates what the old stack cost from
    the 40 ms its two writes per reply (headers, then body) waited for the client's delayed ACK."""

    disable_nagle_algorithm = True


# --- the client side (a process of its own) -------------------------------------------------------------
def read_400_body() -> bytes:
    """What a dispatcher sends, ~5 KB, refused only at its last field: the whole body is read and parsed."""
    text = ("The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region "
            "in France. They were descended from Norse raiders and pirates from Denmark, Iceland and Norway. ") * 8
    docs = [{"id": f"d{i}", "content": text[:1500], "meta": {"title": "Normans"}, "score": 0.8} for i in range(3)]
    docs[-1]["score"] = [0.8]  # not a number: 400
    return json.dumps({"question": "Who was the leader of the Normans?", "documents": docs}).encode()


def _connect(target: dict[str, Any], tls: ssl.SSLContext | None) -> http.client.HTTPConnection:
    if target["tls"]:
        return http.client.HTTPSConnection("127.0.0.1", target["port"], timeout=30, context=tls)
    return http.client.HTTPConnection("127.0.0.1", target["port"], timeout=30)


class _Client:
    """One kept-alive connection; a request's latency in ms (the connection reopened if the server closed it)."""

    def __init__(self, target: dict[str, Any], tls: ssl.SSLContext | None) -> None:
        self.target, self.tls = target, tls
        self.conn = _connect(target, tls)
        self.errors = 0

    def one(self, request: str, body: bytes, fresh: bool = False) -> float:
        if fresh:
            self.conn.close()
            self.conn = _connect(self.target, self.tls)
        method, path, expect = ("GET", "/v1/health", 200) if request == "health" else ("POST", "/v1/read", 400)
        headers = {"Content-Type": "application/json"} if method == "POST" else {}
        t0 = time.perf_counter()
        try:
            self.conn.request(method, path, body if method == "POST" else None, headers)
            resp = self.conn.getresponse()
            resp.read()
            ok = resp.status == expect
        except (OSError, http.client.HTTPException):
            ok = False
            self.conn.close()
            self.conn = _connect(self.target, self.tls)
        ms = (time.perf_counter() - t0) * 1000.0
        self.errors += not ok
        return ms


def _concurrent(target: dict[str, Any], tls: ssl.SSLContext | None, request: str, body: bytes, clients: int,
                each: int) -> tuple[list[float], float, int]:
    """``clients`` kept-alive connections sending ``each`` requests at once: latencies, wall seconds, errors."""
    pool = [_Client(target, tls) for _ in range(clients)]
    for p in pool:
        p.one(request, body)  # connected (and handshaken) before timing
    start = threading.Barrier(clients + 1)
    lists: list[list[float]] = [[] for _ in pool]

    def run(p: _Client, into: list[float]) -> None:
        start.wait()
        into += [p.one(request, body) for _ in range(each)]

    threads = [threading.Thread(target=run, args=(p, xs)) for p, xs in zip(pool, lists, strict=True)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    for p in pool:
        p.conn.close()
    return [x for xs in lists for x in xs], wall, sum(p.errors for p in pool)


def _measure(targets: list[dict[str, Any]], cloud_dir: str, n: int, clients: int, fresh_n: int,
             rounds: int) -> dict[str, Any]:
    """Every (server, request, load) latency, in rounds of a rotating server order."""
    tls = load_edge_material(Path(cloud_dir), "bench").ssl_context()
    body = read_400_body()
    out: dict[str, dict[str, Any]] = {t["name"]: {} for t in targets}

    def cell(name: str, key: str) -> dict[str, Any]:
        return out[name].setdefault(key, {"ms": [], "errors": 0, "wall_s": 0.0})

    for r in range(rounds):
        for target in targets[r % len(targets):] + targets[: r % len(targets)]:
            for request in REQUESTS:
                c = cell(target["name"], f"{request}/sequential")
                client = _Client(target, tls)
                client.one(request, body)  # connected (and handshaken) before timing
                t0 = time.perf_counter()
                c["ms"] += [client.one(request, body) for _ in range(n // rounds)]
                c["wall_s"] += time.perf_counter() - t0
                c["errors"] += client.errors
                client.conn.close()
                c = cell(target["name"], f"{request}/concurrent")
                ms, wall, errors = _concurrent(target, tls, request, body, clients, n // rounds // clients)
                c["ms"] += ms
                c["wall_s"] += wall
                c["errors"] += errors
            c = cell(target["name"], "health/new connection")
            client = _Client(target, tls)
            c["ms"] += [client.one("health", body, fresh=True) for _ in range(fresh_n // rounds)]
            c["errors"] += client.errors
            client.conn.close()
    return {name: {key: summary(v) for key, v in cells.items()} for name, cells in out.items()}


def summary(cell: dict[str, Any]) -> dict[str, Any]:
    ms = cell["ms"]
    return {"n": len(ms), "errors": cell["errors"], "p50": percentile(ms, 50), "p99": percentile(ms, 99),
            "mean": sum(ms) / max(len(ms), 1), "rps": len(ms) / cell["wall_s"] if cell["wall_s"] else 0.0}


# --- the servers (this process) -------------------------------------------------------------------------
def run_benchmark(n: int, clients: int, fresh_n: int, rounds: int) -> dict[str, Any]:
    """The four servers on one worker, measured from a client process: its results per server."""
    reader = EdgeReader(EdgePromptBuilder(), SlmGenerator(model_path=SMALL_MODEL, n_threads=1), AnswerParser())
    reader.warm_up()
    worker = EdgeWorker([reader], WorkerEntry(id="bench-server", url="", model=SMALL_MODEL), queue_limit=2)
    with tempfile.TemporaryDirectory() as tmp:
        cloud_dir = Path(tmp) / "cloud"
        init_material(cloud_dir, edges=["bench"])  # a throwaway CA: server and client certificates
        servers = [_Server(("127.0.0.1", 0), worker), _Server(("127.0.0.1", 0), worker, _NoDelayHandler),
                   make_server(worker), make_server(worker, ssl_context=load_server_material(cloud_dir).ssl_context())]
        threads = [threading.Thread(target=s.serve_forever, daemon=True) for s in servers]
        for t in threads:
            t.start()
        targets = [{"name": name, "port": s.server_address[1], "tls": i == 3}
                   for i, (name, s) in enumerate(zip(SERVERS, servers, strict=True))]
        try:
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                results = pool.submit(_measure, targets, str(cloud_dir), n, clients, fresh_n, rounds).result()
        finally:
            for s in servers:
                s.shutdown()
                s.server_close()
    snap = worker.snapshot()
    assert snap.served == 0 and snap.in_flight == 0, snap  # the model never read: the server stack alone
    return results


# --- report ---------------------------------------------------------------------------------------------
def ratios(res: dict[str, Any]) -> dict[str, dict[str, float]]:
    """after / before, after / before with TCP_NODELAY and mTLS / plain, per request and load, at p50 and p99."""
    old, nodelay, new, tls = (res["servers"][s] for s in SERVERS)
    return {key: {f"{name}_{q}": a[key][q] / b[key][q] for q in ("p50", "p99")
                  for name, a, b in (("after_over_before", new, old), ("after_over_nodelay", new, nodelay),
                                     ("tls_over_plain", tls, new))}
            for key in new}


def markdown(res: dict[str, Any], command: str) -> str:
    old, nodelay, new, tls = (res["servers"][s] for s in SERVERS)
    rat = res["ratios"]

    def pair(cell: dict[str, Any], key: str = "") -> str:  # "p50 · p99": ms, or a ratio (3 decimals below 0.1)
        return " · ".join(f"{v:.3f}" if key and v < 0.1 else f"{v:.2f}" for v in (cell[key + "p50"], cell[key + "p99"]))

    errors = sum(c["errors"] for s in res["servers"].values() for c in s.values())
    lines = [
        START,
        "",
        (f"Generated by `{command}` on {res['when']} ({res['machine']}; load average {res['load'][0]:.1f} at the "
         f"start, {res['load'][1]:.1f} at the end"
         + (": another process shared the cores" if res["load"][0] >= 0.5 else "") + "). One EdgeWorker (SmolLM2-135M "
         "loaded, concurrency 1, queue 2) behind four servers at once; the model never reads, so this is the server "
         f"stack alone. {res['n']} requests per row ({res['clients']} clients at once on the concurrent rows, "
         f"{res['fresh_n']} on the new-connection row), over kept-alive connections unless said, from a client process "
         f"of its own, in {res['rounds']} rounds of a rotating server order. Replies other than the expected status: "
         f"{errors}."),
        "",
        "Latency per request (ms, p50 · p99), and the ratios of those p50s · p99s:",
        "",
        ("| request | load | http.server (before) | uvicorn (after) | after / before | http.server + TCP_NODELAY | "
         "after / that | uvicorn + mTLS (after) | mTLS / plain |"),
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    loads = {"sequential": "1 client", "concurrent": f"{res['clients']} clients",
             "new connection": "1 client, a new connection each"}
    for key in new:
        request, load = key.split("/")
        r = rat[key]
        lines.append(f"| {REQUESTS[request]} | {loads[load]} | {pair(old[key])} | {pair(new[key])} | "
                     f"{pair(r, 'after_over_before_')} | {pair(nodelay[key])} | {pair(r, 'after_over_nodelay_')} | "
                     f"{pair(tls[key])} | {pair(r, 'tls_over_plain_')} |")
    lines += [
        "",
        f"Throughput with {res['clients']} clients (requests/s):",
        "",
        "| request | " + " | ".join(SERVERS) + " |",
        "|---|" + "---:|" * len(SERVERS),
    ]
    for request, label in REQUESTS.items():
        key = f"{request}/concurrent"
        lines.append(f"| {label} | " + " | ".join(f"{res['servers'][s][key]['rps']:.0f}" for s in SERVERS) + " |")
    lines += [
        "",
        ("http.server (before) is the worker's server before the move (a thread per connection), kept in "
         "`benchmarks/server_overhead.py` as this baseline. It wrote each reply's headers and body apart with Nagle's "
         "algorithm on, so on a kept-alive connection every reply after the first waited for the client's delayed ACK "
         "(~40 ms on Linux); http.server + TCP_NODELAY is the same server without that wait (not the baseline: what "
         "its stack cost). uvicorn (after) is `edge.worker.make_server` (h11, one event-loop thread; a read runs in a "
         "thread of its own). mTLS: TLS 1.3 with a client certificate, its handshake once per kept-alive connection "
         "(the new-connection row pays it on every request)."),
        "",
        END,
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="requests per server, request kind and load")
    ap.add_argument("--clients", type=int, default=8, help="clients at once on the concurrent rows")
    ap.add_argument("--fresh-n", type=int, default=300, help="requests on a new connection each (GET /v1/health)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds of a rotating server order")
    ap.add_argument("--out", type=Path, default=Path("bench/server.json"))
    ap.add_argument("--benchmarks-md", type=Path, default=Path("BENCHMARKS.md"))
    ap.add_argument("--command", default="make bench-server")
    ap.add_argument("--from-json", type=Path, help="only re-render BENCHMARKS.md from a previous --out file")
    args = ap.parse_args()
    if args.from_json:
        res = json.loads(args.from_json.read_text())
        publish(res, None, markdown(res, args.command), args.benchmarks_md, START, END, HEADING)
        return
    load0 = os.getloadavg()[0]
    res: dict[str, Any] = {"when": time.strftime("%Y-%m-%d"), "machine": f"{platform.machine()}, {os.cpu_count()} cores",
                           "n": args.n, "clients": args.clients, "fresh_n": args.fresh_n, "rounds": args.rounds}
    print(f"{len(SERVERS)} servers × {len(REQUESTS)} requests × (sequential, {args.clients} clients) × {args.n}…", flush=True)
    res["servers"] = run_benchmark(args.n, args.clients, args.fresh_n, args.rounds)
    res["load"] = [load0, os.getloadavg()[0]]
    res["ratios"] = ratios(res)
    publish(res, args.out, markdown(res, args.command), args.benchmarks_md, START, END, HEADING)


if __name__ == "__main__":
    main()
