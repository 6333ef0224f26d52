"""The authenticated fleet: who may advertise in the registry, and how the dispatcher reaches workers.

Every worker holds a certificate from the project's CA (`ecqa edge init --worker ID`, next to the
edges' certificates of `ecqa cloud init`). With it the worker

- **signs its registry entry** (ECDSA P-256 over the entry's canonical JSON, heartbeat included) and
  stores it with its certificate: ``{"entry": {...}, "cert": PEM, "sig": base64}``;
- **serves over mutual TLS**: TLS 1.3, its certificate for the host it advertises, and a client
  certificate from the same CA required of every caller.

A reader (the dispatcher, `ecqa edge list`) opens a record only if its certificate was issued by the CA
to a worker (OU ``worker``), is valid now, names the entry's id (CN) and the entry's URL host (SAN),
the URL is ``https://``, and the signature holds. Whoever can write the registry folder or Redis keys
can therefore add nothing; replaying a worker's own old record points at that worker and expires with
its heartbeat. ``ECQA_FLEET_INSECURE=1`` turns all of it off, for one trusted host only.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import ssl
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cloud.certs import (
    CA_CERT,
    WORKER_UNIT,
    WorkerMaterial,
    WorkerReport,
    issue_workers,
    load_edge_material,
    load_worker_material,
)
from cloud.errors import MaterialError
from edge.registry import EntrySeal
from pipelines.cloud_path import cloud_dir_of
from pipelines.errors import PipelineError
from pipelines.settings import Settings

MAX_CERT_CHARS = 8192
MAX_SIG_CHARS = 256


def canonical(entry: dict[str, Any]) -> bytes:
    """The bytes a worker signs: the entry's JSON, keys sorted, no spaces."""
    return json.dumps(entry, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False).encode()


def _attr(name: x509.Name, oid: x509.ObjectIdentifier) -> str:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else ""


