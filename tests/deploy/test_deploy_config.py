"""deploy/: the compose file, the kustomize overlays, the policy scan — each on the real files, and each shown to
report a broken one. The tools come from `make deploy-tools`; a missing one fails the test with that command."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy_helpers import (
    COMPOSE_FILE,
    DEPLOY,
    K8S,
    OVERLAYS,
    ToolMissing,
    compose_services,
    k8s_tree,
    policy_scan,
    render_overlay,
    validate_compose,
    validate_manifests,
)


def _need_tools(call, *args, **kwargs):
    """Run a check; a missing tool is a failure that says how to install it, never a skip."""
    try:
        return call(*args, **kwargs)
    except ToolMissing as exc:
        pytest.fail(str(exc))


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each overlay rendered once (placeholder secret files) into its own file."""
    work = tmp_path_factory.mktemp("k8s")
    tree = k8s_tree(work)
    out = {}
    for overlay in OVERLAYS:
        path = work / f"{overlay}.yaml"
        path.write_text(_need_tools(render_overlay, tree / "overlays" / overlay))
        out[overlay] = path
    return out


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _pod_specs(docs: list[dict]) -> dict[str, dict]:
    specs = {}
    for d in docs:
        if d["kind"] in ("Deployment", "StatefulSet", "Job"):
            specs[f"{d['kind']}/{d['metadata']['name']}"] = d["spec"]["template"]["spec"]
    return specs


# --- compose ------------------------------------------------------------------------------------------------------
def test_compose_file_is_valid_with_every_profile() -> None:
    assert _need_tools(validate_compose) == []


def test_compose_profiles_choose_the_backend() -> None:
    services = _need_tools(compose_services)
    by_profile = {p: {n for n, s in services.items() if p in s.get("profiles", [])} for p in ("cpu", "gpu")}
    assert {n for n, s in services.items() if not s.get("profiles")} == {
        "qdrant", "redis", "index", "edge-index", "edge-worker-0", "edge-worker-1", "ui"}
    assert by_profile == {"cpu": {"gateway-cpu"}, "gpu": {"gateway-gpu", "vllm"}}
    gpu = services["gateway-gpu"]
    assert gpu["command"][-2:] == ["--backend-url", "http://vllm:8000"]
    assert services["gateway-cpu"]["networks"]["default"]["aliases"] == gpu["networks"]["default"]["aliases"] == ["gateway"]


def test_compose_seeds_the_edge_index_from_the_central_build() -> None:
    """The central build writes a snapshot; edge-index pulls it into the UI's own Qdrant Edge index, the UI starts
    after that and reads that folder (the same volume, the same path), not the central server."""
    services = _need_tools(compose_services)
    build, pull, ui = services["index"]["command"], services["edge-index"]["command"], services["ui"]
    snapshot = build[build.index("--snapshot") + 1]
    assert pull[:3] == ["index", "pull", snapshot] and build[build.index("--collection") + 1] == "squad"
    assert services["edge-index"]["depends_on"]["index"]["condition"] == "service_completed_successfully"
    assert ui["depends_on"]["edge-index"]["condition"] == "service_completed_successfully"
    assert "ECQA_QDRANT_URL" not in ui["environment"] and ui["environment"]["ECQA_STORE"] == "edge"

    def volume_path(service: dict, setting: str) -> tuple[str, str]:  # (volume, path inside it)
        path = service["environment"][setting]
        for mount in service["volumes"]:
            source, target = (mount["source"], mount["target"]) if isinstance(mount, dict) else mount.split(":")[:2]
            if path.startswith(target.rstrip("/") + "/"):
                return source, path[len(target.rstrip("/")) + 1:]
        raise AssertionError(f"{path} is on no volume")

    assert volume_path(services["edge-index"], "ECQA_QDRANT_PATH") == volume_path(ui, "ECQA_QDRANT_PATH")


def test_compose_gives_each_service_only_its_secrets() -> None:
    services = compose_services()
    mounted = {name: {s["source"] for s in svc.get("secrets", [])} for name, svc in services.items()}
    keys = {"server.key", "aes.key"}
    assert {name for name, sources in mounted.items() if "server.key" in sources} == {"gateway-cpu", "gateway-gpu"}
    assert {name for name, sources in mounted.items() if keys & sources and name.startswith("edge-worker")} == set()
    assert mounted["edge-worker-0"] >= {"edge-worker-0.key"} and "edge-worker-1.key" not in mounted["edge-worker-0"]
    assert mounted["ui"] >= {"ui.pem", "ui.key", "aes.key"}
    # no service is handed the CA's key, and it is not even declared
    assert "ca.key" not in yaml.safe_load(COMPOSE_FILE.read_text())["secrets"]


