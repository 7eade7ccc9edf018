"""The Kubernetes manifests validate against the Kubernetes schemas and match the runtime's thread settings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

kubernetes_validate = pytest.importorskip("kubernetes_validate")

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
K8S_VERSION = "1.33"


def _documents() -> list[dict]:
    return [doc for path in sorted(K8S.glob("*.yaml")) for doc in yaml.safe_load_all(path.read_text()) if doc]


def test_every_manifest_validates_strictly() -> None:
    kinds = set()
    for doc in _documents():
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        kinds.add(doc["kind"])
    assert kinds == {"Deployment", "Service", "HorizontalPodAutoscaler"}


def test_a_misspelt_field_is_caught() -> None:
    deployment = next(doc for doc in _documents() if doc["kind"] == "Deployment")
    deployment["spec"]["replicaz"] = 2
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_probes_threads_and_resources_agree() -> None:
    deployment = next(doc for doc in _documents() if doc["kind"] == "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    env = {item["name"]: item["value"] for item in container["env"]}
    assert all(name.startswith("TEXTCLF_") for name in env)
    threads = int(env["TEXTCLF_INTRA_OP_THREADS"]) * int(env["TEXTCLF_WORKERS"])
    assert int(container["resources"]["limits"]["cpu"]) == threads == int(container["resources"]["requests"]["cpu"])
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    # Every TEXTCLF_ variable names a real serve setting.
    from textclf.config import load_config

    load_config(environ=env)
