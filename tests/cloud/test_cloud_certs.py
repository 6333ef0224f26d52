"""cloud.certs: what `cloud init` writes (modes, SANs, chains, key), overwrite protection, loading."""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import ssl
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cloud.certs import (
    default_cloud_dir,
    init_material,
    load_edge_material,
    load_server_material,
    peer_identity,
)
from cloud.errors import MaterialError


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def cert(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def signed_by(child: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        child.verify_directly_issued_by(issuer)
        return True
    except (ValueError, TypeError, InvalidSignature):
        return False


def test_init_writes_every_file_with_private_ones_0600(tmp_path: Path) -> None:
    d = tmp_path / "cloud"
    report = init_material(d, edges=["edge-a", "edge-b"], hosts=["gw.example.com", "10.1.2.3"])
    expected = {
        "ca.pem": 0o644, "ca.key": 0o600, "server.pem": 0o644, "server.key": 0o600, "aes.key": 0o600, "cloud.json": 0o644,
        "edges/edge-a.pem": 0o644, "edges/edge-a.key": 0o600, "edges/edge-b.pem": 0o644, "edges/edge-b.key": 0o600,
    }
    assert dict(report.files) == expected
    assert {rel: mode(d / rel) for rel in expected} == expected
    assert mode(d) == 0o700 and mode(d / "edges") == 0o700
    assert not [p.name for p in d.rglob(".*")]  # no temporary files left behind
    manifest = json.loads((d / "cloud.json").read_text())
    assert manifest["edges"] == ["edge-a", "edge-b"] and manifest["kid"] == report.kid
    assert "key" not in manifest and manifest["server_sans"] == ["localhost", "127.0.0.1", "gw.example.com", "10.1.2.3"]


def test_certificates_chain_to_the_ca_with_the_right_names_and_usages(tmp_path: Path) -> None:
    init_material(tmp_path, edges=["edge-a", "edge-b"], hosts=["gw.example.com", "10.1.2.3"])
    ca, server = cert(tmp_path / "ca.pem"), cert(tmp_path / "server.pem")
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is True
    assert signed_by(server, ca)
    sans = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.DNSName) == ["localhost", "gw.example.com"]
    assert sans.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.1.2.3")]
    assert list(server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.SERVER_AUTH]
    for name in ("edge-a", "edge-b"):
        client = cert(tmp_path / "edges" / f"{name}.pem")
        assert signed_by(client, ca)
        assert client.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == name
        assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [ExtendedKeyUsageOID.CLIENT_AUTH]
        assert isinstance(client.public_key(), ec.EllipticCurvePublicKey)
    # Another init makes another CA: its certificates do not chain to this one.
    init_material(tmp_path / "other")
    assert not signed_by(cert(tmp_path / "other" / "server.pem"), ca)


def test_aes_key_is_256_bits_with_a_key_id(tmp_path: Path) -> None:
    report = init_material(tmp_path)
    doc = json.loads((tmp_path / "aes.key").read_text())
    assert doc["kid"] == report.kid and doc["alg"] == "AES-256-GCM" and len(base64.b64decode(doc["key"])) == 32
    edge = load_edge_material(tmp_path)
    assert edge.name == "edge-1" and edge.aes.kid == report.kid and len(edge.aes.secret_bytes()) == 32
    assert load_server_material(tmp_path).keyring == {report.kid: edge.aes}


def test_refuses_to_overwrite_without_force_and_replaces_with_it(tmp_path: Path) -> None:
    first = init_material(tmp_path, edges=["old-edge"])
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(MaterialError, match="already holds cloud material .* pass --force"):
        init_material(tmp_path, edges=["new-edge"])
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing touched
    second = init_material(tmp_path, edges=["new-edge"], force=True)
    assert second.kid != first.kid and second.ca_sha256 != first.ca_sha256
    assert sorted(p.name for p in (tmp_path / "edges").iterdir()) == ["new-edge.key", "new-edge.pem"]  # old edge gone
    assert (tmp_path / "ca.pem").read_bytes() != before[tmp_path / "ca.pem"]
    assert mode(tmp_path / "aes.key") == 0o600 and mode(tmp_path / "ca.key") == 0o600


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"edges": ["bad name"]}, "invalid edge name 'bad name'"),
        ({"edges": ["-x"]}, "invalid edge name"),
        ({"edges": ["a", "a"]}, "edge name 'a' is given twice"),
        ({"hosts": ["not a host"]}, "invalid --host 'not a host'"),
        ({"hosts": ["bad_label.example"]}, "invalid --host"),
    ],
)
def test_invalid_names_are_refused_before_anything_is_written(tmp_path: Path, kwargs: dict, fragment: str) -> None:
    with pytest.raises(MaterialError, match=fragment):
        init_material(tmp_path / "c", **kwargs)
    assert not (tmp_path / "c").exists()


def test_loading_says_how_to_fix_missing_material(tmp_path: Path) -> None:
    with pytest.raises(MaterialError, match=f"cloud directory {tmp_path / 'none'} does not exist — run `ecqa cloud init --dir"):
        load_server_material(tmp_path / "none")
    init_material(tmp_path / "c", edges=["a", "b"])
    with pytest.raises(MaterialError, match=r"several edges \(a, b\) — choose one with ECQA_CLOUD_EDGE"):
        load_edge_material(tmp_path / "c")
    with pytest.raises(MaterialError, match="no certificate for edge 'z'"):
        load_edge_material(tmp_path / "c", "z")
    assert load_edge_material(tmp_path / "c", "b").name == "b"
    (tmp_path / "c" / "aes.key").write_text("{}")
    with pytest.raises(MaterialError, match="not a 256-bit key file"):
        load_edge_material(tmp_path / "c", "a")
    os.remove(tmp_path / "c" / "server.key")
    with pytest.raises(MaterialError, match="server.key is missing — run `ecqa cloud init"):
        load_server_material(tmp_path / "c")


def test_tls_contexts_are_tls13_only_and_require_peers(tmp_path: Path) -> None:
    init_material(tmp_path)
    server = load_server_material(tmp_path).ssl_context()
    client = load_edge_material(tmp_path).ssl_context()
    assert server.minimum_version == server.maximum_version == ssl.TLSVersion.TLSv1_3
    assert server.verify_mode == ssl.CERT_REQUIRED
    assert client.minimum_version == ssl.TLSVersion.TLSv1_3 and client.check_hostname and client.verify_mode == ssl.CERT_REQUIRED


def test_peer_identity_is_the_certificate_common_name() -> None:
    peer = {"subject": ((("organizationName", "edgecloud-qa"),), (("commonName", "edge-7"),))}
    assert peer_identity(peer) == "edge-7"
    assert peer_identity(None) == "" and peer_identity({}) == ""


def test_default_directory_follows_xdg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    assert default_cloud_dir() == tmp_path / "ecqa" / "cloud"
