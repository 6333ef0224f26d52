"""Fixtures of the cloud tests: real certificates and keys made by cloud.certs, real TLS servers
on 127.0.0.1 (free ports, always stopped), the fake backend of cloud_helpers and the real
embedded backend (started once, for the slow tests)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cloud_helpers import EdgeClient, FakeOpenAI

from cloud.backend import EmbeddedBackend, OpenAIBackend
from cloud.certs import init_material, load_server_material
from cloud.gateway import Gateway


@pytest.fixture(scope="session")
def material_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Real cloud material: a CA, the server certificate, edges edge-1 and edge-2, the AES key."""
    d = tmp_path_factory.mktemp("cloud") / "material"
    init_material(d, edges=["edge-1", "edge-2"])
    return d


@pytest.fixture(scope="session")
def stranger_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Material from another `cloud init`: another CA and key, an edge also called edge-1."""
    d = tmp_path_factory.mktemp("cloud") / "stranger"
    init_material(d, edges=["edge-1"])
    return d


@pytest.fixture(scope="session")
def edge1_dir(tmp_path_factory: pytest.TempPathFactory, material_dir: Path) -> Path:
    """What edge-1 is given: ca.pem, its own certificate and key, aes.key."""
    d = tmp_path_factory.mktemp("cloud") / "edge1"
    (d / "edges").mkdir(parents=True)
    for rel in ("ca.pem", "aes.key", "edges/edge-1.pem", "edges/edge-1.key"):
        shutil.copy2(material_dir / rel, d / rel)
    return d


@pytest.fixture
def fake_backend() -> Iterator[FakeOpenAI]:
    fake = FakeOpenAI()
    yield fake
    fake.stop()


@pytest.fixture
def gateway(material_dir: Path, fake_backend: FakeOpenAI) -> Iterator[Gateway]:
    """A real gateway on 127.0.0.1 (free port) in front of the fake backend; 64 KiB envelope limit."""
    gw = Gateway(load_server_material(material_dir), OpenAIBackend(fake_backend.url), host="127.0.0.1", port=0,
                 max_envelope_bytes=64 * 1024)
    gw.start()
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def embedded_backend() -> Iterator[EmbeddedBackend]:
    """The real default backend (Qwen2.5-Coder-1.5B-Instruct Q4_K_M, chat family, in a child process),
    started once for the slow tests."""
    backend = EmbeddedBackend(n_ctx=2048)
    backend.warm_up()
    yield backend
    backend.close()


@pytest.fixture
def edge_client(material_dir: Path, gateway: Gateway) -> Iterator[EdgeClient]:
    client = EdgeClient(material_dir, gateway.url)
    yield client
    client.close()
