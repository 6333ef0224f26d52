"""The deploy checks of deploy/, offline: the compose file, every kustomize overlay rendered and validated against
the Kubernetes schemas, and the policy scan of the manifests and the Dockerfile.

tests/deploy runs these functions on the real files and on broken ones; ``make deploy-check`` runs :func:`main`
(``python tests/deploy/deploy_helpers.py``): one line and exit code 2 on a failure. The tools are Debian's
docker-compose and kubectl, and checkov, kubernetes-validate and compose-spec in .venv-deploy — all installed by
``make deploy-tools``; a missing one is a :class:`ToolMissing` that says so. Every check returns the problems it
found, as one line each: an empty list is a pass.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
COMPOSE_FILE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
CHECKOV_CONFIG = DEPLOY / "checkov.yaml"
TOOLS_VENV = REPO / ".venv-deploy"
# The Kubernetes release the manifests are validated against (kubernetes-validate's bundled schemas): the
# kubectl the checks render with is 1.32, and a cluster within one minor version of it accepts them.
K8S_VERSION = "1.32.0"
OVERLAYS = ("cpu", "gpu")
COMPOSE_PROFILES = ("cpu", "gpu")
PLACEHOLDER = b"placeholder for the deploy checks, never a key\n"
FIX = "run `make deploy-tools`"


class DeployCheckError(Exception):
    """A check could not run (a tool failed in a way that is not a finding)."""


class ToolMissing(DeployCheckError):
    """A tool of the deploy checks is not installed."""


# Where each tool comes from: the pinned ones from .venv-deploy only (another version on PATH would judge by other
# rules), Debian's from PATH.
VENV_TOOLS = ("checkov", "kubernetes-validate", "python")


def tool(name: str) -> str:
    """The path of a deploy-check tool.

    :raises ToolMissing: not installed — the message says how to install it.
    """
    if name in VENV_TOOLS:
        path = TOOLS_VENV / "bin" / name
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
        raise ToolMissing(f"{name} is not installed in {TOOLS_VENV.name} — {FIX}")
    found = shutil.which(name)
    if found is None:
        raise ToolMissing(f"{name} is not installed — {FIX}")
    return found


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise DeployCheckError(f"{Path(cmd[0]).name} took over {timeout:.0f} s") from None


def _lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


# --- compose ---------------------------------------------------------------------------------------------------
_SPEC_CHECK = """
import sys
from compose_spec import PyCompose
try:
    PyCompose.from_yaml(sys.stdin.read())
except ValueError as exc:
    print(exc)
    sys.exit(1)
