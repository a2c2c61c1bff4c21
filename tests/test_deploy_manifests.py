"""deploy/kubernetes and deploy/systemd, checked offline.

Kubernetes: each kustomization (base, overlays) is rendered by a small stand-in for kustomize
(resources, images, components, strategic merge of containers/env by name), and every resource is
validated strictly with kubernetes-validate against pinned Kubernetes versions; then the pieces
must agree with each other and with the image (ports, probes, labels, drain vs grace period,
non-root user of the Containerfile, the metric the HPA scales on). systemd: the unit parses
(``systemd-analyze verify``) and scores at most 2.0 on ``systemd-analyze security`` when systemd's
analyzer is installed.
"""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml")
kubernetes_validate = pytest.importorskip("kubernetes_validate")

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "kubernetes"
VERSIONS = ("1.30.0", "1.37.0")  # the oldest and newest minor this suite promises


def _merge(base, patch):
    """Strategic merge as kubectl does it for these fields: dicts deep, lists of named dicts by name."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            out[key] = _merge(base[key], value) if key in base else copy.deepcopy(value)
        return out
    if isinstance(base, list) and isinstance(patch, list) and all(isinstance(i, dict) and "name" in i for i in base + patch):
        out = [copy.deepcopy(i) for i in base]
        for item in patch:
            match = [n for n, i in enumerate(out) if i["name"] == item["name"]]
            if match:
                out[match[0]] = _merge(out[match[0]], item)
            else:
                out.append(copy.deepcopy(item))
        return out
    return copy.deepcopy(patch)


def render(directory: Path) -> list[dict]:
    """The resources ``kubectl apply -k directory`` would create (for what these files use)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    docs: list[dict] = []
    for entry in kustomization.get("resources", []) + kustomization.get("components", []):
        path = (directory / entry).resolve()
        docs += render(path) if path.is_dir() else list(yaml.safe_load_all(path.read_text()))
    for patch in kustomization.get("patches", []):
        body = yaml.safe_load((directory / patch["path"]).read_text())
        docs = [_merge(d, body) if (d["kind"], d["metadata"]["name"]) == (body["kind"], body["metadata"]["name"]) else d for d in docs]
    for image in kustomization.get("images", []):
        for doc in docs:
            for container in doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", []):
                if container["image"].split(":")[0] in (image["name"], image.get("newName")):
                    container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for pairs in kustomization.get("labels", []):
        for doc in docs:
            doc["metadata"].setdefault("labels", {}).update(pairs["pairs"])
    return docs


KUSTOMIZATIONS = sorted(p.parent for p in K8S.rglob("kustomization.yaml") if "kind: Component" not in p.read_text())


