"""The pure parts of the kubelet: what an image reference runs, a container's argv and environment, the
restart back-off, CRI log lines, the pod's resolv.conf, named ports and the PodStatus written to the API.

Nothing here touches the node; ``runtime.py`` and ``pods.py`` do."""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

Obj = dict[str, Any]

# The kubelet's container restart back-off: 10 s doubling up to 5 minutes, reset after 10 minutes of running
# (pkg/kubelet/kuberuntime: initialBackOff / MaxContainerBackOff; backOffPeriod reset).
BACKOFF_INITIAL = 10.0
BACKOFF_MAX = 300.0
BACKOFF_RESET = 600.0
CRI_LINE_MAX = 16 * 1024  # containerd splits longer lines into partial (P) entries


class ImageError(Exception):
    """A pull that fails as containerd fails it (reason ErrImagePull / ErrImageNeverPull)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Image:
    """What an image reference is on this lab's nodes.

    ``kind``: ``ollama`` (the Ollama stand-in as the ``ollama`` CLI) or ``python`` (the node's Python 3.11);
    ``entrypoint``/``cmd``/``env``/``workdir``/``user`` as the image's config has them."""

    ref: str  # normalised, e.g. docker.io/ollama/ollama:0.33.3
    kind: str
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    workdir: str = "/"

    @property
    def image_id(self) -> str:
        name = self.ref.rsplit(":", 1)[0] if "@" not in self.ref else self.ref.split("@", 1)[0]
        return f"{name}@sha256:{hashlib.sha256(self.ref.encode()).hexdigest()}"

    @property
    def size(self) -> int:
        return {"ollama": 1_441_287_127, "python": 48_491_322}[self.kind]


_STD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def normalise(ref: str) -> str:
    """``ollama/ollama:0.33.3`` -> ``docker.io/ollama/ollama:0.33.3``, ``python:3.11`` ->
    ``docker.io/library/python:3.11``, a missing tag -> ``:latest`` (reference.ParseNormalizedNamed)."""
    name, digest = [*ref.split("@", 1), ""][:2]
    first = name.split("/", 1)[0]
    if "/" not in name:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    last = name.rsplit("/", 1)[-1]
    if ":" not in last and not digest:
        name += ":latest"
    return f"{name}@{digest}" if digest else name


def resolve_image(ref: str) -> Image:
    """The lab's image map (README): ``ollama/ollama:*`` and ``python:3.11*``; anything else cannot be pulled,
    with containerd's message for a reference the registry does not have."""
    full = normalise(ref)
    repo, _, tag = full.split("@", 1)[0].rpartition(":")
    if repo == "docker.io/ollama/ollama":
        return Image(
            full,
            "ollama",
            ("/bin/ollama",),
            ("serve",),
            (
                ("PATH", _STD_PATH),
                ("LD_LIBRARY_PATH", "/usr/local/nvidia/lib:/usr/local/nvidia/lib64"),
                ("NVIDIA_DRIVER_CAPABILITIES", "compute,utility"),
                ("NVIDIA_VISIBLE_DEVICES", "all"),
                ("OLLAMA_HOST", "0.0.0.0:11434"),
            ),
        )
    if repo == "docker.io/library/python" and (tag == "3.11" or tag.startswith(("3.11-", "3.11."))):
        return Image(
            full,
            "python",
            (),
            ("python3",),
            (
                ("PATH", "/usr/local/bin:" + _STD_PATH),
                ("LANG", "C.UTF-8"),
                ("PYTHON_VERSION", "3.11.2"),
            ),
        )
    raise ImageError(
        "ErrImagePull",
        f'failed to pull and unpack image "{full}": failed to resolve reference "{full}": {full}: not found',
    )


def pull_failure_message(ref: str, error: ImageError) -> str:
    """The kubelet's Failed event / waiting message for a failed pull (the CRI error, wrapped)."""
    return f'Failed to pull image "{ref}": rpc error: code = NotFound desc = {error.message}'


def argv(container: Obj, image: Image) -> list[str]:
    """Kubernetes' rule: ``command`` replaces the entrypoint (and drops the image's cmd), ``args`` the cmd;
    ``$(VAR)`` references are expanded from the container's environment later (``expand``)."""
    command = container.get("command")
    args = container.get("args")
    if command:
        return [*command, *(args or [])]
    return [*image.entrypoint, *(args if args is not None else image.cmd)]


_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)|\$\$")