@pytest.mark.parametrize(("edit", "expected"), [
    # a key compose does not know: docker-compose's schema
    (("    image: qdrant/qdrant:v1.19.1\n", "    image: qdrant/qdrant:v1.19.1\n    imagee: qdrant\n"), "imagee"),
    # a value of the wrong kind: the compose-spec parser (docker-compose 1.29 lets it through)
    (("    restart: unless-stopped\n    healthcheck:\n      # GET /readyz",
      "    restart: sometimes\n    healthcheck:\n      # GET /readyz"), "sometimes"),
    # a secret no one declared: the references check (neither parser looks)
    (("{source: ca.pem, target: ecqa/ca.pem}", "{source: ca-cert.pem, target: ecqa/ca.pem}"), "ca-cert.pem"),
    # a dependency on a service that does not exist
    (("      edge-worker-1:\n        condition", "      edge-worker-7:\n        condition"), "edge-worker-7"),
])
def test_a_broken_compose_file_is_reported(tmp_path: Path, edit: tuple[str, str], expected: str) -> None:
    text = COMPOSE_FILE.read_text()
    assert edit[0] in text  # the edit still applies to the real file
    broken = tmp_path / "compose.yaml"
    broken.write_text(text.replace(edit[0], edit[1], 1))
    problems = _need_tools(validate_compose, broken)
    assert len(problems) == 1 and expected in problems[0], problems


# --- kustomize + Kubernetes schemas -------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_overlay_renders_and_validates_strictly(rendered: dict[str, Path], overlay: str) -> None:
    assert _need_tools(validate_manifests, [rendered[overlay]]) == []
    docs = _docs(rendered[overlay])
    assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {"ecqa"}
    kinds = {f"{d['kind']}/{d['metadata']['name']}" for d in docs}
    assert {"StatefulSet/qdrant", "Deployment/redis", "Deployment/gateway", "StatefulSet/edge-worker",
            "HorizontalPodAutoscaler/edge-worker", "Deployment/ui", "Job/index",
            "NetworkPolicy/gateway-from-ui"} <= kinds
    assert ("Deployment/vllm" in kinds) == (overlay == "gpu")


def test_gpu_overlay_points_the_gateway_at_vllm(rendered: dict[str, Path]) -> None:
    gateway = _pod_specs(_docs(rendered["gpu"]))["Deployment/gateway"]["containers"][0]
    env = {e["name"]: e.get("value") for e in gateway["env"]}
    assert env["ECQA_CLOUD_BACKEND_URL"] == "http://vllm:8000"
    cpu = _pod_specs(_docs(rendered["cpu"]))["Deployment/gateway"]["containers"][0]
    assert "ECQA_CLOUD_BACKEND_URL" not in {e["name"] for e in cpu["env"]}


def test_only_the_ui_reaches_the_gateway(rendered: dict[str, Path]) -> None:
    policies = {d["metadata"]["name"]: d["spec"] for d in _docs(rendered["cpu"]) if d["kind"] == "NetworkPolicy"}
    assert policies["default-deny-ingress"] == {"podSelector": {}, "policyTypes": ["Ingress"]}
    to_gateway = [p for p in policies.values() if p["podSelector"].get("matchLabels", {}).get("app.kubernetes.io/name") == "gateway"]
    assert len(to_gateway) == 1
    sources = [src["podSelector"]["matchLabels"] for rule in to_gateway[0]["ingress"] for src in rule["from"]]
    assert sources == [{"app.kubernetes.io/name": "ui"}]


def test_the_autoscaler_stays_within_the_worker_certificates(rendered: dict[str, Path]) -> None:
    docs = _docs(rendered["cpu"])
    hpa = next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "edge-worker"}
    workers = _pod_specs(docs)["StatefulSet/edge-worker"]
    projected = next(v for v in workers["volumes"] if v["name"] == "secrets")["projected"]["sources"]
    certs = {i["path"] for s in projected for i in s["secret"].get("items", []) if i["path"].startswith("workers/")}
    assert certs == {f"workers/edge-worker-{n}.{ext}" for n in range(hpa["spec"]["maxReplicas"]) for ext in ("pem", "key")}