"""


def validate_compose(path: Path = COMPOSE_FILE) -> list[str]:
    """Problems of a compose file, every profile enabled: ``docker-compose config`` (interpolation, YAML anchors,
    its schema, depends_on), the compose-spec parser on what that resolved (the current spec's types and values),
    and the references compose itself lets through (a service's secret or named volume that is not declared)."""
    path = Path(path).resolve()
    profiles = [arg for p in COMPOSE_PROFILES for arg in ("--profile", p)]
    res = _run([tool("docker-compose"), "-f", str(path), *profiles, "config"], cwd=path.parent)
    if res.returncode != 0:
        return [f"{path.name}: {' '.join(_lines(res.stderr)) or 'docker-compose config failed'}"]
    resolved = res.stdout
    python = tool("python")  # .venv-deploy's interpreter: compose-spec lives there
    spec = subprocess.run([python, "-c", _SPEC_CHECK], input=resolved, capture_output=True, text=True, timeout=60)
    if "ModuleNotFoundError" in spec.stderr:
        raise ToolMissing(f"compose-spec is not installed in {TOOLS_VENV.name} — {FIX}")
    if spec.returncode != 0:
        return [f"{path.name}: compose-spec: {' '.join(_lines(spec.stdout + spec.stderr))}"]
    return [f"{path.name}: {p}" for p in _undeclared(yaml.safe_load(resolved))]


def _undeclared(doc: dict) -> list[str]:
    problems = []
    secrets = set(doc.get("secrets") or {})
    volumes = set(doc.get("volumes") or {})
    for name, service in (doc.get("services") or {}).items():
        for ref in service.get("secrets") or []:
            source = ref if isinstance(ref, str) else ref.get("source")
            if source not in secrets:
                problems.append(f"service {name} uses secret {source!r}, which is not declared under secrets:")
        for mount in service.get("volumes") or []:
            if isinstance(mount, dict) and mount.get("type") == "volume" and mount.get("source") \
                    and mount["source"] not in volumes:
                problems.append(f"service {name} mounts volume {mount['source']!r}, which is not declared under volumes:")
    return problems


def compose_services(path: Path = COMPOSE_FILE) -> dict[str, dict]:
    """Every service as ``docker-compose config`` resolves it (anchors merged, variables at their defaults), each
    with its ``profiles`` (none: always on)."""
    path = Path(path).resolve()
    profiles = [arg for p in COMPOSE_PROFILES for arg in ("--profile", p)]
    res = _run([tool("docker-compose"), "-f", str(path), *profiles, "config"], cwd=path.parent)
    if res.returncode != 0:
        raise DeployCheckError(f"{path.name}: {' '.join(_lines(res.stderr))}")
    return yaml.safe_load(res.stdout)["services"]


# --- kustomize and the Kubernetes schemas ----------------------------------------------------------------------
def secret_files(k8s: Path = K8S) -> list[Path]:
    """The files every secretGenerator of the kustomizations under ``k8s`` reads (the operator supplies them)."""
    files = []
    for kustomization in sorted(k8s.rglob("kustomization.yaml")):
        doc = yaml.safe_load(kustomization.read_text()) or {}
        for gen in doc.get("secretGenerator") or []:
            for entry in gen.get("files") or []:
                files.append((kustomization.parent / entry.split("=", 1)[-1]).resolve())
    return files


def k8s_tree(workdir: Path, k8s: Path = K8S) -> Path:
    """A copy of ``k8s`` in ``workdir`` whose secret files are placeholders: the overlays render without real keys,
    and real ones an operator left in the tree never reach the checks' output."""
    copy = Path(workdir) / "k8s"
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(k8s, copy, ignore=lambda folder, names: names if Path(folder).name == "secrets" else [])
    for original in secret_files(k8s):
        target = copy / original.relative_to(k8s.resolve())
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(PLACEHOLDER)
    return copy


def render_overlay(overlay: Path) -> str:
    """``kubectl kustomize OVERLAY``: the overlay's manifests as one YAML stream.

    :raises DeployCheckError: kustomize refused it (the message is its error, on one line).
    """
    res = _run([tool("kubectl"), "kustomize", str(overlay)])
    if res.returncode != 0:
        raise DeployCheckError(f"kustomize {overlay.name}: {' '.join(_lines(res.stderr))}")
    return res.stdout


def validate_manifests(paths: list[Path]) -> list[str]:
    """Problems of Kubernetes manifests against the K8S_VERSION schemas, strict (an unknown field is an error); a
    kind without a schema (a typo in ``kind:``) is one too, though kubernetes-validate only warns about it."""
    res = _run([tool("kubernetes-validate"), "--strict", "--quiet", "-k", K8S_VERSION, *map(str, paths)])
    problems = [line for line in _lines(res.stdout + res.stderr) if line.startswith(("ERROR", "WARN", "CRITICAL"))]
    if res.returncode != 0 and not problems:
        problems = _lines(res.stdout + res.stderr)[-1:] or [f"kubernetes-validate exited {res.returncode}"]
    return problems


# --- policy scan -------------------------------------------------------------------------------------------------
def policy_scan(directory: Path) -> list[str]:
    """Problems checkov finds in the manifests and Dockerfiles under ``directory`` with deploy/checkov.yaml (its
    frameworks and its skip list, each skip with its reason), one line per failed check."""
    res = _run([tool("checkov"), "-d", str(directory), "--config-file", str(CHECKOV_CONFIG), "--output", "json"])
    try:
        reports = json.loads(res.stdout)
    except json.JSONDecodeError:
        if res.returncode == 0:
            return []
        raise DeployCheckError(f"checkov exited {res.returncode}: {' '.join(_lines(res.stderr)[-2:])}") from None
    problems = []
    for report in reports if isinstance(reports, list) else [reports]:
        for failed in (report.get("results") or {}).get("failed_checks") or []:
            where = Path(failed.get("file_path", "")).name
            problems.append(f"{failed['check_id']} {failed.get('check_name', '')} — {failed.get('resource', '')} "
                            f"({where}:{failed.get('file_line_range', ['?'])[0]})")
    if res.returncode != 0 and not problems:
        raise DeployCheckError(f"checkov exited {res.returncode}: {' '.join(_lines(res.stderr)[-2:])}")
    return problems


# --- everything ---------------------------------------------------------------------------------------------------
def check_all(workdir: Path, compose: Path = COMPOSE_FILE, k8s: Path = K8S) -> list[str]:
    """Every deploy check (on the real files by default); ``workdir`` receives the rendered manifests."""
    problems = validate_compose(compose)
    tree = k8s_tree(workdir, k8s)
    scan = Path(workdir) / "scan"
    scan.mkdir(exist_ok=True)
    shutil.copy(DEPLOY / "Dockerfile", scan / "Dockerfile")
    for overlay in OVERLAYS:
        rendered = scan / f"{overlay}.yaml"
        rendered.write_text(render_overlay(tree / "overlays" / overlay))
        problems += validate_manifests([rendered])
    return problems + policy_scan(scan)


def main(argv: list[str] | None = None) -> int:
    """``make deploy-check``: every check; one line, and exit code 2 on a failure."""
    import argparse

    parser = argparse.ArgumentParser(prog="make deploy-check", description=__doc__.splitlines()[0])
    parser.add_argument("--compose", type=Path, default=COMPOSE_FILE, help="compose file (default deploy/compose.yaml)")
    parser.add_argument("--k8s", type=Path, default=K8S, help="kustomize tree with overlays/ (default deploy/k8s)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="ecqa-deploy-check-") as tmp:
        try:
            problems = check_all(Path(tmp), args.compose, args.k8s)
        except DeployCheckError as exc:
            print(f"deploy check failed: {exc}", file=sys.stderr)
            return 2
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        print(f"deploy check failed: {problems[0]}{more}", file=sys.stderr)
        return 2
    print(f"deploy check passed: compose.yaml (profiles {', '.join(COMPOSE_PROFILES)}), overlays "
          f"{', '.join(OVERLAYS)} (Kubernetes {K8S_VERSION}, strict), checkov on the manifests and the Dockerfile")
    return 0


if __name__ == "__main__":
    sys.exit(main())
