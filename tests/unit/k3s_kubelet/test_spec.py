"""The kubelet's pure parts: image map, argv and environment, back-off, CRI log lines, resolv.conf, pod
status, kube-proxy's rules and the cluster DNS answers."""

from __future__ import annotations

import datetime as dt
import struct

import pytest
from gorkheavy_lab.k3s.kubelet import dns, network, spec
from gorkheavy_lab.k3s.kubelet.runtime import Mount, User, setup_script
from gorkheavy_lab.k3s.logs import Logger

POD = {
    "metadata": {"name": "judge-0", "namespace": "gorkheavy", "uid": "u-1", "labels": {"app": "judge"}},
    "spec": {"containers": [{"name": "ollama", "image": "ollama/ollama:0.33.3"}]},
}


def test_image_map_and_containerd_message_for_unknown_images() -> None:
    assert spec.normalise("ollama/ollama:0.33.3") == "docker.io/ollama/ollama:0.33.3"
    assert spec.normalise("python:3.11-slim") == "docker.io/library/python:3.11-slim"
    assert spec.normalise("busybox") == "docker.io/library/busybox:latest"
    assert spec.normalise("ghcr.io/x/y@sha256:ab") == "ghcr.io/x/y@sha256:ab"
    assert spec.resolve_image("ollama/ollama:0.33.3").kind == "ollama"
    assert spec.resolve_image("python:3.11-slim").kind == "python"
    assert spec.resolve_image("python:3.11.9-bookworm").kind == "python"
    for ref in ("python:3.12", "nosuch/image:1", "ollama/ollama-fork:1"):
        with pytest.raises(spec.ImageError) as err:
            spec.resolve_image(ref)
        full = spec.normalise(ref)
        assert err.value.message == (
            f'failed to pull and unpack image "{full}": failed to resolve reference "{full}": '
            f"{full}: not found"
        )
        assert spec.pull_failure_message(ref, err.value).startswith(
            f'Failed to pull image "{ref}": rpc error: code = NotFound desc = '
        )


def test_command_args_and_expansion_as_kubernetes() -> None:
    image = spec.resolve_image("ollama/ollama:0.33.3")
    assert spec.argv({"args": ["serve"]}, image) == ["/bin/ollama", "serve"]
    assert spec.argv({}, image) == ["/bin/ollama", "serve"]
    assert spec.argv({"command": ["/bin/sh", "-c"]}, image) == ["/bin/sh", "-c"]  # image cmd dropped
    assert spec.argv({"command": ["a"], "args": ["b"]}, image) == ["a", "b"]
    env = {"A": "1"}
    assert spec.expand("$(A)-$(B)-$$(A)", env) == "1-$(B)-$(A)"


def test_environment_order_references_and_missing_keys() -> None:
    image = spec.resolve_image("python:3.11")
    data = {("configmaps", "cfg"): {"k": "from-cm"}, ("secrets", "sec"): {"t": "tok"}}
    container = {
        "env": [
            {"name": "HOME", "value": "/var/lib/x"},
            {"name": "P", "value": "$(HOME)/p"},
            {"name": "C", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}},
            {"name": "S", "valueFrom": {"secretKeyRef": {"name": "sec", "key": "t"}}},
            {"name": "N", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
            {"name": "L", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
        ]
    }
    env = spec.environment(
        container,
        image,
        POD,
        lambda kind, _ns, name: data.get((kind, name)),
        node_name="n1",
        host_ip="10.0.0.2",
        pod_ip="10.42.1.5",
    )
    assert env["PATH"].startswith("/usr/local/bin:")
    assert (env["P"], env["C"], env["S"], env["N"], env["IP"], env["L"]) == (
        "/var/lib/x/p",
        "from-cm",
        "tok",
        "judge-0",
        "10.42.1.5",
        "judge",
    )
    missing = {"env": [{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "nope"}}}]}
    with pytest.raises(spec.ConfigError, match="couldn't find key nope in Configmap gorkheavy/cfg"):
        spec.environment(
            missing, image, POD, lambda k, _n, m: data.get((k, m)), node_name="", host_ip="", pod_ip=""
        )