@pytest.mark.parametrize(("edit", "expected"), [
    (("  replicas: 1\n", "  replica: 1\n"), "'replica' was unexpected"),     # an unknown field (strict)
    (("containerPort: 8443", "containerPort: https"), "is not of type 'integer'"),  # a wrong type
    (("kind: HorizontalPodAutoscaler", "kind: HorizontalPodAutoScaler"), "HorizontalPodAutoScaler"),  # no such kind
])
def test_a_broken_manifest_is_reported(rendered: dict[str, Path], tmp_path: Path, edit: tuple[str, str],
                                       expected: str) -> None:
    text = rendered["cpu"].read_text()
    assert edit[0] in text
    broken = tmp_path / "broken.yaml"
    broken.write_text(text.replace(edit[0], edit[1], 1))
    problems = _need_tools(validate_manifests, [broken])
    assert len(problems) == 1 and expected in problems[0], problems


def test_a_secret_file_the_operator_did_not_supply_fails_the_render(tmp_path: Path) -> None:
    tree = k8s_tree(tmp_path)
    (tree / "base" / "secrets" / "aes.key").unlink()
    with pytest.raises(Exception, match="aes.key"):
        _need_tools(render_overlay, tree / "overlays" / "cpu")


# --- policy scan --------------------------------------------------------------------------------------------------
def test_policy_scan_passes_on_the_manifests_and_the_dockerfile(rendered: dict[str, Path], tmp_path: Path) -> None:
    for path in rendered.values():
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "Dockerfile").write_text((DEPLOY / "Dockerfile").read_text())
    assert _need_tools(policy_scan, tmp_path) == []


def test_policy_scan_reports_a_privileged_container_and_a_root_image(rendered: dict[str, Path], tmp_path: Path) -> None:
    text = rendered["cpu"].read_text().replace("allowPrivilegeEscalation: false", "privileged: true", 1)
    (tmp_path / "cpu.yaml").write_text(text)
    (tmp_path / "Dockerfile").write_text((DEPLOY / "Dockerfile").read_text().replace("USER 10001:10001\n", ""))
    problems = _need_tools(policy_scan, tmp_path)
    ids = {p.split()[0] for p in problems}
    assert "CKV_K8S_16" in ids  # privileged container
    assert "CKV_DOCKER_3" in ids  # no USER: the image runs as root
    assert all(i in {"CKV_K8S_16", "CKV_K8S_20", "CKV_DOCKER_3", "CKV_DOCKER_8"} for i in ids), problems


def test_every_skipped_check_says_why() -> None:
    lines = (DEPLOY / "checkov.yaml").read_text().splitlines()
    config = yaml.safe_load("\n".join(lines))
    assert config["skip-check"], "nothing skipped: drop this test"
    for check in config["skip-check"]:
        at = next(i for i, line in enumerate(lines) if line.strip() == f"- {check}")
        assert lines[at - 1].strip().startswith("#"), f"{check} is skipped without a reason above it"
    assert re.search(r"^skip-download: true$", "\n".join(lines), re.M)  # offline: nothing from Prisma Cloud


# --- make deploy-check ------------------------------------------------------------------------------------------
def _deploy_check(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(Path(__file__).with_name("deploy_helpers.py")), *args],
                          capture_output=True, text=True, timeout=300)


def test_deploy_check_passes_in_one_line() -> None:
    res = _deploy_check()
    if "make deploy-tools" in res.stderr:
        pytest.fail(res.stderr.strip())
    assert res.returncode == 0, res.stderr
    assert res.stdout.count("\n") == 1 and res.stdout.startswith("deploy check passed: compose.yaml")


def test_deploy_check_fails_on_a_broken_compose_file_with_exit_code_2(tmp_path: Path) -> None:
    broken = tmp_path / "compose.yaml"
    broken.write_text(COMPOSE_FILE.read_text().replace("restart: unless-stopped", "restart: sometimes", 1))
    res = _deploy_check("--compose", str(broken))
    assert res.returncode == 2, res.stderr
    assert res.stdout == "" and res.stderr.count("\n") == 1
    assert res.stderr.startswith("deploy check failed: compose.yaml: compose-spec:") and "sometimes" in res.stderr