def _one(docs, kind):
    [doc] = [d for d in docs if d["kind"] == kind]
    return doc


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.relative_to(K8S).as_posix())
def test_every_resource_validates(directory, version):
    docs = render(directory)
    assert {d["kind"] for d in docs} >= {"Deployment", "Service", "PodDisruptionBudget", "PersistentVolumeClaim"}
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_validation_can_fail():
    deployment = _one(render(K8S / "base"), "Deployment")
    bad = copy.deepcopy(deployment)
    bad["spec"]["template"]["spec"]["containers"][0]["startupProbe"]["grpc"]["port"] = "grpc"  # must be an integer
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, VERSIONS[0], strict=True)
    typo = copy.deepcopy(deployment)
    typo["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(typo, VERSIONS[0], strict=True)


def test_every_manifest_file_is_used():
    listed = set()
    for kustomization in K8S.rglob("kustomization.yaml"):
        data = yaml.safe_load(kustomization.read_text())
        listed |= {(kustomization.parent / r).resolve() for r in data.get("resources", []) if (kustomization.parent / r).is_file()}
        listed |= {(kustomization.parent / p["path"]).resolve() for p in data.get("patches", [])}
    files = {p.resolve() for p in K8S.rglob("*.yaml") if p.name != "kustomization.yaml"}
    assert files == listed


@pytest.mark.parametrize("directory", KUSTOMIZATIONS, ids=lambda p: p.relative_to(K8S).as_posix())
def test_pieces_agree(directory):
    docs = render(directory)
    deployment, service, pdb = _one(docs, "Deployment"), _one(docs, "Service"), _one(docs, "PodDisruptionBudget")
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    labels = pod["metadata"]["labels"]
    for selector in (deployment["spec"]["selector"]["matchLabels"], service["spec"]["selector"], pdb["spec"]["selector"]["matchLabels"]):
        assert selector.items() <= labels.items()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    env = {e["name"]: e["value"] for e in container["env"]}
    assert ports == {"grpc": int(env["GUARDEDGE_PORT"]), "metrics": int(env["GUARDEDGE_METRICS_PORT"])}
    assert service["spec"]["clusterIP"] == "None"  # headless: clients balance per request
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    for probe in ("startupProbe", "readinessProbe"):
        assert container[probe]["grpc"] == {"port": ports["grpc"], "service": "guardedge.v1.GuardService"}
    assert container["startupProbe"]["periodSeconds"] * container["startupProbe"]["failureThreshold"] >= 300
    assert pod["spec"]["terminationGracePeriodSeconds"] >= float(env["GUARDEDGE_GRACE_SECONDS"]) + 10
    assert "--host" in container["args"] and container["args"][container["args"].index("--host") + 1] == "0.0.0.0"
    security, pod_security = container["securityContext"], pod["spec"]["securityContext"]
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"] and pod_security["runAsNonRoot"] is True
    user = re.search(r"^USER (\d+):(\d+)$", (ROOT / "deploy/container/Containerfile").read_text(), re.M)
    assert (pod_security["runAsUser"], pod_security["runAsGroup"]) == (int(user[1]), int(user[2]))
    mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
    assert mounts["/models"]["readOnly"] is True and "/tmp" in mounts  # a read-only root needs a writable /tmp
    resources = container["resources"]
    assert {"cpu", "memory"} <= resources["requests"].keys() and {"cpu", "memory"} <= resources["limits"].keys()
    assert pdb["spec"]["minAvailable"] < deployment["spec"]["replicas"]
    assert container["image"].startswith("registry.internal/guardedge:0.1.0-")


def test_gpu_overlay_asks_for_a_gpu_and_the_cuda_image():
    container = _one(render(K8S / "overlays/gpu"), "Deployment")["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1" and container["image"].endswith("-cuda")
    assert {"name": "GUARDEDGE_DEVICE", "value": "cuda"} in container["env"]
    assert {"name": "GUARDEDGE_PORT", "value": "50051"} in container["env"]  # merged, not replaced


def test_hpa_scales_the_deployment_on_a_metric_the_server_exports():
    docs = render(K8S / "overlays/cpu-hpa")
    hpa, deployment = _one(docs, "HorizontalPodAutoscaler"), _one(docs, "Deployment")
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] in (ROOT / "runtime/service/metrics.py").read_text()
    assert hpa["spec"]["minReplicas"] >= 2


UNIT = ROOT / "deploy" / "systemd" / "guardedge.service"


def test_systemd_unit_runs_as_its_own_user_and_drains():
    text = UNIT.read_text()
    assert "User=guardedge" in text and "u guardedge " in (UNIT.parent / "guardedge.sysusers.conf").read_text()
    assert "d /etc/guardedge 0750 root guardedge" in (UNIT.parent / "guardedge.tmpfiles.conf").read_text()
    stop = int(re.search(r"^TimeoutStopSec=(\d+)", text, re.M)[1])
    assert stop > 30 and "RestartPreventExitStatus=2" in text


def _analyzable(tmp_path) -> Path:
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    unit = tmp_path / "guardedge.service"  # the ExecStart binary must exist for verify
    unit.write_text(UNIT.read_text().replace("/opt/guardedge/venv/bin/guardedge", "/bin/true"))
    return unit


def test_systemd_unit_parses(tmp_path):
    unit = _analyzable(tmp_path)
    out = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == "", out.stderr


def test_systemd_unit_is_hardened(tmp_path):
    unit = _analyzable(tmp_path)
    out = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit)], capture_output=True, text=True, timeout=60)
    score = float(re.search(r"Overall exposure level for guardedge.service: ([\d.]+)", out.stdout)[1])
    assert score <= 2.0, out.stdout


def test_python_client_balances_over_the_headless_service():
    from guardedge.runtime.service.client import channel_options

    assert ("grpc.lb_policy_name", "round_robin") in channel_options()
    assert ("grpc.lb_policy_name", "round_robin") in channel_options(attempts=1)
