"""deploy/: the Dockerfile passes hadolint, compose.yaml passes `docker-compose config`, the Kubernetes
manifests pass the Kubernetes schemas, and the settings they set are real ``Settings`` fields.

Each linter is also fed a broken copy, so a linter that silently accepts everything would fail here.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from lookalike.settings import Settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
K8S = sorted((DEPLOY / "k8s").glob("*.yaml"))
K8S_VERSION = "1.37.0"


def _tool(name: str) -> str:
    """A linter installed by the `deploy` extra: in the venv's bin folder, else on PATH, else skip."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} is not installed: pip install -e .[deploy]")
    return found


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _settings_keys(env: dict[str, Any]) -> set[str]:
    fields = {f"LOOKALIKE_{name.upper()}" for name in Settings.model_fields}
    return {k for k in env if k.startswith("LOOKALIKE_") and k not in fields}


# ---- Dockerfile -------------------------------------------------------------------------------------------
def test_dockerfile_passes_hadolint() -> None:
    r = _run(_tool("hadolint"), "--no-color", str(DEPLOY / "Dockerfile"))
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN apt-get install curl\nRUN cd /src && pip install flask\n")
    r = _run(_tool("hadolint"), "--no-color", str(bad))
    assert r.returncode != 0 and "DL3007" in r.stdout and "DL3013" in r.stdout


def test_dockerfile_is_multi_stage_non_root_with_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = [ln for ln in text.splitlines() if ln.startswith("FROM ")]
    assert len(stages) == 2 and "COPY --from=build /opt/venv /opt/venv" in text
    user = [ln.split()[1] for ln in text.splitlines() if ln.startswith("USER ")]
    assert user and not user[-1].startswith(("root", "0"))
    assert "HEALTHCHECK" in text and "/health" in text and 'VOLUME ["/data"]' in text
    assert "download.pytorch.org/whl/cpu" in text


# ---- compose ----------------------------------------------------------------------------------------------
def test_compose_config_is_valid_with_every_profile() -> None:
    compose = _tool("docker-compose")
    r = _run(compose, "-f", str(DEPLOY / "compose.yaml"), "--profile", "milvus", "--profile", "build",
             "config", "--services")
    assert r.returncode == 0, r.stderr
    assert set(r.stdout.split()) == {"api", "build", "db", "etcd", "minio", "milvus"}
    # without a profile only the API and its database start
    r = _run(compose, "-f", str(DEPLOY / "compose.yaml"), "config", "--services")
    assert set(r.stdout.split()) == {"api", "db"}, r.stderr


def test_compose_config_rejects_an_unknown_key(tmp_path: Path) -> None:
    spec = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    spec["services"]["api"]["helthcheck"] = {"test": ["CMD", "true"]}
    bad = tmp_path / "compose.yaml"
    bad.write_text(yaml.safe_dump(spec))
    r = _run(_tool("docker-compose"), "-f", str(bad), "config", "--quiet")
    assert r.returncode != 0 and "helthcheck" in r.stderr


def test_compose_wires_the_api_to_pgvector() -> None:
    spec = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    api, db = spec["services"]["api"], spec["services"]["db"]
    assert "pgvector" in db["image"] and api["depends_on"]["db"]["condition"] == "service_healthy"
    assert api["environment"]["LOOKALIKE_STORE_URL"].startswith("postgresql://")
    assert spec["services"]["milvus"]["profiles"] == ["milvus"]
    assert not _settings_keys(api["environment"])


# ---- Kubernetes -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", K8S, ids=lambda p: p.name)
def test_manifest_passes_the_kubernetes_schema(path: Path) -> None:
    r = _run(_tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, str(path))
    assert r.returncode == 0, r.stdout + r.stderr


def test_kubernetes_validate_catches_a_bad_manifest(tmp_path: Path) -> None:
    dep = _docs(DEPLOY / "k8s" / "deployment.yaml")[0]
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/health"
    bad = tmp_path / "deployment.yaml"
    bad.write_text(yaml.safe_dump(dep))
    r = _run(_tool("kubernetes-validate"), "--strict", "-k", K8S_VERSION, str(bad))
    assert r.returncode != 0 and "pathh" in r.stdout + r.stderr


def test_manifests_cover_the_deployment_shape() -> None:
    kinds: dict[str, dict[str, Any]] = {}
    for path in K8S:
        for doc in _docs(path):
            kinds.setdefault(doc["kind"], doc)
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap", "Secret", "Job"} <= set(kinds)
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    api = pod["containers"][0]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert api[probe]["httpGet"]["path"] == "/health"
    assert {"cpu", "memory"} <= set(api["resources"]["requests"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert kinds["Service"]["spec"]["type"] == "LoadBalancer"
    assert kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]
    job = kinds["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert job["args"][0] == "build"
    assert not _settings_keys(kinds["ConfigMap"]["data"]) and not _settings_keys(kinds["Secret"]["stringData"])
