"""The option types the `ecqa` commands share, each written once, and the settings flags of the commands
that answer questions (`ask`, `shell`, `ui`, `up`), handed to each as one dict of Settings overrides."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object for scripts.")]

# Where the index is.
Collection = Annotated[str | None, typer.Option("--collection", "-c", help="Collection name [env ECQA_COLLECTION].")]
QdrantPath = Annotated[Path | None, typer.Option("--qdrant-path", help="Embedded Qdrant folder [env ECQA_QDRANT_PATH].")]
QdrantUrl = Annotated[str | None, typer.Option("--qdrant-url", help="Qdrant server/cluster URL [env ECQA_QDRANT_URL].")]
StoreKind = Annotated[str | None, typer.Option("--store", help="The embedded index: edge (Qdrant Edge) or local "
                                               "(qdrant-client's local mode) [env ECQA_STORE].")]

# How a question is answered (`ecqa ask`, `ecqa shell`).
Policy = Annotated[str | None, typer.Option("--policy", help="edge, cloud, cascade, latency or learned [env ECQA_POLICY; "
                                                             "default cascade with a cloud URL, else edge].")]
Network = Annotated[str | None, typer.Option("--network", help="Emulate the link: lan, 5g, wifi, congested [env ECQA_NETWORK].")]
BudgetMs = Annotated[float | None, typer.Option("--budget-ms", help="Latency budget Tmax in ms [env ECQA_BUDGET_MS].")]
CloudUrl = Annotated[str | None, typer.Option("--cloud-url", help="Cloud gateway https:// URL [env ECQA_CLOUD_URL].")]
CloudDir = Annotated[Path | None, typer.Option("--cloud-dir", help="Directory `ecqa cloud init` wrote [env ECQA_CLOUD_DIR].")]
Pii = Annotated[str | None, typer.Option("--pii", help="Personal data bound for the cloud: redact (placeholders out, values "
                                                       "back in the answer), block (a question carrying any is not sent) "
                                                       "or off [env ECQA_PII; default redact].")]

# The web UI (`ecqa ui`, `ecqa up`): the same settings are where it starts; its controls change them per question.
UiPort = Annotated[int, typer.Option("--port", min=1, max=65535, help="Port of the web UI.")]
UiHost = Annotated[str, typer.Option("--host", help="Address the web UI binds (0.0.0.0 serves other machines).")]
UiPolicy = Annotated[str | None, typer.Option("--policy", help="Initial policy: edge, cloud, cascade, latency or learned "
                                                               "[env ECQA_POLICY].")]
UiNetwork = Annotated[str | None, typer.Option("--network", help="Initial link profile: lan, 5g, wifi, congested "
                                                                 "[env ECQA_NETWORK].")]
UiBudgetMs = Annotated[float | None, typer.Option("--budget-ms", help="Initial latency budget Tmax in ms [env ECQA_BUDGET_MS].")]
UiCloudUrl = Annotated[str | None, typer.Option("--cloud-url", help="Cloud gateway https:// URL [env ECQA_CLOUD_URL]; "
                                                                    "none = edge only.")]

# The cloud tier's and the edge workers' own commands.
CloudMaterialDir = Annotated[Path | None, typer.Option(
    "--dir", help="Cloud material directory [env ECQA_CLOUD_DIR; default <user data dir>/ecqa/cloud].")]
WorkerRegistry = Annotated[str | None, typer.Option(
    "--registry", help="Where workers advertise: 'file' (<user data dir>/ecqa/registry), a folder, or redis://host:port/db "
    "[env ECQA_EDGE_REGISTRY].")]

# The settings flags of the commands that answer questions, in the order their --help lists them.
SHELL_FLAGS: dict[str, Any] = {"collection": Collection, "policy": Policy, "network": Network, "budget_ms": BudgetMs,
                               "qdrant_path": QdrantPath, "qdrant_url": QdrantUrl, "cloud_url": CloudUrl, "cloud_dir": CloudDir,
                               "pii": Pii}
UI_FLAGS = SHELL_FLAGS | {"policy": UiPolicy, "network": UiNetwork, "budget_ms": UiBudgetMs, "cloud_url": UiCloudUrl}
# `ecqa up` starts its own cloud gateway and serves the embedded index.
UP_FLAGS = {name: kind for name, kind in UI_FLAGS.items() if name not in ("qdrant_url", "cloud_url")}


def settings_flags(flags: Mapping[str, Any]) -> Callable[[F], F]:
    """Give a command the settings flags ``flags`` (parameter name → option type, in --help order) where its
    ``flags`` parameter stands, and call it with the values given as one dict of Settings overrides.

    A flag with the name of one of the command's own parameters (`ask --threshold`) takes its place in --help
    and is handed to that parameter instead. Typer reads the signature set here and calls by keyword.
    """

    def decorate(command: F) -> F:
        own = inspect.signature(command, eval_str=True).parameters
        params: list[inspect.Parameter] = []
        for p in own.values():
            if p.name == "flags":
                params += [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=None, annotation=kind)
                           for name, kind in flags.items()]
            elif p.name not in flags:
                params.append(p.replace(kind=inspect.Parameter.KEYWORD_ONLY))

        @functools.wraps(command)
        def run(**given: Any) -> Any:
            overrides = {name: given.pop(name) for name in flags if name not in own}
            return command(**given, flags=overrides)

        run.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in params}
        return run  # type: ignore[return-value]

    return decorate