def test_backoff_doubles_to_five_minutes() -> None:
    steps, delay = [], 0.0
    for _ in range(8):
        delay = spec.backoff(delay)
        steps.append(delay)
    assert steps == [10, 20, 40, 80, 160, 300, 300, 300]
    assert spec.scaled_backoff(0, 2) == 2
    assert spec.scaled_backoff(50, 2) == 60


def test_cri_lines_full_partial_and_long() -> None:
    when = dt.datetime(2026, 12, 1, 12, 0, 0, 120000, tzinfo=dt.UTC)
    lines, rest = spec.cri_lines("stdout", b"one\ntwo\nthr", when)
    assert lines == (b"2026-12-01T12:00:00.12Z stdout F one\n2026-12-01T12:00:00.12Z stdout F two\n")
    assert rest == b"thr"
    lines, rest = spec.cri_lines("stderr", rest, when, final=True)
    assert (lines, rest) == (b"2026-12-01T12:00:00.12Z stderr P thr\n", b"")
    lines, rest = spec.cri_lines("stdout", b"x" * (spec.CRI_LINE_MAX + 3) + b"\n", when)
    parts = lines.splitlines()
    assert parts[0].split(b" ")[2] == b"P"
    assert parts[1].endswith(b" F xxx")


def test_resolv_conf_search_list() -> None:
    text = spec.resolv_conf("gorkheavy", "cluster.local", "10.43.0.10", spec.host_search("search lan\n"), "")
    assert text == (
        "search gorkheavy.svc.cluster.local svc.cluster.local cluster.local lan\n"
        "nameserver 10.43.0.10\noptions ndots:5\n"
    )


def _state(name: str, state: str, exit_code: int = 0, ready: bool = False) -> spec.ContainerState:
    return spec.ContainerState(
        name, "python:3.11", state=state, exit_code=exit_code, ready=ready, started=True
    )


def test_pod_status_phases_and_conditions() -> None:
    pod = {**POD, "spec": {**POD["spec"], "restartPolicy": "Always"}}
    kwargs = {"host_ip": "10.0.0.2", "pod_ip": "10.42.1.5", "started": "t0", "now": "t1"}
    pending = spec.pod_status(pod, [_state("pull", "running")], [_state("ollama", "waiting")], **kwargs)
    assert pending["phase"] == "Pending"
    init = {c["type"]: c for c in pending["conditions"]}["Initialized"]
    assert init["reason"] == "ContainersNotInitialized"
    assert init["message"] == "containers with incomplete status: [pull]"
    running = spec.pod_status(
        pod, [_state("pull", "terminated")], [_state("ollama", "running", ready=True)], **kwargs
    )
    conds = {c["type"]: c["status"] for c in running["conditions"]}
    assert running["phase"] == "Running"
    assert conds == {
        "PodReadyToStartContainers": "True",
        "Initialized": "True",
        "Ready": "True",
        "ContainersReady": "True",
        "PodScheduled": "True",
    }
    assert running["podIPs"] == [{"ip": "10.42.1.5"}]
    never = {**pod, "spec": {**pod["spec"], "restartPolicy": "Never"}}
    done = spec.pod_status(never, [], [_state("ollama", "terminated", exit_code=0)], **kwargs)
    failed = spec.pod_status(never, [], [_state("ollama", "terminated", exit_code=2)], **kwargs)
    assert (done["phase"], failed["phase"]) == ("Succeeded", "Failed")
    waiting = spec.ContainerState(
        "c", "x:1", reason="CrashLoopBackOff", message="back-off 10s", restart_count=2
    )
    assert waiting.api(False)["state"] == {
        "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}
    }


