"""Placement by scheduling: the rendered pods placed on the design's three 4 CPU / 8 GiB nodes."""

from __future__ import annotations

import copy
from collections import Counter
from decimal import Decimal

import pytest
from gorkheavy_lab.k3s.controllers.scheduling import (
    Node,
    Pod,
    Unschedulable,
    pod_requests,
    pods_of,
    quantity,
    schedule,
)

from tests.unit.ensemble.rendering import Rendered

GIB = Decimal(2) ** 30
SERVER_TAINT = {"key": "node-role.kubernetes.io/control-plane", "effect": "NoSchedule"}


def design_nodes(agents: int = 2, cpu: str = "4", memory: str = "8Gi") -> list[Node]:
    """The design's VMs as the cluster stage leaves them: server labelled and tainted, agents labelled for
    models."""
    size = {"cpu": quantity(cpu), "memory": quantity(memory), "pods": Decimal(110)}
    nodes = [
        Node(
            "k3s-server",
            {
                "kubernetes.io/hostname": "k3s-server",
                "kubernetes.io/os": "linux",
                "node-role.kubernetes.io/control-plane": "true",
                "node-role.kubernetes.io/master": "true",
            },
            dict(size),
            taints=[dict(SERVER_TAINT)],
        )
    ]
    for i in range(1, agents + 1):
        name = f"k3s-agent-{i}"
        nodes.append(
            Node(
                name,
                {
                    "kubernetes.io/hostname": name,
                    "kubernetes.io/os": "linux",
                    "gorkheavy.lite/models": "true",
                },
                dict(size),
            )
        )
    return nodes


def k3s_system_pods() -> list[Pod]:
    """What K3s runs on its server before the ensemble arrives (CoreDNS and metrics-server requests)."""

    def system(name: str, cpu: str, memory: str) -> Pod:
        spec = {"containers": [{"name": name, "resources": {"requests": {"cpu": cpu, "memory": memory}}}]}
        return Pod(name, "kube-system", {"k8s-app": name}, spec, node="k3s-server")

    return [system("coredns", "100m", "70Mi"), system("metrics-server", "100m", "70Mi")]


def ensemble_pods(rendered: Rendered) -> list[Pod]:
    pods: list[Pod] = []
    # Models first, then the orchestrator, as the play applies them.
    for deployment in sorted(
        rendered.of_kind("Deployment"), key=lambda d: d["metadata"]["name"] == "orchestrator"
    ):
        pods.extend(pods_of(copy.deepcopy(deployment)))
    return pods


def test_every_model_lands_on_an_agent_spread_and_the_orchestrator_on_the_server(example: Rendered) -> None:
    nodes = design_nodes()
    placed = schedule(ensemble_pods(example), nodes, placed=k3s_system_pods())
    where = {p.name.rsplit("-", 1)[0]: p.node for p in placed if p.namespace == "gorkheavy"}
    assert where.pop("orchestrator") == "k3s-server"
    assert set(where) == {"promptimizer", "llama", "qwen", "qwen-small", "judge"}
    assert all(node and node.startswith("k3s-agent-") for node in where.values()), where
    per_agent = Counter(where.values())
    assert sorted(per_agent.values()) == [2, 3], f"spread with max skew 1 over two agents: {per_agent}"


def test_the_whole_ensemble_fits_with_room_to_spare(example: Rendered) -> None:
    nodes = design_nodes()
    placed = schedule(ensemble_pods(example), nodes, placed=k3s_system_pods())
    for node in nodes:
        used = Counter[str]()
        for pod in placed:
            if pod.node == node.name:
                for name, value in pod_requests(pod.spec).items():
                    used[name] += value
        assert used["cpu"] <= node.allocatable["cpu"]
        assert used["memory"] <= node.allocatable["memory"]
    total_cpu = sum((pod_requests(p.spec)["cpu"] for p in placed if p.namespace == "gorkheavy"), Decimal(0))
    total_memory = sum(
        (pod_requests(p.spec)["memory"] for p in placed if p.namespace == "gorkheavy"), Decimal(0)
    )
    # The design document's totals: 1.85 cores and about 4.1 GB of requests.
    assert total_cpu == Decimal("1.85")
    assert total_memory == 4 * GIB + 128 * 2**20


def test_the_models_never_go_to_the_server_even_when_the_agents_are_full(example: Rendered) -> None:
    small_agents = design_nodes(cpu="4", memory="1Gi")
    small_agents[0].allocatable["memory"] = 64 * GIB  # a roomy server must not attract models
    with pytest.raises(Unschedulable) as excinfo:
        schedule(ensemble_pods(example), small_agents, placed=k3s_system_pods())
    message = excinfo.value.message
    # kube-scheduler's filter order: the server fails at TaintToleration, before NodeAffinity is asked
    assert message.startswith(
        "0/3 nodes are available: 1 node(s) had untolerated taint {node-role.kubernetes.io/control-plane: }, "
        "2 Insufficient memory. preemption: 0/3 nodes are available: "
        "1 Preemption is not helpful for scheduling, 2 No preemption victims found for incoming pod."
    ), message


def test_without_agents_nothing_of_the_models_schedules(example: Rendered) -> None:
    nodes = design_nodes(agents=0)
    with pytest.raises(Unschedulable, match=r"0/1 nodes are available: 1 node\(s\) had untolerated taint"):
        schedule(ensemble_pods(example), nodes)
    untainted = design_nodes(agents=0)
    untainted[0].taints = []
    with pytest.raises(
        Unschedulable,
        match=r"0/1 nodes are available: 1 node\(s\) didn't match Pod's node affinity/selector\.",
    ):
        schedule(ensemble_pods(example), untainted)


def test_the_orchestrator_needs_its_toleration_for_the_tainted_server(example: Rendered) -> None:
    orchestrator = copy.deepcopy(example.get("Deployment", "orchestrator"))
    orchestrator["spec"]["template"]["spec"].pop("tolerations")
    with pytest.raises(Unschedulable, match="untolerated taint"):
        schedule(pods_of(orchestrator), design_nodes())


def test_a_third_agent_takes_models_and_keeps_the_spread(example: Rendered) -> None:
    nodes = design_nodes(agents=3)
    placed = schedule(ensemble_pods(example), nodes)
    per_agent = Counter(p.node for p in placed if p.name.rsplit("-", 1)[0] != "orchestrator")
    assert sorted(per_agent.values()) == [1, 2, 2]


def test_the_init_container_rule_counts_the_larger_of_init_and_app_requests() -> None:
    spec = {
        "initContainers": [{"name": "i", "resources": {"requests": {"cpu": "1", "memory": "3Gi"}}}],
        "containers": [
            {"name": "a", "resources": {"requests": {"cpu": "300m", "memory": "1Gi"}}},
            {"name": "b", "resources": {"limits": {"cpu": "900m", "memory": "1Gi"}}},
        ],
    }
    assert pod_requests(spec) == {"cpu": Decimal("1.2"), "memory": 3 * GIB}
