"""The rendered manifests: strict Kubernetes 1.36 schemas, labels of the sets, least privilege, the config."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from gorkheavy.config import build

from tests.unit.ensemble.rendering import (
    OLLAMA_DIGEST,
    PYTHON_DIGEST,
    Obj,
    Rendered,
    example_roster,
    options_vars,
    render_command,
    run_ansible,
)

K8S_VERSION = "1.36.0"
MODELS = ["promptimizer", "llama", "qwen", "qwen-small", "judge"]


def test_every_rendered_object_validates_strictly_against_kubernetes_1_36(example: Rendered) -> None:
    assert len(example.objects) >= 20
    for (kind, name), obj in example.objects.items():
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.SchemaNotFoundError:  # pragma: no cover - would be a custom resource
            pytest.fail(f"{kind}/{name}: no 1.36 schema; custom resources need their CRD's schema")
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{kind}/{name}: {exc.message} at {'.'.join(map(str, exc.path))}")


def test_strict_validation_refuses_what_the_api_server_refuses(example: Rendered) -> None:
    # The validator is not a rubber stamp: an unknown field in the orchestrator's pod is refused.
    deployment = yaml.safe_load(yaml.safe_dump(example.get("Deployment", "orchestrator")))
    deployment["spec"]["template"]["spec"]["containers"][0]["bogusField"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="Additional properties"):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


def test_files_are_in_apply_order_with_k3s_addon_names(example: Rendered) -> None:
    assert list(example.files) == ["10-namespace.yaml", "20-models.yaml", "30-orchestrator.yaml"]
    assert example.files["10-namespace.yaml"][0]["kind"] == "Namespace"
    assert not list(example.directory.glob("*-secrets.yaml")), "no Secret without a vault value"
    assert next(p.name for p in (example.directory / "artifacts").iterdir()).startswith("orchestrator-")


def test_every_object_carries_its_set_labels(example: Rendered) -> None:
    sets = {
        "10-namespace.yaml": "gorkheavy-namespace",
        "20-models.yaml": "gorkheavy-models",
        "30-orchestrator.yaml": "gorkheavy-orchestrator",
    }
    for filename, docs in example.files.items():
        for doc in docs:
            labels = doc["metadata"]["labels"]
            assert labels["app.kubernetes.io/managed-by"] == "gorkheavy-lite"
            assert labels["gorkheavy.lite/set"] == sets[filename]
            if doc["kind"] != "Namespace":
                assert doc["metadata"]["namespace"] == "gorkheavy"


def test_one_volume_service_and_deployment_per_model(example: Rendered) -> None:
    for entry in example_roster():
        name = entry["name"]
        service = example.get("Service", name)
        assert service["spec"]["type"] == "ClusterIP"
        assert service["spec"]["ports"] == [
            {"name": "http", "port": 11434, "targetPort": "http", "protocol": "TCP"}
        ]
        pvc = example.get("PersistentVolumeClaim", f"{name}-store")
        assert pvc["spec"]["storageClassName"] == "local-path"
        deployment = example.get("Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        assert pod["volumes"][0] == {"name": "store", "persistentVolumeClaim": {"claimName": f"{name}-store"}}
        (server,) = pod["containers"]
        assert server["image"] == "docker.io/ollama/ollama:0.33.3"
        env = {e["name"]: e.get("value") for e in server["env"]}
        assert env["GORKHEAVY_MODEL"] == entry["model"]
        assert env["OLLAMA_KEEP_ALIVE"] == "30m"
        assert env["HOME"] == "/var/lib/ollama"
        # Pulled before ready, in an init container whose log kubectl shows; no postStart hook.
        assert [c["name"] for c in pod["initContainers"]] == ["pull"]
        assert "lifecycle" not in server
        assert "ollama pull" in pod["initContainers"][0]["args"][0]
        # Ready means the model is in the store and the server answers, not that the port is open.
        assert "ollama show" in " ".join(server["readinessProbe"]["exec"]["command"])
        # Service selects exactly this model's pods.
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert all(labels[k] == v for k, v in service["spec"]["selector"].items())
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}


@pytest.mark.parametrize(
    ("name", "requests", "limits"),
    [
        ("promptimizer", {"cpu": "300m", "memory": "512Mi"}, {"cpu": "800m", "memory": "1536Mi"}),
        ("llama", {"cpu": "400m", "memory": "1Gi"}, {"cpu": "900m", "memory": "2Gi"}),
        ("qwen", {"cpu": "400m", "memory": "1Gi"}, {"cpu": "900m", "memory": "2Gi"}),
        ("qwen-small", {"cpu": "250m", "memory": "512Mi"}, {"cpu": "600m", "memory": "1536Mi"}),
        ("judge", {"cpu": "400m", "memory": "1Gi"}, {"cpu": "900m", "memory": "2Gi"}),
    ],
)
def test_the_design_documents_requests_and_limits(
    example: Rendered, name: str, requests: Obj, limits: Obj
) -> None:
    server = example.get("Deployment", name)["spec"]["template"]["spec"]["containers"][0]
    assert server["resources"] == {"requests": requests, "limits": limits}


def _all_containers(pod: Obj) -> list[Obj]:
    return list(pod.get("initContainers") or []) + list(pod["containers"])


def test_least_privilege_in_every_pod(example: Rendered) -> None:
    for deployment in example.of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        name = deployment["metadata"]["name"]
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] != 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for container in _all_containers(pod):
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert sc["capabilities"] == {"drop": ["ALL"]}, (name, container["name"])
            assert sc["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert ":" in container["image"].rsplit("/", 1)[-1], "images are pinned by tag"
            assert not container["image"].endswith(":latest")


def test_gpu_is_off_by_default_and_a_switch_per_model(example: Rendered, options: Rendered) -> None:
    for deployment in example.of_kind("Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert "runtimeClassName" not in pod
        assert all("nvidia.com/gpu" not in c["resources"].get("limits", {}) for c in pod["containers"])
    gpu = options
    pod = gpu.get("Deployment", "llama")["spec"]["template"]["spec"]
    assert pod["runtimeClassName"] == "nvidia"
    assert pod["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "runtimeClassName" not in gpu.get("Deployment", "qwen")["spec"]["template"]["spec"]


def test_the_orchestrators_config_is_valid_for_the_app_and_matches_the_roster(example: Rendered) -> None:
    text = example.get("ConfigMap", "orchestrator-config")["data"]["config.yml"]
    config = build(yaml.safe_load(text), "orchestrator-config")
    assert config.warnings == ()
    roster = config.pipeline.roster
    assert roster.judge.name == "judge"
    assert roster.promptimizer is not None
    assert roster.promptimizer.base_url == "http://promptimizer:11434"
    assert [e.name for e in roster.experts] == ["llama", "qwen", "qwen-small"]
    assert [e.optimized_query for e in roster.experts] == [False, False, True]
    assert config.memory.store == "sqlite"
    assert config.memory.path == "/var/lib/gorkheavy/memory.db"
    assert config.server.port == 8080


def test_the_orchestrator_runs_serve_from_the_artifact_with_health_probes(example: Rendered) -> None:
    deployment = example.get("Deployment", "orchestrator")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    pod = deployment["spec"]["template"]["spec"]
    assert [c["name"] for c in pod["initContainers"]] == ["install", "wait-for-models"]
    assert "gorkheavy doctor" in pod["initContainers"][1]["args"][0]
    (server,) = pod["containers"]
    assert server["command"] == ["/opt/gorkheavy/bin/gorkheavy", "serve"]
    assert server["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert server["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    env = {e["name"]: e.get("value") for e in server["env"]}
    assert env["PATH"].startswith("/opt/gorkheavy/bin:"), (
        "kubectl exec ... -- gorkheavy chat finds the command"
    )
    assert env["GORKHEAVY_CONFIG"] == "/etc/gorkheavy/config.yml"
    volumes = {v["name"]: v for v in pod["volumes"]}
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert volumes["wheelhouse"]["hostPath"] == {
        "path": f"/var/lib/gorkheavy/artifacts/{annotations['gorkheavy.lite/artifact']}",
        "type": "Directory",
    }
    assert volumes["state"] == {
        "name": "state",
        "persistentVolumeClaim": {"claimName": "orchestrator-memory"},
    }
    service = example.get("Service", "orchestrator")
    assert service["spec"]["ports"][0]["port"] == 8080
    assert ("Ingress", "orchestrator") not in example.objects


def test_secrets_ingress_and_postgresql_from_the_vault(options: Rendered) -> None:
    result = options
    secrets_file = result.directory / "30-orchestrator-secrets.yaml"
    assert secrets_file.stat().st_mode & 0o777 == 0o600
    main_text = (result.directory / "30-orchestrator.yaml").read_text(encoding="utf-8")
    assert "s3cr3t-token" not in main_text
    assert "czNjcjN0LXRva2Vu" not in main_text
    assert {n for (k, n) in result.objects if k == "Secret"} == {
        "orchestrator-api",
        "orchestrator-memory",
        "orchestrator-tls",
    }
    for obj in result.objects.values():
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
    pod = result.get("Deployment", "orchestrator")["spec"]["template"]["spec"]
    env = {e["name"]: e for e in pod["containers"][0]["env"]}
    assert env["GORKHEAVY_API_TOKEN"]["valueFrom"]["secretKeyRef"] == {
        "name": "orchestrator-api",
        "key": "token",
    }
    assert env["GORKHEAVY_MEMORY_DSN"]["valueFrom"]["secretKeyRef"] == {
        "name": "orchestrator-memory",
        "key": "dsn",
    }
    assert ("PersistentVolumeClaim", "orchestrator-memory") not in result.objects
    assert pod["initContainers"][0]["env"][2] == {"name": "GORKHEAVY_EXTRAS", "value": "postgres"}
    ingress = result.get("Ingress", "orchestrator")
    assert ingress["spec"]["ingressClassName"] == "traefik"
    assert ingress["spec"]["tls"] == [{"secretName": "orchestrator-tls", "hosts": ["ensemble.lan"]}]
    config = build(yaml.safe_load(result.get("ConfigMap", "orchestrator-config")["data"]["config.yml"]), "cm")
    assert config.memory.store == "postgresql"
    assert config.memory.dsn is None, "the DSN comes from the Secret, not the ConfigMap"


@pytest.mark.parametrize("missing", ["gorkheavy_api_token", "gorkheavy_ingress_tls_cert"])
def test_an_ingress_without_tls_or_bearer_token_is_refused(
    tmp_path: Path, artifact_cache: Path, missing: str
) -> None:
    wanted = {**options_vars(), missing: ""}
    if missing == "gorkheavy_ingress_tls_cert":
        wanted["gorkheavy_ingress_tls_key"] = ""
    result = run_ansible(render_command(tmp_path / "out", artifact_cache, wanted))
    assert result.returncode == 2, result.stdout[-3000:]
    assert "orchestrator_ingress_enabled puts the API on the network beyond the cluster" in result.stdout
    assert "s3cr3t-token" not in result.stdout
    assert not list((tmp_path / "out").glob("*orchestrator*"))


def test_images_pinned_by_digest_and_the_keep_alive_reach_every_pod(options: Rendered) -> None:
    for model in MODELS:
        pod = options.objects[("Deployment", model)]["spec"]["template"]["spec"]
        for container in [*pod["initContainers"], *pod["containers"]]:
            assert container["image"] == f"docker.io/ollama/ollama:0.33.3@{OLLAMA_DIGEST}"
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        assert env["OLLAMA_KEEP_ALIVE"] == "1h"
    orchestrator = options.objects[("Deployment", "orchestrator")]["spec"]["template"]["spec"]
    images = {c["image"] for c in [*orchestrator.get("initContainers", []), *orchestrator["containers"]]}
    assert all(image.endswith(f"@{PYTHON_DIGEST}") for image in images), images
    config = yaml.safe_load(options.objects[("ConfigMap", "orchestrator-config")]["data"]["config.yml"])
    assert config["keep_alive"] == "1h"  # what the orchestrator sends with each call


def test_sqlite_memory_with_more_than_one_replica_is_refused(tmp_path: Path, artifact_cache: Path) -> None:
    result = run_ansible(render_command(tmp_path / "out", artifact_cache, {"orchestrator_replicas": 2}))
    assert result.returncode == 2, result.stdout[-3000:]
    assert "SQLite memory allows one replica only (orchestrator_replicas is 2)" in result.stdout