def test_proxy_rules_dnat_to_ready_endpoints_and_reject_without() -> None:
    svc = {
        "metadata": {"name": "judge", "namespace": "gorkheavy"},
        "spec": {
            "clusterIP": "10.43.0.7",
            "selector": {"app": "judge"},
            "ports": [{"name": "http", "port": 11434, "targetPort": "http", "protocol": "TCP"}],
        },
    }
    endpoint_slice = {
        "metadata": {"namespace": "gorkheavy", "labels": {"kubernetes.io/service-name": "judge"}},
        "addressType": "IPv4",
        "ports": [{"name": "http", "port": 11434, "protocol": "TCP"}],
        "endpoints": [
            {"addresses": ["10.42.1.5"], "conditions": {"ready": True}},
            {"addresses": ["10.42.2.9"], "conditions": {"ready": False, "terminating": True}},
        ],
    }
    ports = network.service_ports([svc], [endpoint_slice], "10.43.0.10")
    assert ports[0].endpoints == (("10.42.1.5", 11434),)
    nat, filt = network.proxy_rules(ports, "10.43.0.10", "10.42.1.1", "10.42.0.0/16")
    assert "-j DNAT --to-destination 10.42.1.5:11434" in nat
    assert '-d 10.43.0.10/32 -p udp -m udp --dport 53 -m comment --comment "kube-system/kube-dns:dns"' in nat
    assert "--to-destination 10.42.1.1:53" in nat
    assert "REJECT" not in filt
    empty = {**endpoint_slice, "endpoints": None, "ports": None}
    _nat, filt = network.proxy_rules(network.service_ports([svc], [empty], ""), "10.43.0.10", "g", "c")
    assert '"gorkheavy/judge:http has no endpoints" -j REJECT' in filt


def _query(name: str, qtype: int = dns.A) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", qtype, 1)


def test_cluster_dns_answers_service_names() -> None:
    services = {("gorkheavy", "judge"): ["10.43.0.7"]}
    server = dns.ClusterDNS(Logger(), "cluster.local", lambda ns, name: services.get((ns, name)))
    reply = server.resolve(_query("judge.gorkheavy.svc.cluster.local"))
    assert reply is not None
    ident, flags, _qd, ancount = struct.unpack("!HHHH", reply[:8])
    assert (ident, flags & 0xF, ancount) == (0x1234, dns.NOERROR, 1)
    assert reply[-4:] == bytes([10, 43, 0, 7])
    missing = server.resolve(_query("nope.gorkheavy.svc.cluster.local"))
    assert missing is not None
    assert struct.unpack("!H", missing[2:4])[0] & 0xF == dns.NXDOMAIN
    assert server.resolve(_query("pypi.org")) is None  # forwarded upstream


def test_container_setup_script_mounts_and_user() -> None:
    image = spec.resolve_image("ollama/ollama:0.33.3")
    script = setup_script(
        "/run/r",
        image=image,
        mounts=[Mount("/var/lib/kubelet/pods/u/volumes/x", "/var/lib/ollama", read_only=True)],
        pod_files={"/etc/resolv.conf": "/var/lib/kubelet/pods/u/resolv.conf"},
        user=User(1000, 1000, (1000,), no_new_privs=True, drop_caps=True),
        read_only=True,
        workdir="/",
    )
    assert "mount --bind /var/lib/kubelet/pods/u/volumes/x /run/r/var/lib/ollama" in script
    assert "mount -o remount,bind,ro /run/r/var/lib/ollama" in script
    assert "rm -rf rancher ssh" in script  # the node's K3s and SSH secrets stay out of the container
    assert "/run/r/usr/bin/ollama" in script
    assert script.rstrip().endswith(
        "exec /usr/sbin/chroot /run/r /usr/bin/setpriv --reuid=1000 --regid=1000 --groups=1000 "
        '--no-new-privs --inh-caps=-all --bounding-set=-all -- /usr/bin/env -C / -- "$@"'
    )