def expand(text: str, env: dict[str, str]) -> str:
    """``$(VAR)`` -> its value when defined (left as is otherwise), ``$$`` -> ``$`` (golang/expansion)."""

    def sub(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name = match.group(1)
        return env.get(name, match.group(0))

    return _REF.sub(sub, text)


class ConfigError(Exception):
    """CreateContainerConfigError: a missing ConfigMap/Secret/key the container's env or volumes need."""


def field_ref(pod: Obj, path: str, node_name: str, host_ip: str, pod_ip: str) -> str:
    meta = pod.get("metadata", {})
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": node_name,
        "spec.serviceAccountName": pod.get("spec", {}).get("serviceAccountName", "default"),
        "status.hostIP": host_ip,
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path])
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if match:
        return str((meta.get(match.group(1)) or {}).get(match.group(2), ""))
    raise ConfigError(f'unsupported fieldRef fieldPath "{path}"')


def environment(
    container: Obj,
    image: Image,
    pod: Obj,
    lookup: Any,
    *,
    node_name: str,
    host_ip: str,
    pod_ip: str,
) -> dict[str, str]:
    """The container's environment: the image's, then envFrom, then env in order (later wins), with
    ``$(VAR)`` expansion against what came before, as the kubelet's makeEnvironmentVariables.

    ``lookup(kind, namespace, name)`` returns the ConfigMap/Secret's ``data`` (Secrets decoded) or None."""
    namespace = pod["metadata"]["namespace"]
    env: dict[str, str] = dict(image.env)
    declared: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix", "")
        for kind in ("configMapRef", "secretRef"):
            ref = source.get(kind)
            if not ref:
                continue
            data = lookup("configmaps" if kind == "configMapRef" else "secrets", namespace, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                what = "configmap" if kind == "configMapRef" else "secret"
                raise ConfigError(f'{what} "{ref["name"]}" not found')
            for key, value in data.items():
                declared[prefix + key] = value
    for item in container.get("env") or []:
        name = item["name"]
        if "valueFrom" not in item:
            declared[name] = expand(item.get("value", ""), {**env, **declared})
            continue
        src = item["valueFrom"]
        if "fieldRef" in src:
            declared[name] = field_ref(pod, src["fieldRef"]["fieldPath"], node_name, host_ip, pod_ip)
            continue
        if "resourceFieldRef" in src:
            declared[name] = _resource_field(container, src["resourceFieldRef"])
            continue
        for kind, plural, what in (
            ("configMapKeyRef", "configmaps", "configmap"),
            ("secretKeyRef", "secrets", "secret"),
        ):
            ref = src.get(kind)
            if not ref:
                continue
            data = lookup(plural, namespace, ref["name"])
            optional = bool(ref.get("optional"))
            if data is None:
                if optional:
                    break
                raise ConfigError(f'{what} "{ref["name"]}" not found')
            if ref["key"] not in data:
                if optional:
                    break
                raise ConfigError(
                    f"couldn't find key {ref['key']} in {what.capitalize()} {namespace}/{ref['name']}"
                )
            declared[name] = data[ref["key"]]
            break
    env.update(declared)
    return env


def _resource_field(container: Obj, ref: Obj) -> str:
    resource = ref.get("resource", "")
    kind, _, what = resource.partition(".")
    value = (container.get("resources", {}).get(kind) or {}).get(what, "0")
    return str(value)


def backoff(previous: float) -> float:
    """The next restart delay after ``previous`` (0: none yet): 10 s, 20 s, 40 s ... 300 s."""
    return BACKOFF_INITIAL if previous <= 0 else min(previous * 2, BACKOFF_MAX)


def scaled_backoff(previous: float, initial: float) -> float:
    """``backoff`` with another first step (the stand-in's test knob), capped at 30 times it."""
    return initial if previous <= 0 else min(previous * 2, initial * (BACKOFF_MAX / BACKOFF_INITIAL))


def rfc3339nano(when: dt.datetime) -> str:
    """Go's time.RFC3339Nano as containerd writes it: trailing zeros of the fraction dropped."""
    text = when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f").rstrip("0").rstrip(".")
    return text + "Z"


def cri_lines(stream: str, data: bytes, when: dt.datetime, *, final: bool = False) -> tuple[bytes, bytes]:
    """CRI log lines (``<RFC3339Nano> <stream> <F|P> <text>``) for the complete lines in ``data``; returns
    (lines, rest). Lines over 16 KiB are cut into partial (P) entries; at ``final`` the rest is a P entry."""
    out = bytearray()
    stamp = rfc3339nano(when).encode()
    head = stamp + b" " + stream.encode() + b" "
    while True:
        cut = data.find(b"\n")
        if cut == -1 or cut > CRI_LINE_MAX:
            if len(data) >= CRI_LINE_MAX:
                out += head + b"P " + data[:CRI_LINE_MAX] + b"\n"
                data = data[CRI_LINE_MAX:]
                continue
            break
        out += head + b"F " + data[:cut] + b"\n"
        data = data[cut + 1 :]
    if final and data:
        out += head + b"P " + data + b"\n"
        data = b""
    return bytes(out), data


def resolv_conf(namespace: str, domain: str, dns_ip: str, host_search: list[str], policy: str) -> str:
    """The resolv.conf the kubelet writes for ClusterFirst pods (``Default``: the node's)."""
    search = [f"{namespace}.svc.{domain}", f"svc.{domain}", domain, *host_search]
    return f"search {' '.join(dict.fromkeys(search))}\nnameserver {dns_ip}\noptions ndots:5\n"


def host_search(resolv_text: str) -> list[str]:
    for line in resolv_text.splitlines():
        parts = line.split()
        if parts and parts[0] in {"search", "domain"}:
            return parts[1:]
    return []


def etc_hosts(pod_ip: str, hostname: str, host_aliases: list[Obj]) -> str:
    lines = [
        "# Kubernetes-managed hosts file.",
        "127.0.0.1\tlocalhost",
        "::1\tlocalhost ip6-localhost ip6-loopback",
        "fe00::0\tip6-localnet",
        "fe00::0\tip6-mcastprefix",
        "fe00::1\tip6-allnodes",
        "fe00::2\tip6-allrouters",
        f"{pod_ip}\t{hostname}",
    ]
    if host_aliases:
        lines.append("")
        lines.append("# Entries added by HostAliases.")
        for alias in host_aliases:
            lines.append(f"{alias.get('ip', '')}\t" + "\t".join(alias.get("hostnames") or []))
    return "\n".join(lines) + "\n"


def container_port(pod: Obj, container: Obj | None, port: Any) -> int:
    """A probe's or Service's port: a number, or a container port's name (searched in ``container`` first)."""
    if isinstance(port, int) or (isinstance(port, str) and port.isdigit()):
        return int(port)
    containers = ([container] if container else []) + list(pod.get("spec", {}).get("containers") or [])
    for c in containers:
        for p in c.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
    raise LookupError(
        f"couldn't find port {port!r} in {pod['metadata']['namespace']}/{pod['metadata']['name']}"
    )


# --- status -----------------------------------------------------------------------------------------


@dataclass
class ContainerState:
    """What the kubelet knows of one container: the API's ContainerStatus is made from this."""

    name: str
    image: str  # as the spec gives it
    image_ref: str = ""  # normalised, once pulled
    image_id: str = ""
    container_id: str = ""
    restart_count: int = 0
    state: str = "waiting"  # waiting | running | terminated
    reason: str = "ContainerCreating"
    message: str = ""
    started_at: str = ""
    finished_at: str = ""
    exit_code: int = 0
    signal: int = 0
    last: Obj | None = None  # lastState.terminated
    ready: bool = False
    started: bool = False  # startup probe passed (or none)
    pid: int = 0  # the container's init process on the node
    extra: Obj = field(default_factory=dict)

    def api(self, init: bool) -> Obj:
        if self.state == "running":
            state: Obj = {"running": {"startedAt": self.started_at}}
        elif self.state == "terminated":
            term: Obj = {
                "exitCode": self.exit_code,
                "reason": self.reason,
                "startedAt": self.started_at or None,
                "finishedAt": self.finished_at,
                "containerID": self.container_id,
            }
            if self.signal:
                term["signal"] = self.signal
            if self.message:
                term["message"] = self.message
            state = {"terminated": {k: v for k, v in term.items() if v is not None}}
        else:
            waiting: Obj = {"reason": self.reason}
            if self.message:
                waiting["message"] = self.message
            state = {"waiting": waiting}
        status: Obj = {
            "name": self.name,
            "state": state,
            "lastState": {"terminated": self.last} if self.last else {},
            "ready": self.ready,
            "restartCount": self.restart_count,
            "image": self.image_ref or normalise(self.image),
            "imageID": self.image_id,
        }
        if self.container_id:
            status["containerID"] = self.container_id
        if not init:
            status["started"] = self.state == "running" and self.started
        else:
            status["started"] = self.state == "running"
        return status


def _condition(kind: str, ok: bool, reason: str, message: str, *, before: dict[str, Obj], now: str) -> Obj:
    status = "True" if ok else "False"
    old = before.get(kind)
    since = old["lastTransitionTime"] if old and old.get("status") == status else now
    cond: Obj = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": since}
    if not ok and reason:
        cond["reason"] = reason
        if message:
            cond["message"] = message
    return cond


def pod_status(
    pod: Obj,
    init: list[ContainerState],
    main: list[ContainerState],
    *,
    host_ip: str,
    pod_ip: str,
    started: str,
    now: str,
) -> Obj:
    """The PodStatus the kubelet writes (pkg/kubelet/status generateAPIPodStatus / getPhase)."""
    before = {c["type"]: c for c in (pod.get("status", {}).get("conditions") or [])}
    policy = pod.get("spec", {}).get("restartPolicy", "Always")
    init_done = all(c.state == "terminated" and c.exit_code == 0 for c in init)
    init_failed = any(c.state == "terminated" and c.exit_code != 0 for c in init) and policy == "Never"
    phase = _phase(init, main, policy, init_done, init_failed)
    not_ready = [c.name for c in main if not c.ready]
    ready = init_done and not not_ready and phase == "Running"
    pending_init = [c.name for c in init if not (c.state == "terminated" and c.exit_code == 0)]
    completed = phase == "Succeeded"
    conditions = [
        _condition("PodReadyToStartContainers", bool(pod_ip), "", "", before=before, now=now),
        _condition(
            "Initialized",
            init_done,
            "ContainersNotInitialized",
            f"containers with incomplete status: [{' '.join(pending_init)}]",
            before=before,
            now=now,
        ),
        *(
            _condition(
                kind,
                ready,
                "PodCompleted" if completed else "ContainersNotReady",
                "" if completed else f"containers with unready status: [{' '.join(not_ready)}]",
                before=before,
                now=now,
            )
            for kind in ("Ready", "ContainersReady")
        ),
        before.get("PodScheduled")
        or {"type": "PodScheduled", "status": "True", "lastProbeTime": None, "lastTransitionTime": started},
    ]
    status: Obj = {
        "phase": phase,
        "conditions": conditions,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": started,
        "qosClass": qos_class(pod),
        "containerStatuses": [c.api(False) for c in main],
    }
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    if init:
        status["initContainerStatuses"] = [c.api(True) for c in init]
    return status


def _phase(
    init: list[ContainerState], main: list[ContainerState], policy: str, init_done: bool, init_failed: bool
) -> str:
    if init_failed:
        return "Failed"
    if not init_done:
        return "Pending"
    running = sum(c.state == "running" for c in main)
    waiting = sum(c.state == "waiting" for c in main)
    terminated = [c for c in main if c.state == "terminated"]
    if waiting and not running and not terminated:
        return "Pending"
    if running or (waiting and policy != "Never"):
        return "Running"
    if terminated and len(terminated) == len(main):
        if policy == "Always":
            return "Running"
        if all(c.exit_code == 0 for c in terminated):
            return "Succeeded"
        return "Failed" if policy == "Never" else "Running"
    return "Pending" if waiting else "Running"


def qos_class(pod: Obj) -> str:
    containers = list(pod.get("spec", {}).get("containers") or []) + list(
        pod.get("spec", {}).get("initContainers") or []
    )
    requests = [c.get("resources", {}).get("requests") or {} for c in containers]
    limits = [c.get("resources", {}).get("limits") or {} for c in containers]
    if not any(requests) and not any(limits):
        return "BestEffort"
    guaranteed = all(
        lim.get("cpu")
        and lim.get("memory")
        and req.get("cpu", lim["cpu"]) == lim["cpu"]
        and req.get("memory", lim["memory"]) == lim["memory"]
        for req, lim in zip(requests, limits, strict=True)
    )
    return "Guaranteed" if guaranteed else "Burstable"


def container_id(pod_uid: str, name: str, attempt: int) -> str:
    return "containerd://" + hashlib.sha256(f"{pod_uid}/{name}/{attempt}".encode()).hexdigest()
