"""Cloud material: a CA, the gateway's server certificate, one client certificate per edge and
the AES-256 envelope key — created by `ecqa cloud init`, loaded by the gateway and the edge.

Layout of the directory (private files mode 0600, the directory 0700)::

    ca.pem  ca.key*           the CA (keep ca.key offline once the edges are issued)
    server.pem  server.key*   the gateway (SANs: localhost, 127.0.0.1, each --host)
    edges/NAME.pem  NAME.key* one client certificate per edge (CN = the edge identity)
    workers/ID.pem  ID.key*   one server certificate per edge worker (`ecqa edge init`; CN = the worker id)
    aes.key*                  {"kid", "key"}: the envelope key, shared by gateway and edges
    cloud.json                what was made (names, fingerprints, key id) — no secrets

An edge needs ``ca.pem``, its ``edges/NAME.*`` and ``aes.key``; the gateway needs ``ca.pem``,
``server.*`` and ``aes.key``; an edge worker needs ``ca.pem`` and its ``workers/ID.*`` (it serves the
dispatcher over mutual TLS and signs its registry entry with that key).
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import logging
import os
import re
import ssl
import stat
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud.envelope import KEY_BYTES, AesKey
from cloud.errors import MaterialError

logger = logging.getLogger(__name__)

CA_CERT, CA_KEY = "ca.pem", "ca.key"
SERVER_CERT, SERVER_KEY = "server.pem", "server.key"
EDGES_DIR = "edges"
WORKERS_DIR = "workers"
WORKER_UNIT = "worker"  # the OU of a worker certificate: only those may sign registry entries
AES_KEY = "aes.key"
MANIFEST = "cloud.json"
PRIVATE_MODE = 0o600
DEFAULT_EDGE = "edge-1"
CA_DAYS = 3650
LEAF_DAYS = 825  # the CA/Browser-Forum era maximum; re-run `cloud init --force` to renew

_EDGE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_DNS_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")


def default_cloud_dir() -> Path:
    """``<user data dir>/ecqa/cloud`` (XDG), used when neither --dir nor ECQA_CLOUD_DIR is given."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "ecqa" / "cloud"


def _init_hint(directory: Path) -> str:
    return f"run `ecqa cloud init --dir {directory}`"


# --- creation ------------------------------------------------------------------------------
@dataclass(frozen=True)
class InitReport:
    """What `cloud init` wrote (no secrets)."""

    directory: Path
    files: tuple[tuple[str, int], ...]  # (path relative to directory, mode)
    edges: tuple[str, ...]
    hosts: tuple[str, ...]
    kid: str
    ca_sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "directory": str(self.directory),
            "files": [{"path": p, "mode": oct(m)} for p, m in self.files],
            "edges": list(self.edges),
            "hosts": list(self.hosts),
            "kid": self.kid,
            "ca_sha256": self.ca_sha256,
        }


def check_edge_names(edges: Sequence[str]) -> tuple[str, ...]:
    """:raises MaterialError: an invalid or repeated edge name."""
    names = tuple(edges) or (DEFAULT_EDGE,)
    for name in names:
        if not _EDGE_NAME.match(name):
            raise MaterialError(
                f"invalid edge name {name!r} — use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"
            )
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise MaterialError(f"edge name {dupes[0]!r} is given twice — each --edge must be unique")
    return names


def _san_entries(hosts: Sequence[str]) -> tuple[list[x509.GeneralName], tuple[str, ...]]:
    names: list[x509.GeneralName] = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    seen = {"localhost", "127.0.0.1"}
    extra: list[str] = []
    for host in hosts:
        h = host.strip()
        if h.lower() in seen:
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            labels = h.rstrip(".").split(".")
            if labels and labels[0] == "*":
                labels = labels[1:]
            if not h or len(h) > 253 or not labels or not all(_DNS_LABEL.match(lab) for lab in labels):
                raise MaterialError(f"invalid --host {host!r} — give a DNS name (gw.example.com) or an IP address") from None
            names.append(x509.DNSName(h.rstrip(".").lower()))
        seen.add(h.lower())
        extra.append(h)
    return names, tuple(extra)


