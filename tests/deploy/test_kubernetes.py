"""The Kubernetes manifests in deploy/kubernetes/, checked offline (there is no cluster here).

Each manifest is validated against the Kubernetes API's own schemas in strict mode (unknown
fields fail) with the schemas the ``kubernetes-validate`` package ships, for the Kubernetes
version pinned below. The kustomization must list exactly the folder's manifests; where
``kubectl`` is installed its built-in kustomize builds the kustomization and the result is
validated too. Then the promises of docs/deployment.md are checked on the parsed manifests:
probes, non-root, read-only root filesystem, resources, read-only models, matching selectors.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

FOLDER = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.33"  # the oldest API the manifests are meant for (preStop sleep: 1.30)
IMAGE_UID = 10001  # the Dockerfile's USER

Manifest = dict[str, Any]


def load(path: Path) -> list[Manifest]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def kustomization() -> Manifest:
    (doc,) = load(FOLDER / "kustomization.yaml")
    return doc


def manifests() -> dict[str, Manifest]:
    """kind -> the one manifest of that kind, from the files the kustomization lists."""
    found: dict[str, Manifest] = {}
    for name in kustomization()["resources"]:
        for doc in load(FOLDER / name):
            assert doc["kind"] not in found, f"two manifests of kind {doc['kind']}"
            found[doc["kind"]] = doc
    return found


def test_kustomization_lists_every_manifest_of_the_folder() -> None:
    listed = kustomization()["resources"]
    on_disk = sorted(p.name for p in FOLDER.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(listed) == on_disk
    assert len(set(listed)) == len(listed)


@pytest.mark.parametrize(
    "name", sorted(p.name for p in FOLDER.glob("*.yaml") if p.name != "kustomization.yaml")
)
def test_manifest_is_valid_against_the_kubernetes_schema(name: str) -> None:
    docs = load(FOLDER / name)
    assert docs, f"{name} holds no manifest"
    for doc in docs:
        version = kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        assert version == KUBERNETES_VERSION


def test_the_validator_refuses_a_wrong_field() -> None:
    """The schemas are really applied: an unknown field and a wrong type both fail."""
    deployment = manifests()["Deployment"]
    typo = {**deployment, "spec": {**deployment["spec"], "replica": 3}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, KUBERNETES_VERSION, strict=True)
    wrong_type = {**deployment, "spec": {**deployment["spec"], "replicas": "three"}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong_type, KUBERNETES_VERSION, strict=True)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl (kustomize) not installed")
def test_kustomize_build_is_valid() -> None:
    built = subprocess.run(
        ["kubectl", "kustomize", str(FOLDER)], capture_output=True, text=True, timeout=60
    )
    assert built.returncode == 0, built.stderr
    docs = [doc for doc in yaml.safe_load_all(built.stdout) if doc]
    assert sorted(doc["kind"] for doc in docs) == sorted(manifests())
    for doc in docs:
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def pod_template() -> Manifest:
    return manifests()["Deployment"]["spec"]["template"]


def server_container() -> Manifest:
    (container,) = pod_template()["spec"]["containers"]
    return container


def test_probes_ready_for_traffic_health_for_liveness() -> None:
    container = server_container()
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["CHARLM_PORT"]) == ports["http"]


def test_non_root_read_only_no_privileges() -> None:
    pod = pod_template()["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    security = server_container()["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_resources_have_requests_and_limits() -> None:
    resources = server_container()["resources"]
    for key in ("cpu", "memory"):
        assert key in resources["requests"] and key in resources["limits"]


def test_models_read_only_and_tmp_in_memory() -> None:
    pod = pod_template()["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in server_container()["volumeMounts"]}
    models = mounts["/models"]
    assert models["readOnly"] is True
    source = volumes[models["name"]]["persistentVolumeClaim"]
    assert source["readOnly"] is True
    claim = manifests()["PersistentVolumeClaim"]
    assert source["claimName"] == claim["metadata"]["name"]
    assert claim["spec"]["accessModes"] == ["ReadOnlyMany"]
    tmp = volumes[mounts["/tmp"]["name"]]["emptyDir"]
    assert tmp["medium"] == "Memory" and "sizeLimit" in tmp


def test_selectors_match_the_pods() -> None:
    found = manifests()
    labels = pod_template()["metadata"]["labels"]
    deployment = found["Deployment"]
    for selector in (
        deployment["spec"]["selector"]["matchLabels"],
        found["Service"]["spec"]["selector"],
        found["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"],
    ):
        assert selector.items() <= labels.items()
    target = found["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert found["Service"]["spec"]["ports"][0]["targetPort"] == "http"


def test_rollout_and_disruptions_keep_replicas_serving() -> None:
    found = manifests()
    rolling = found["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert rolling["maxUnavailable"] == 0
    hpa = found["HorizontalPodAutoscaler"]["spec"]
    assert found["PodDisruptionBudget"]["spec"]["maxUnavailable"] < hpa["minReplicas"]
    # SIGTERM comes after the preStop pause; the grace period covers both and the drain
    pod = pod_template()["spec"]
    env = {e["name"]: e["value"] for e in server_container()["env"]}
    pause = server_container()["lifecycle"]["preStop"]["sleep"]["seconds"]
    assert pod["terminationGracePeriodSeconds"] > pause + float(env["CHARLM_SHUTDOWN_GRACE_S"])
