"""Who may reach whom: the rendered NetworkPolicies evaluated against the rendered pods' labels."""

from __future__ import annotations

import pytest
from gorkheavy_lab.k3s.controllers.netpol import Endpoint, connection_allowed

from tests.unit.ensemble.rendering import Obj, Rendered

NAMESPACES = {
    "gorkheavy": {"app.kubernetes.io/part-of": "gorkheavy"},
    "kube-system": {},
    "default": {},
    "apps": {},
}
MODELS = ["promptimizer", "llama", "qwen", "qwen-small", "judge"]


def _pod(rendered: Rendered, name: str, ip: str) -> Endpoint:
    labels = rendered.get("Deployment", name)["spec"]["template"]["metadata"]["labels"]
    return Endpoint(name, ip, "gorkheavy", labels)


@pytest.fixture(scope="module")
def world(example: Rendered) -> dict[str, Endpoint]:
    pods = {name: _pod(example, name, f"10.42.1.{i + 10}") for i, name in enumerate(MODELS)}
    pods["orchestrator"] = _pod(example, "orchestrator", "10.42.0.20")
    pods["coredns"] = Endpoint("coredns", "10.42.0.3", "kube-system", {"k8s-app": "kube-dns"})
    pods["traefik"] = Endpoint("traefik", "10.42.0.4", "kube-system", {"app.kubernetes.io/name": "traefik"})
    pods["client"] = Endpoint("client", "10.42.2.7", "apps", {"gorkheavy.lite/client": "true"})
    pods["stranger"] = Endpoint("stranger", "10.42.2.8", "apps", {"app": "web"})
    pods["neighbour"] = Endpoint("neighbour", "10.42.1.99", "gorkheavy", {"app": "debug"})
    pods["registry"] = Endpoint("registry.ollama.ai", "104.21.75.227")
    pods["node-port"] = Endpoint("kubernetes", "10.43.0.1")
    return pods


def _policies(rendered: Rendered) -> list[Obj]:
    return rendered.of_kind("NetworkPolicy")


def _allowed(
    rendered: Rendered, world: dict[str, Endpoint], src: str, dst: str, port: int, *, proto: str = "TCP"
) -> bool:
    return connection_allowed(
        _policies(rendered), world[src], world[dst], port, protocol=proto, namespaces=NAMESPACES
    )


def test_the_namespace_denies_everything_by_default(example: Rendered) -> None:
    deny = example.get("NetworkPolicy", "default-deny")
    assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


@pytest.mark.parametrize("model", MODELS)
def test_only_the_orchestrator_reaches_a_model_on_11434(
    example: Rendered, world: dict[str, Endpoint], model: str
) -> None:
    assert _allowed(example, world, "orchestrator", model, 11434)
    assert not _allowed(example, world, "orchestrator", model, 22)
    for other in MODELS:
        if other != model:
            assert not _allowed(example, world, other, model, 11434), f"{other} -> {model}"
    for stranger in ("client", "stranger", "neighbour", "traefik"):
        assert not _allowed(example, world, stranger, model, 11434), f"{stranger} -> {model}"


def test_the_orchestrator_reaches_dns_and_nothing_outside(
    example: Rendered, world: dict[str, Endpoint]
) -> None:
    assert _allowed(example, world, "orchestrator", "coredns", 53, proto="UDP")
    assert _allowed(example, world, "orchestrator", "coredns", 53, proto="TCP")
    assert not _allowed(example, world, "orchestrator", "registry", 443)
    assert not _allowed(example, world, "orchestrator", "node-port", 443)
    assert not _allowed(example, world, "orchestrator", "client", 8080)


def test_clients_reach_the_orchestrators_http_port_only(
    example: Rendered, world: dict[str, Endpoint]
) -> None:
    assert _allowed(example, world, "client", "orchestrator", 8080)
    assert not _allowed(example, world, "client", "orchestrator", 9090)
    assert not _allowed(example, world, "stranger", "orchestrator", 8080)
    assert not _allowed(example, world, "neighbour", "orchestrator", 8080)
    assert not _allowed(example, world, "traefik", "orchestrator", 8080), "no Ingress, no Traefik"
    for model in MODELS:
        assert not _allowed(example, world, model, "orchestrator", 8080)


def test_models_reach_dns_and_the_registry_for_the_pull_and_nothing_in_the_cluster(
    example: Rendered, world: dict[str, Endpoint]
) -> None:
    for model in MODELS:
        assert _allowed(example, world, model, "coredns", 53, proto="UDP")
        assert _allowed(example, world, model, "registry", 443)
        assert not _allowed(example, world, model, "registry", 80)
        assert not _allowed(example, world, model, "node-port", 443), "cluster networks are excluded"
        assert not _allowed(example, world, model, "client", 443)


def test_with_the_ingress_on_traefik_reaches_the_orchestrator(
    options: Rendered, world: dict[str, Endpoint]
) -> None:
    result = options
    assert _allowed(result, world, "traefik", "orchestrator", 8080)
    assert not _allowed(result, world, "traefik", "llama", 11434)
    assert not _allowed(result, world, "stranger", "orchestrator", 8080)


def test_the_evaluator_is_not_permissive_without_policies(world: dict[str, Endpoint]) -> None:
    # With no policy at all everything is open (Kubernetes' default), so the denials above come from the
    # policies.
    assert connection_allowed([], world["stranger"], world["llama"], 11434, namespaces=NAMESPACES)