class SignedEntries(EntrySeal):
    """Registry records signed by workers and opened against the project's CA.

    :param ca_pem: the CA certificate (PEM).
    :param signer: the worker's certificate (PEM) and private key, on a worker; None on a reader.
    :param clock: the wall clock (tests pass their own).
    """

    def __init__(self, ca_pem: bytes, signer: tuple[bytes, ec.EllipticCurvePrivateKey] | None = None,
                 clock: Callable[[], dt.datetime] = lambda: dt.datetime.now(dt.UTC)) -> None:
        self.ca = x509.load_pem_x509_certificate(ca_pem)
        self.signer = signer
        self.clock = clock

    @classmethod
    def for_worker(cls, material: WorkerMaterial) -> SignedEntries:
        key = serialization.load_pem_private_key(material.key.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise MaterialError(f"{material.key} is not the EC key `ecqa edge init` writes — re-issue it with --force")
        return cls(material.ca_cert.read_bytes(), (material.cert.read_bytes(), key))

    def seal(self, entry: dict[str, Any]) -> dict[str, Any]:
        if self.signer is None:
            raise PipelineError("only a worker (with its key) can write a registry entry")
        cert_pem, key = self.signer
        sig = key.sign(canonical(entry), ec.ECDSA(hashes.SHA256()))
        return {"entry": entry, "cert": cert_pem.decode(), "sig": base64.b64encode(sig).decode()}

    def open(self, record: Any) -> dict[str, Any]:
        if not isinstance(record, dict) or not isinstance(record.get("entry"), dict):
            raise ValueError("it is not signed (an authenticated fleet lists only entries its workers signed)")
        entry, cert_pem, sig = record["entry"], record.get("cert"), record.get("sig")
        if not isinstance(cert_pem, str) or len(cert_pem) > MAX_CERT_CHARS or not isinstance(sig, str) \
                or len(sig) > MAX_SIG_CHARS:
            raise ValueError("it carries no certificate and signature")
        try:
            cert = x509.load_pem_x509_certificate(cert_pem.encode())
            cert.verify_directly_issued_by(self.ca)
        except (ValueError, TypeError, InvalidSignature):
            raise ValueError("its certificate was not issued by this fleet's CA") from None
        now = self.clock()
        if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
            raise ValueError("its certificate has expired (or is not valid yet) — re-issue it with `ecqa edge init --force`")
        if _attr(cert.subject, NameOID.ORGANIZATIONAL_UNIT_NAME) != WORKER_UNIT:
            raise ValueError("its certificate is not a worker's (issue one with `ecqa edge init --worker ID`)")
        if _attr(cert.subject, NameOID.COMMON_NAME) != entry.get("id"):
            raise ValueError(f"its certificate belongs to worker {_attr(cert.subject, NameOID.COMMON_NAME)!r}, not "
                             f"{str(entry.get('id'))[:64]!r}")
        try:
            key = cert.public_key()
            if not isinstance(key, ec.EllipticCurvePublicKey):
                raise InvalidSignature
            key.verify(base64.b64decode(sig, validate=True), canonical(entry), ec.ECDSA(hashes.SHA256()))
        except (ValueError, TypeError, InvalidSignature):
            raise ValueError("its signature does not match the entry (altered after the worker signed it)") from None
        url = urlsplit(str(entry.get("url", "")))
        if url.scheme != "https":
            raise ValueError("its URL is not https:// (workers of an authenticated fleet serve mutual TLS)")
        if not _names_host(cert, url.hostname or ""):
            raise ValueError(f"its certificate is not valid for host {str(url.hostname)[:80]!r} — re-issue it with "
                             "`ecqa edge init --worker ID --host HOST --force`")
        return entry


def _names_host(cert: x509.Certificate, host: str) -> bool:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    names = {n.lower() for n in san.get_values_for_type(x509.DNSName)}
    names |= {str(ip) for ip in san.get_values_for_type(x509.IPAddress)}
    return host.lower().strip("[]") in names


@dataclass(frozen=True)
class Fleet:
    """How this process takes part in the fleet: the registry seal, and the dispatcher's TLS (None: insecure)."""

    seal: EntrySeal | None
    client_tls: ssl.SSLContext | None

    @property
    def secure(self) -> bool:
        return self.seal is not None


def dispatcher_fleet(settings: Settings, need_client: bool = True) -> Fleet:
    """The fleet as a reader sees it: entries opened against the CA of ``cloud_dir``; with ``need_client``
    the edge certificate the dispatcher shows workers.

    :raises MaterialError: no CA (or no edge certificate) — the message says to run `ecqa cloud init`, or to
        set ECQA_FLEET_INSECURE=1 on one trusted host.
    """
    if settings.fleet_insecure:
        return Fleet(None, None)
    directory = cloud_dir_of(settings)
    ca = Path(directory) / CA_CERT
    if not ca.is_file():
        raise MaterialError(f"the edge workers' fleet is authenticated and {ca} is missing — run `ecqa cloud init` "
                            "(and `ecqa edge init --worker ID` for each worker), or set ECQA_FLEET_INSECURE=1 on a "
                            "single trusted host")
    seal = SignedEntries(ca.read_bytes())
    if not need_client:
        return Fleet(seal, None)
    return Fleet(seal, load_edge_material(directory, settings.cloud_edge).ssl_context())


def worker_fleet(settings: Settings, worker: str, advertised_host: str) -> tuple[WorkerMaterial, SignedEntries]:
    """A worker's certificate and signer, checked against the host it will advertise.

    :raises MaterialError: no certificate for ``worker``, or one that does not name ``advertised_host``.
    """
    material = load_worker_material(cloud_dir_of(settings), worker)
    host = advertised_host.strip("[]")
    if host.lower() not in {h.lower() for h in material.hosts()}:
        raise MaterialError(f"worker {material.name!r}'s certificate is not valid for {host!r} (it names "
                            f"{', '.join(material.hosts())}) — run `ecqa edge init --worker {material.name} --host {host} "
                            "--force`, or pass --advertise with one of those names")
    material.ssl_context()  # a certificate that does not load fails the start, clearly
    return material, SignedEntries.for_worker(material)


def issue_worker_certificates(settings: Settings, workers: list[str], hosts: list[str], force: bool) -> WorkerReport:
    """`ecqa edge init`: worker certificates from the CA in ``cloud_dir``.

    :raises MaterialError: no CA there, a bad name or host, or a certificate already issued without ``force``.
    """
    return issue_workers(cloud_dir_of(settings), workers, hosts, force)
