"""Kernel-shaped link for root: two network namespaces joined by a veth pair under ``tc tbf``.

``edge`` and ``cloud`` namespaces each hold one end of a veth pair; each end's egress is
shaped by a token-bucket filter at the profile's rate, so bandwidth is enforced by the kernel
on real TCP. This kernel has no ``netem``, so there is no kernel delay: for RTT, run the
userspace :class:`netem.link.LinkEmulator` inside the edge namespace in front of the cloud
address. Needs root and iproute2; everywhere else use the userspace proxy alone.

Traffic stays inside the two namespaces this module creates: their addresses
(:data:`EDGE_IP`, :data:`CLOUD_IP`) exist nowhere else, and both are deleted on exit.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import Self

from netem.errors import LinkError
from netem.measure import receiver_rate_mbit
from netem.profiles import LinkProfile, get_profile

logger = logging.getLogger(__name__)

EDGE_IP = "10.237.0.1"
CLOUD_IP = "10.237.0.2"
SINK_PORT = 5201  # the cloud namespace is new and empty, so any port is free
_TIMEOUT_S = 30.0

# Runs inside the cloud namespace with only the standard library: it reports arrival times and
# cumulative byte counts, and the caller computes the rate with netem.measure.receiver_rate_mbit.
_SINK = """
import json, socket, sys, time
srv = socket.create_server((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
conn, _ = srv.accept()
buf = bytearray(256 * 1024)
times, marks, total = [], [], 0
while n := conn.recv_into(buf):
    times.append(time.perf_counter()); total += n; marks.append(total)
conn.close()
print(json.dumps({"times": times, "marks": marks}))
"""

_SEND = """
import socket, sys
total = int(sys.argv[3]); block = bytes(1024 * 1024)
with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=30) as s:
    while total:
        n = min(total, len(block)); s.sendall(memoryview(block)[:n]); total -= n
    s.shutdown(socket.SHUT_WR); s.recv(1)
"""


def check_netns_support(euid: int | None = None, which: Callable[[str], str | None] = shutil.which) -> None:
    """Check that namespaces can be made here.

    :param euid: effective user id to judge (default: this process's).
    :param which: lookup for executables (``shutil.which``).
    :raises LinkError: not root, or ``ip``/``tc`` missing.
    """
    euid = os.geteuid() if euid is None else euid
    missing = [tool for tool in ("ip", "tc") if which(tool) is None]
    if euid != 0 or missing:
        why = f"not root (euid {euid})" if euid != 0 else f"{' and '.join(missing)} not found"
        raise LinkError(f"network-namespace link impossible: {why} — needs root and iproute2; "
                        "use the userspace proxy (default)")


def _run(argv: Sequence[str]) -> None:
    proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=_TIMEOUT_S, check=False)
    if proc.returncode != 0:
        raise LinkError(f"`{' '.join(argv)}` failed: {proc.stderr.strip() or proc.returncode} — "
                        "check that this kernel has veth and tbf")


class NetnsLink:
    """Two fresh namespaces, ``edge`` and ``cloud``, joined by a veth pair shaped to a profile.

    Use as a context manager; names carry the pid and a random tag, so parallel runs never
    collide, and everything is deleted on exit, also after a failed set-up.

    :param profile: its bandwidth shapes both directions (its RTT is the proxy's job).
    :param prefix: start of the namespace names.
    """

    def __init__(self, profile: LinkProfile | str, prefix: str = "ecqa") -> None:
        self.profile = get_profile(profile) if isinstance(profile, str) else profile
        tag = secrets.token_hex(4)
        self.edge_ns = f"{prefix}-{os.getpid()}-{tag}-edge"
        self.cloud_ns = f"{prefix}-{os.getpid()}-{tag}-cloud"
        self._veth = (f"ve{tag}", f"vc{tag}")  # interface names are limited to 15 characters
        self._created: list[str] = []

    def namespaces(self) -> list[str]:
        """Names of the namespaces that exist now because of this object."""
        return list(self._created)

    def setup(self) -> NetnsLink:
        """Create the namespaces, the veth pair, the addresses and the tbf qdiscs.

        :raises LinkError: not root, no iproute2, or a command failed (nothing is left behind).
        """
        check_netns_support()
        rate = f"{self.profile.bandwidth_mbit * 1e6:.0f}bit"
        # Same bucket as the proxy's; at least 64 KiB because veth hands tbf GSO packets of up
        # to 64 KiB, and a packet larger than the bucket would wait for tokens it can never get.
        burst = max(self.profile.bucket_bytes, 64 * 1024)
        try:
            for ns in (self.edge_ns, self.cloud_ns):
                _run(["ip", "netns", "add", ns])
                self._created.append(ns)
            edge_if, cloud_if = self._veth
            _run(["ip", "link", "add", "name", edge_if, "netns", self.edge_ns, "type", "veth",
                  "peer", "name", cloud_if, "netns", self.cloud_ns])
            for ns, dev, ip in ((self.edge_ns, edge_if, EDGE_IP), (self.cloud_ns, cloud_if, CLOUD_IP)):
                _run(["ip", "-n", ns, "addr", "add", f"{ip}/30", "dev", dev])
                _run(["ip", "-n", ns, "link", "set", "lo", "up"])
                _run(["ip", "-n", ns, "link", "set", dev, "up"])
                # latency 100ms: the queue a sender may fill before tbf drops, enough that TCP
                # keeps the link busy at every profile rate.
                _run(["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "tbf", "rate", rate,
                      "burst", str(burst), "latency", "100ms"])
        except BaseException:
            self.teardown()
            raise
        logger.info("netns link %s: %s (%s) <-> %s (%s) at %s", self.profile.name, self.edge_ns, EDGE_IP,
                    self.cloud_ns, CLOUD_IP, rate)
        return self

    def teardown(self) -> None:
        """Delete the namespaces (which deletes the veth pair and its qdiscs); safe to repeat."""
        while self._created:
            ns = self._created.pop()
            proc = subprocess.run(["ip", "netns", "del", ns], capture_output=True, text=True,
                                  timeout=_TIMEOUT_S, check=False)
            if proc.returncode != 0:
                logger.warning("could not delete network namespace %s: %s", ns, proc.stderr.strip())

    def exec_argv(self, side: str, argv: Sequence[str]) -> list[str]:
        """The command line that runs ``argv`` inside the ``edge`` or ``cloud`` namespace.

        :raises LinkError: ``side`` is neither.
        """
        if side not in ("edge", "cloud"):
            raise LinkError(f"unknown side {side!r} — use 'edge' or 'cloud'")
        return ["ip", "netns", "exec", self.edge_ns if side == "edge" else self.cloud_ns, *argv]

    def measure_bandwidth(self, bulk_seconds: float = 0.4) -> float:
        """Send a bulk transfer from edge to cloud, sized for ``bulk_seconds``.

        :returns: the rate seen by the receiver in the cloud namespace, in Mbit/s.
        :raises LinkError: the transfer did not complete.
        """
        total = int(self.profile.bytes_per_s * bulk_seconds)
        py = [sys.executable, "-I", "-c"]
        sink = subprocess.Popen(self.exec_argv("cloud", [*py, _SINK, CLOUD_IP, str(SINK_PORT)]),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            assert sink.stdout is not None
            if sink.stdout.readline().strip() != "ready":
                raise LinkError(f"sink in {self.cloud_ns} did not start: {sink.stderr.read() if sink.stderr else ''} "
                                "— check the namespace set-up")
            _run(self.exec_argv("edge", [*py, _SEND, CLOUD_IP, str(SINK_PORT), str(total)]))
            out, _ = sink.communicate(timeout=_TIMEOUT_S)
        finally:
            if sink.poll() is None:
                sink.kill()
                sink.wait()
        data = json.loads(out)
        if not data["marks"] or data["marks"][-1] != total:
            raise LinkError(f"bulk transfer between namespaces lost data ({data['marks'][-1:]} of {total} bytes) "
                            "— check the tbf qdiscs")
        return receiver_rate_mbit(data["times"], data["marks"])

    def __enter__(self) -> Self:
        self.setup()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.teardown()