def _new_key() -> ec.EllipticCurvePrivateKey:
    # P-256: TLS 1.3's mandatory curve; signing is ~50x faster than RSA-2048 key generation.
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _builder(subject: x509.Name, issuer: x509.Name, public_key: Any, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock differences
        .not_valid_after(now + dt.timedelta(days=days))
    )


def _name(cn: str, unit: str) -> x509.Name:
    return x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "edgecloud-qa"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
            x509.NameAttribute(NameOID.COMMON_NAME, cn),
        ]
    )


def _leaf(
    cn: str, unit: str, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, usage: x509.ObjectIdentifier,
    sans: list[x509.GeneralName],
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = _new_key()
    cert = (
        _builder(_name(cn, unit), ca_cert.subject, key.public_key(), LEAF_DAYS)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False, data_encipherment=False,
                          key_agreement=True, key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return key, cert


def _write(path: Path, data: bytes, private: bool) -> int:
    """Write atomically; a private file is created 0600 (never briefly readable by others)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mkstemp creates 0600
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        mode = PRIVATE_MODE if private else 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return mode


def existing_material(directory: Path) -> list[str]:
    """Names of files `cloud init` would overwrite."""
    found = [n for n in (CA_CERT, CA_KEY, SERVER_CERT, SERVER_KEY, AES_KEY, MANIFEST) if (directory / n).exists()]
    edges = directory / EDGES_DIR
    if edges.is_dir():
        found += sorted(f"{EDGES_DIR}/{p.name}" for p in edges.iterdir() if p.suffix in (".pem", ".key"))
    return found


def init_material(
    directory: Path, edges: Sequence[str] = (), hosts: Sequence[str] = (), force: bool = False
) -> InitReport:
    """Create the CA, server and edge certificates and the AES key in ``directory``.

    :param edges: edge names (client certificate CNs); default ``edge-1``.
    :param hosts: extra server names/IPs for the gateway certificate.
    :param force: replace existing material (edges holding the old files are then refused).
    :raises MaterialError: invalid names, or material already there without ``force``.
    """
    directory = Path(directory).expanduser()
    names = check_edge_names(edges)
    sans, extra_hosts = _san_entries(hosts)
    if directory.exists() and not directory.is_dir():
        raise MaterialError(f"{directory} is a file, not a directory — choose another --dir")
    found = existing_material(directory)
    if found and not force:
        raise MaterialError(
            f"{directory} already holds cloud material ({', '.join(found[:4])}{', …' if len(found) > 4 else ''}) — "
            "pass --force to replace it (edges with the old certificates and key will be refused)"
        )
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(directory, 0o700)
    if force:
        for rel in found:
            if rel.startswith(f"{EDGES_DIR}/"):
                (directory / rel).unlink(missing_ok=True)

    ca_key = _new_key()
    ca_subject = _name("edgecloud-qa cloud CA", "ca")
    ca_cert = (
        _builder(ca_subject, ca_subject, ca_key.public_key(), CA_DAYS)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                          key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files: list[tuple[str, int]] = []

    def put(rel: str, data: bytes, private: bool) -> None:
        files.append((rel, _write(directory / rel, data, private)))

    put(CA_KEY, _key_pem(ca_key), True)
    put(CA_CERT, _cert_pem(ca_cert), False)
    skey, scert = _leaf("ecqa-gateway", "gateway", ca_key, ca_cert, ExtendedKeyUsageOID.SERVER_AUTH, sans)
    put(SERVER_KEY, _key_pem(skey), True)
    put(SERVER_CERT, _cert_pem(scert), False)
    for name in names:
        ekey, ecert = _leaf(name, "edge", ca_key, ca_cert, ExtendedKeyUsageOID.CLIENT_AUTH, [x509.DNSName(name)])
        put(f"{EDGES_DIR}/{name}.key", _key_pem(ekey), True)
        put(f"{EDGES_DIR}/{name}.pem", _cert_pem(ecert), False)
    os.chmod(directory / EDGES_DIR, 0o700)
    aes = AesKey.generate()
    key_doc = {"kid": aes.kid, "alg": "AES-256-GCM", "key": base64.b64encode(aes.secret_bytes()).decode()}
    put(AES_KEY, json.dumps(key_doc).encode() + b"\n", True)
    ca_sha256 = ca_cert.fingerprint(hashes.SHA256()).hex()
    manifest = {
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "ca_sha256": ca_sha256,
        "server_sans": ["localhost", "127.0.0.1", *extra_hosts],
        "edges": list(names),
        "kid": aes.kid,
    }
    put(MANIFEST, json.dumps(manifest, indent=2).encode() + b"\n", False)
    logger.info("cloud material written to %s (%d edges, key id %s)", directory, len(names), aes.kid)
    return InitReport(directory=directory, files=tuple(files), edges=names, hosts=extra_hosts, kid=aes.kid, ca_sha256=ca_sha256)


# --- loading -------------------------------------------------------------------------------
@dataclass(frozen=True)
class WorkerReport:
    """What `edge init` wrote (no secrets)."""

    directory: Path
    files: tuple[tuple[str, int], ...]
    workers: tuple[str, ...]
    hosts: tuple[str, ...]
    ca_sha256: str

    def as_dict(self) -> dict[str, Any]:
        return {"directory": str(self.directory), "files": [{"path": p, "mode": oct(m)} for p, m in self.files],
                "workers": list(self.workers), "hosts": list(self.hosts), "ca_sha256": self.ca_sha256}


def _load_ca(directory: Path) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    """:raises MaterialError: no CA (or not one `cloud init` made) in ``directory``."""
    key_path, cert_path = directory / CA_KEY, directory / CA_CERT
    if not key_path.is_file() or not cert_path.is_file():
        raise MaterialError(f"no CA in {directory} (ca.pem and ca.key) — run `ecqa cloud init --dir {directory}` first, "
                            "or point --dir at the directory that holds the project's CA")
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except (ValueError, TypeError, OSError):
        raise MaterialError(f"{directory} holds no readable CA — re-create it with `ecqa cloud init --force`") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise MaterialError(f"{key_path} is not the EC key `ecqa cloud init` writes — re-create it with "
                            "`ecqa cloud init --force`")
    return key, cert


def issue_workers(directory: Path, workers: Sequence[str], hosts: Sequence[str] = (), force: bool = False) -> WorkerReport:
    """One server certificate per edge worker, signed by the project's CA in ``directory``.

    :param workers: worker ids (the certificate CN; `ecqa edge serve --id`).
    :param hosts: extra DNS names or IPs the workers are reached at (besides localhost and 127.0.0.1): the
        dispatcher checks the worker's URL against them.
    :param force: replace a worker's existing certificate.
    :raises MaterialError: no CA, a bad name or host, or a certificate already there without ``force``.
    """
    directory = Path(directory).expanduser()
    if not workers:
        raise MaterialError("name at least one worker — pass --worker ID (the id `ecqa edge serve --id` will use)")
    names = check_edge_names(workers)
    sans, extra_hosts = _san_entries(hosts)
    ca_key, ca_cert = _load_ca(directory)
    there = [n for n in names if (directory / WORKERS_DIR / f"{n}.pem").exists()]
    if there and not force:
        raise MaterialError(f"worker {there[0]!r} already has a certificate in {directory / WORKERS_DIR} — pass --force "
                            "to replace it (the worker then needs the new files)")
    files: list[tuple[str, int]] = []
    for name in names:
        key, cert = _leaf(name, WORKER_UNIT, ca_key, ca_cert, ExtendedKeyUsageOID.SERVER_AUTH, sans)
        for rel, data, private in ((f"{WORKERS_DIR}/{name}.key", _key_pem(key), True),
                                   (f"{WORKERS_DIR}/{name}.pem", _cert_pem(cert), False)):
            files.append((rel, _write(directory / rel, data, private)))
    os.chmod(directory / WORKERS_DIR, 0o700)
    logger.info("%d worker certificates written to %s", len(names), directory / WORKERS_DIR)
    return WorkerReport(directory=directory, files=tuple(files), workers=names, hosts=extra_hosts,
                        ca_sha256=ca_cert.fingerprint(hashes.SHA256()).hex())


def _need(directory: Path, rel: str) -> Path:
    path = directory / rel
    if not path.is_file():
        if not directory.is_dir():
            raise MaterialError(f"cloud directory {directory} does not exist — {_init_hint(directory)}")
        raise MaterialError(f"{path} is missing — {_init_hint(directory)} (or copy it from the gateway's cloud directory)")
    return path


INSECURE_FLAG = "--allow-insecure-key-permissions"


def _check_private(path: Path, refuse: bool = False) -> None:
    """Warn about (``refuse=True``: refuse, as ssh refuses such a private key) a key file that users
    other than its owner may read or write.

    :raises MaterialError: ``refuse`` and the file's mode gives group or others any access.
    """
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        if refuse:
            raise MaterialError(f"{path} is accessible by other users (mode {mode:o}) — run `chmod 600 {path}` "
                                f"(or pass {INSECURE_FLAG} to start anyway)")
        logger.warning("%s is readable by other users (mode %o) — run `chmod 600 %s`", path, mode, path)


def load_aes_key(path: Path, refuse_insecure: bool = False) -> AesKey:
    """:raises MaterialError: not a key file written by `cloud init` (or, with ``refuse_insecure``,
    one that other users may read)."""
    _check_private(path, refuse_insecure)
    try:
        doc = json.loads(path.read_text())
        key = AesKey(str(doc["kid"]), base64.b64decode(doc["key"], validate=True))
    except (ValueError, KeyError, TypeError):
        raise MaterialError(
            f"{path} is not a {KEY_BYTES * 8}-bit key file written by `ecqa cloud init` — re-create it with `ecqa cloud init --force`"
        ) from None
    return key


@dataclass(frozen=True)
class ServerMaterial:
    """What the gateway needs: its certificate and key, the CA that signs edges, the keyring."""

    directory: Path
    ca_cert: Path
    cert: Path
    key: Path
    keyring: dict[str, AesKey]

    def ssl_context(self) -> ssl.SSLContext:
        """TLS 1.3 only; a client certificate signed by the CA is required."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.maximum_version = ssl.TLSVersion.TLSv1_3
        try:
            ctx.load_cert_chain(self.cert, self.key)
            ctx.load_verify_locations(cafile=str(self.ca_cert))
        except (ssl.SSLError, OSError) as exc:
            raise MaterialError(
                f"cannot load the gateway certificate from {self.directory}: {exc} — {_init_hint(self.directory)} --force"
            ) from None
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx


@dataclass(frozen=True)
class EdgeMaterial:
    """What an edge needs: the CA to verify the gateway, its client certificate, the AES key."""

    directory: Path
    name: str
    ca_cert: Path
    cert: Path
    key: Path
    aes: AesKey

    def ssl_context(self) -> ssl.SSLContext:
        """TLS 1.3 only; the server must present a certificate signed by the CA for the URL's host."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname and CERT_REQUIRED by default
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        try:
            ctx.load_verify_locations(cafile=str(self.ca_cert))
            ctx.load_cert_chain(self.cert, self.key)
        except (ssl.SSLError, OSError) as exc:
            raise MaterialError(
                f"cannot load edge {self.name!r} certificate from {self.directory}: {exc} — {_init_hint(self.directory)} --force"
            ) from None
        return ctx


def load_server_material(directory: Path, allow_insecure_key_permissions: bool = False) -> ServerMaterial:
    """The gateway's material. Like ssh with a private key, it refuses a ``server.key`` or ``aes.key``
    that other users may read, unless ``allow_insecure_key_permissions`` (then it only warns).

    :raises MaterialError: a file is missing, invalid or readable by others (the message says how to fix it).
    """
    directory = Path(directory).expanduser()
    ca, cert, key, aes_path = (_need(directory, n) for n in (CA_CERT, SERVER_CERT, SERVER_KEY, AES_KEY))
    _check_private(key, refuse=not allow_insecure_key_permissions)
    aes = load_aes_key(aes_path, refuse_insecure=not allow_insecure_key_permissions)
    return ServerMaterial(directory=directory, ca_cert=ca, cert=cert, key=key, keyring={aes.kid: aes})


def edge_names(directory: Path) -> list[str]:
    edges = Path(directory) / EDGES_DIR
    if not edges.is_dir():
        return []
    return sorted(p.stem for p in edges.glob("*.pem") if (edges / f"{p.stem}.key").is_file())


def load_edge_material(directory: Path, edge: str = "") -> EdgeMaterial:
    """Material of edge ``edge`` ('' = the only edge in the directory).

    :raises MaterialError: missing files, or several edges and none chosen.
    """
    directory = Path(directory).expanduser()
    ca = _need(directory, CA_CERT)
    aes_path = _need(directory, AES_KEY)
    names = edge_names(directory)
    if not edge:
        if not names:
            raise MaterialError(f"no edge certificate in {directory / EDGES_DIR} — {_init_hint(directory)} --edge NAME")
        if len(names) > 1:
            raise MaterialError(
                f"{directory} holds certificates for several edges ({', '.join(names)}) — choose one with ECQA_CLOUD_EDGE"
            )
        edge = names[0]
    if edge not in names:
        raise MaterialError(
            f"no certificate for edge {edge!r} in {directory / EDGES_DIR} (have: {', '.join(names) or 'none'}) — "
            f"{_init_hint(directory)} --edge {edge} --force, or set ECQA_CLOUD_EDGE"
        )
    key = directory / EDGES_DIR / f"{edge}.key"
    _check_private(key)
    return EdgeMaterial(
        directory=directory, name=edge, ca_cert=ca, cert=directory / EDGES_DIR / f"{edge}.pem", key=key, aes=load_aes_key(aes_path)
    )


@dataclass(frozen=True)
class WorkerMaterial:
    """What an edge worker needs: its certificate and key, and the CA that signs the dispatchers' certificates."""

    directory: Path
    name: str
    ca_cert: Path
    cert: Path
    key: Path

    def ssl_context(self) -> ssl.SSLContext:
        """TLS 1.3 only; a client certificate signed by the CA is required (the dispatcher's edge certificate)."""
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        try:
            ctx.load_cert_chain(self.cert, self.key)
            ctx.load_verify_locations(cafile=str(self.ca_cert))
        except (ssl.SSLError, OSError) as exc:
            raise MaterialError(f"cannot load worker {self.name!r} certificate from {self.directory}: {exc} — "
                                f"run `ecqa edge init --dir {self.directory} --worker {self.name} --force`") from None
        ctx.verify_mode = ssl.CERT_REQUIRED
        return ctx

    def hosts(self) -> list[str]:
        """The DNS names and IPs the certificate is valid for."""
        cert = x509.load_pem_x509_certificate(self.cert.read_bytes())
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return []
        return [*san.get_values_for_type(x509.DNSName), *(str(ip) for ip in san.get_values_for_type(x509.IPAddress))]


def worker_names(directory: Path) -> list[str]:
    workers = Path(directory) / WORKERS_DIR
    if not workers.is_dir():
        return []
    return sorted(p.stem for p in workers.glob("*.pem") if (workers / f"{p.stem}.key").is_file())


def load_worker_material(directory: Path, worker: str = "") -> WorkerMaterial:
    """Material of worker ``worker`` ('' = the only worker in the directory).

    :raises MaterialError: missing files, or several workers and none chosen; a key others may read.
    """
    directory = Path(directory).expanduser()
    ca = _need(directory, CA_CERT)
    names = worker_names(directory)
    hint = f"run `ecqa edge init --dir {directory} --worker {worker or 'ID'}`"
    if not worker:
        if not names:
            raise MaterialError(f"no worker certificate in {directory / WORKERS_DIR} — {hint}")
        if len(names) > 1:
            raise MaterialError(f"{directory} holds certificates for several workers ({', '.join(names)}) — pick one with --id")
        worker = names[0]
    if worker not in names:
        raise MaterialError(f"no certificate for worker {worker!r} in {directory / WORKERS_DIR} (have: "
                            f"{', '.join(names) or 'none'}) — {hint}")
    key = directory / WORKERS_DIR / f"{worker}.key"
    _check_private(key, refuse=True)
    return WorkerMaterial(directory=directory, name=worker, ca_cert=ca, cert=directory / WORKERS_DIR / f"{worker}.pem", key=key)


def peer_identity(peercert: dict[str, Any] | None) -> str:
    """The edge identity (certificate CN) from ``SSLSocket.getpeercert()``; '' if none."""
    if not peercert:
        return ""
    for rdn in peercert.get("subject", ()):
        for k, v in rdn:
            if k == "commonName":
                return str(v)
    return ""
