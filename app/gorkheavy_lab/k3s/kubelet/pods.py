"""One pod on the node, as the kubelet's pod worker runs it: sandbox and network, volumes, init containers in
order, then the containers, each with its restart policy, back-off, probes and CRI log file; termination with
SIGTERM, the grace period and SIGKILL when the pod is deleted."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import datetime as dt
import errno
import json
import os
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp

from ..stream.process import default_signals
from . import runtime, spec
from .runtime import read_text as _read
from .spec import ConfigError, ContainerState, Image, ImageError, Obj

if TYPE_CHECKING:
    from .kubelet import Kubelet

PODS_DIR = Path("/var/lib/kubelet/pods")
STORAGE_DIR = Path("/var/lib/rancher/k3s/storage")


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Probe:
    kind: str  # startup | readiness | liveness
    spec: Obj

    @property
    def period(self) -> float:
        return float(self.spec.get("periodSeconds", 10))

    @property
    def delay(self) -> float:
        return float(self.spec.get("initialDelaySeconds", 0))

    @property
    def timeout(self) -> float:
        return float(self.spec.get("timeoutSeconds", 1))

    @property
    def failures(self) -> int:
        return int(self.spec.get("failureThreshold", 3))

    @property
    def successes(self) -> int:
        return int(self.spec.get("successThreshold", 1))


class Restart(Exception):
    """A container the kubelet kills to restart it (failed liveness or startup probe)."""


class PodWorker:
    def __init__(self, kubelet: Kubelet, pod: Obj) -> None:
        self.kubelet = kubelet
        self.pod = pod
        meta = pod["metadata"]
        self.uid: str = meta["uid"]
        self.namespace: str = meta["namespace"]
        self.name: str = meta["name"]
        podspec = pod.get("spec", {})
        self.init = [ContainerState(c["name"], c["image"]) for c in podspec.get("initContainers") or []]
        self.main = [ContainerState(c["name"], c["image"]) for c in podspec.get("containers") or []]
        self.running: dict[str, runtime.Running] = {}
        self.sandbox: runtime.Sandbox | None = None
        self.pod_ip = ""
        self.started = now()
        self.stopping = asyncio.Event()
        self.stopped = asyncio.Event()
        self.volumes: dict[str, Path] = {}
        self.pod_files: dict[str, str] = {}
        self._tasks: list[asyncio.Task[Any]] = []
        self._dirty = asyncio.Event()
        self._image_backoff: dict[str, float] = {}

    # --- helpers ------------------------------------------------------------------------------------
    @property
    def full_name(self) -> str:
        return f"{self.name}_{self.namespace}({self.uid})"

    @property
    def log_dir(self) -> Path:
        return self.kubelet.log_root / f"{self.namespace}_{self.name}_{self.uid}"

    def container_spec(self, name: str) -> Obj:
        podspec = self.pod.get("spec", {})
        for c in [*(podspec.get("initContainers") or []), *(podspec.get("containers") or [])]:
            if c["name"] == name:
                return dict(c)
        raise KeyError(name)

    def changed(self) -> None:
        self._dirty.set()

    async def event(self, kind: str, reason: str, message: str, container: str = "") -> None:
        path = ""
        if container:
            idx = (
                [c.name for c in self.init].index(container)
                if container in [c.name for c in self.init]
                else None
            )
            path = (
                f"spec.initContainers{{{container}}}"
                if idx is not None
                else f"spec.containers{{{container}}}"
            )
        await self.kubelet.event(self.pod, kind, reason, message, path)

    def status(self) -> Obj:
        return spec.pod_status(
            self.pod,
            self.init,
            self.main,
            host_ip=self.kubelet.node_ip,
            pod_ip=self.pod_ip,
            started=self.started,
            now=now(),
        )

    async def _status_writer(self) -> None:
        while not self.stopped.is_set():
            await self._dirty.wait()
            self._dirty.clear()
            if self.stopping.is_set():
                continue
            status = self.status()
            self.pod = {**self.pod, "status": status}
            await self.kubelet.write_status(self.namespace, self.name, status)
            await asyncio.sleep(0.2)  # coalesce bursts of changes

    # --- life cycle ---------------------------------------------------------------------------------
    async def run(self) -> None:
        writer = asyncio.create_task(self._status_writer())
        life = asyncio.create_task(self._guarded())
        try:
            await self.stopping.wait()  # the pod is deleted (or the kubelet stops)
            await self._teardown()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(life, timeout=5)
        finally:
            life.cancel()
            self.stopped.set()
            writer.cancel()

    async def _guarded(self) -> None:
        try:
            await self._run()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the kubelet goes on with the other pods
            self.kubelet.log.error(f"pod {self.full_name} failed: {type(exc).__name__}: {exc}")
            await self.event("Warning", "Failed", f"Error: {exc}")

    async def _run(self) -> None:
        self.changed()
        while not self.stopping.is_set():
            try:
                await self._sandbox()
                break
            except (runtime.RuntimeError_, OSError) as exc:
                await self.event("Warning", "FailedCreatePodSandBox", f"Failed to create pod sandbox: {exc}")
                await self._sleep(10)
        while not self.stopping.is_set():
            try:
                await self._prepare_volumes()
                break
            except (ConfigError, OSError, LookupError) as exc:
                await self.event("Warning", "FailedMount", f"MountVolume.SetUp failed: {exc}")
                await self._sleep(5)
        self.changed()
        policy = self.pod.get("spec", {}).get("restartPolicy", "Always")
        for state in self.init:
            state.reason = "PodInitializing"
        for state in self.main:
            state.reason = "PodInitializing" if self.init else "ContainerCreating"
        for state in self.init:
            state.reason = "ContainerCreating"
            ok = await self._container_loop(
                state, init=True, policy="OnFailure" if policy != "Never" else "Never"
            )
            if not ok or self.stopping.is_set():
                self.changed()
                return
        for state in self.main:
            state.reason = "ContainerCreating"
        self.changed()
        loops = [asyncio.create_task(self._container_loop(s, init=False, policy=policy)) for s in self.main]
        self._tasks.extend(loops)
        await asyncio.gather(*loops, return_exceptions=True)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.stopping.wait(), timeout=seconds)

    async def _sandbox(self) -> None:
        if self.sandbox is None:
            hostname = self.pod.get("spec", {}).get("hostname") or self.name
            self.sandbox = await runtime.start_sandbox(self.uid, hostname[:63], self.kubelet.run_root)
        if not self.pod_ip:
            if self.pod.get("spec", {}).get("hostNetwork"):
                raise runtime.RuntimeError_("hostNetwork pods are not modelled by the lab's kubelet")
            self.pod_ip = await self.kubelet.network.attach(self.sandbox.pid, self.uid)
        pod_dir = PODS_DIR / self.uid
        pod_dir.mkdir(parents=True, exist_ok=True)
        hostname = self.pod.get("spec", {}).get("hostname") or self.name
        (pod_dir / "etc-hosts").write_text(
            spec.etc_hosts(self.pod_ip, hostname, self.pod.get("spec", {}).get("hostAliases") or [])
        )
        (pod_dir / "hostname").write_text(hostname + "\n")
        policy = self.pod.get("spec", {}).get("dnsPolicy", "ClusterFirst")
        node_resolv = _read("/etc/resolv.conf")
        if policy == "Default":
            resolv = node_resolv
        else:
            resolv = spec.resolv_conf(
                self.namespace,
                self.kubelet.domain,
                self.kubelet.dns_ip,
                spec.host_search(node_resolv),
                policy,
            )
        (pod_dir / "resolv.conf").write_text(resolv)
        self.pod_files = {
            "/etc/hosts": str(pod_dir / "etc-hosts"),
            "/etc/hostname": str(pod_dir / "hostname"),
            "/etc/resolv.conf": str(pod_dir / "resolv.conf"),
        }
        self.changed()

    # --- volumes ------------------------------------------------------------------------------------
    async def _prepare_volumes(self) -> None:
        base = PODS_DIR / self.uid / "volumes"
        sec = self.pod.get("spec", {}).get("securityContext") or {}
        fs_group = sec.get("fsGroup")
        for vol in self.pod.get("spec", {}).get("volumes") or []:
            name = vol["name"]
            if "emptyDir" in vol:
                path = base / "kubernetes.io~empty-dir" / name
                path.mkdir(parents=True, exist_ok=True)
                os.chmod(path, 0o777)
            elif "configMap" in vol or "secret" in vol:
                kind = "configMap" if "configMap" in vol else "secret"
                src = vol[kind]
                ref = src.get("name") if kind == "configMap" else src.get("secretName")
                data = await self.kubelet.lookup(
                    "configmaps" if kind == "configMap" else "secrets", self.namespace, ref
                )
                if data is None and not src.get("optional"):
                    what = "configmap" if kind == "configMap" else "secret"
                    raise ConfigError(f'{what} "{ref}" not found')
                sub = "kubernetes.io~configmap" if kind == "configMap" else "kubernetes.io~secret"
                path = base / sub / name
                write_projection(path, data or {}, src.get("items"), int(src.get("defaultMode", 0o644)))
            elif "hostPath" in vol:
                path = Path(vol["hostPath"]["path"])
                kind = vol["hostPath"].get("type", "")
                if kind == "DirectoryOrCreate":
                    path.mkdir(parents=True, exist_ok=True)
                elif kind == "Directory" and not path.is_dir():
                    raise ConfigError(f"hostPath type check failed: {path} is not a directory")
                elif kind == "File" and not path.is_file():
                    raise ConfigError(f"hostPath type check failed: {path} is not a file")
                elif kind == "FileOrCreate" and not path.exists():
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.touch()
                elif not kind and not path.exists():
                    path.mkdir(parents=True, exist_ok=True)
            elif "persistentVolumeClaim" in vol:
                path = await self.kubelet.claim_path(
                    self.namespace, vol["persistentVolumeClaim"]["claimName"]
                )
            else:
                raise ConfigError(f"volume {name!r}: this volume type is not modelled by the lab's kubelet")
            if fs_group is not None and ("emptyDir" in vol or "persistentVolumeClaim" in vol):
                st = path.stat()
                if st.st_gid != int(fs_group):  # fsGroupChangePolicy OnRootMismatch
                    for root, dirs, files in os.walk(path):
                        for entry in [
                            root,
                            *(os.path.join(root, d) for d in dirs),
                            *(os.path.join(root, f) for f in files),
                        ]:
                            with contextlib.suppress(OSError):
                                os.lchown(entry, -1, int(fs_group))
                    os.chmod(path, path.stat().st_mode | 0o2070)
            self.volumes[name] = path

    def _mounts(self, container: Obj) -> list[runtime.Mount]:
        out = []
        for vm in container.get("volumeMounts") or []:
            source = self.volumes.get(vm["name"])
            if source is None:
                raise ConfigError(
                    f'cannot find volume "{vm["name"]}" to mount into container "{container["name"]}"'
                )
            if vm.get("subPath"):
                source = source / vm["subPath"]
                if not source.exists():
                    source.mkdir(parents=True)
            out.append(
                runtime.Mount(str(source), vm["mountPath"], bool(vm.get("readOnly")), source.is_file())
            )
        return out

    # --- containers ---------------------------------------------------------------------------------
    async def _pull(self, state: ContainerState, container: Obj) -> Image | None:
        ref = container["image"]
        policy = container.get("imagePullPolicy") or (
            "Always" if ref.endswith(":latest") or ":" not in ref.rsplit("/", 1)[-1] else "IfNotPresent"
        )
        while not self.stopping.is_set():
            try:
                image = spec.resolve_image(ref)
            except ImageError as exc:
                if policy == "Never":
                    state.reason, state.message = (
                        "ErrImageNeverPull",
                        f'Container image "{ref}" is not present with pull policy of Never',
                    )
                    await self.event("Warning", "ErrImageNeverPull", state.message, state.name)
                    self.changed()
                    await self._sleep(10)
                    continue
                await self.event("Normal", "Pulling", f'Pulling image "{ref}"', state.name)
                message = spec.pull_failure_message(ref, exc)
                state.reason, state.message = "ErrImagePull", message
                await self.event("Warning", "Failed", message, state.name)
                await self.event("Warning", "Failed", "Error: ErrImagePull", state.name)
                self.changed()
                delay = self._image_backoff[ref] = self.kubelet.next_backoff(
                    self._image_backoff.get(ref, 0.0)
                )
                await self._sleep(1.0)
                state.reason = "ImagePullBackOff"
                state.message = f'Back-off pulling image "{ref}": ErrImagePull: {message}'
                await self.event("Normal", "BackOff", f'Back-off pulling image "{ref}"', state.name)
                await self.event("Warning", "Failed", "Error: ImagePullBackOff", state.name)
                self.changed()
                await self._sleep(delay)
                continue
            present = self.kubelet.image_present(image)
            if present and policy != "Always":
                await self.event(
                    "Normal", "Pulled", f'Container image "{ref}" already present on machine', state.name
                )
            else:
                await self.event("Normal", "Pulling", f'Pulling image "{ref}"', state.name)
                began = time.monotonic()
                self.kubelet.record_image(image)
                took = time.monotonic() - began
                await self.event(
                    "Normal",
                    "Pulled",
                    f'Successfully pulled image "{ref}" in {took * 1000:.0f}ms '
                    f"({took * 1000:.0f}ms including waiting). "
                    f"Image size: {image.size} bytes.",
                    state.name,
                )
            state.image_ref, state.image_id = image.ref, image.image_id
            return image
        return None

    def _user(self, container: Obj) -> runtime.User:
        pod_sec = self.pod.get("spec", {}).get("securityContext") or {}
        sec = container.get("securityContext") or {}
        uid = sec.get("runAsUser", pod_sec.get("runAsUser"))
        gid = sec.get("runAsGroup", pod_sec.get("runAsGroup"))
        non_root = sec.get("runAsNonRoot", pod_sec.get("runAsNonRoot"))
        if non_root and not uid:
            raise ConfigError("container has runAsNonRoot and image will run as root")
        groups = [int(g) for g in pod_sec.get("supplementalGroups") or []]
        if pod_sec.get("fsGroup") is not None:
            groups.insert(0, int(pod_sec["fsGroup"]))
        if gid is not None and groups:
            groups.insert(0, int(gid))
        drop = [c.upper() for c in (sec.get("capabilities") or {}).get("drop") or []]
        return runtime.User(
            None if uid is None else int(uid),
            None if gid is None else int(gid) if uid is not None or gid is not None else None,
            tuple(dict.fromkeys(groups)),
            no_new_privs=sec.get("allowPrivilegeEscalation") is False,
            drop_caps="ALL" in drop,
        )

    async def _env(self, container: Obj, image: Image) -> dict[str, str]:
        wanted: set[tuple[str, str]] = set()
        for item in container.get("env") or []:
            src = item.get("valueFrom") or {}
            if "configMapKeyRef" in src:
                wanted.add(("configmaps", src["configMapKeyRef"]["name"]))
            if "secretKeyRef" in src:
                wanted.add(("secrets", src["secretKeyRef"]["name"]))
        for source in container.get("envFrom") or []:
            if "configMapRef" in source:
                wanted.add(("configmaps", source["configMapRef"]["name"]))
            if "secretRef" in source:
                wanted.add(("secrets", source["secretRef"]["name"]))
        found = {key: await self.kubelet.lookup(key[0], self.namespace, key[1]) for key in wanted}
        return spec.environment(
            container,
            image,
            self.pod,
            lambda kind, _ns, name: found.get((kind, name)),
            node_name=self.kubelet.node_name,
            host_ip=self.kubelet.node_ip,
            pod_ip=self.pod_ip,
        )

    async def _container_loop(self, state: ContainerState, *, init: bool, policy: str) -> bool:
        """Run one container until the restart policy says it is done; True when it ended successfully."""
        container = self.container_spec(state.name)
        delay = 0.0
        while not self.stopping.is_set():
            image = await self._pull(state, container)
            if image is None:
                return False
            try:
                env = await self._env(container, image)
                user = self._user(container)
                mounts = self._mounts(container)
            except ConfigError as exc:
                state.reason, state.message = "CreateContainerConfigError", str(exc)
                await self.event("Warning", "Failed", f"Error: {exc}", state.name)
                self.changed()
                await self._sleep(5)
                continue
            argv = [spec.expand(a, env) for a in spec.argv(container, image)]
            if not argv:
                state.reason, state.message = "CreateContainerError", "no command specified"
                await self.event("Warning", "Failed", "Error: no command specified", state.name)
                self.changed()
                await self._sleep(10)
                continue
            sec = container.get("securityContext") or {}
            assert self.sandbox is not None
            state.container_id = spec.container_id(self.uid, state.name, state.restart_count)
            try:
                running = await runtime.start_container(
                    self.sandbox,
                    name=state.name,
                    attempt=state.restart_count,
                    image=image,
                    argv=argv,
                    env=env,
                    mounts=mounts,
                    pod_files=self.pod_files,
                    user=user,
                    read_only=bool(sec.get("readOnlyRootFilesystem")),
                    workdir=container.get("workingDir") or image.workdir,
                )
            except OSError as exc:
                state.reason, state.message = "CreateContainerError", str(exc)
                await self.event("Warning", "Failed", f"Error: {exc}", state.name)
                self.changed()
                await self._sleep(10)
                continue
            self.running[state.name] = running
            log_task = asyncio.create_task(self._logs(state, running))
            await self.event("Normal", "Created", f"Created container: {state.name}", state.name)
            began = time.monotonic()
            state.state, state.reason, state.message = "running", "", ""
            state.started_at = now()
            state.ready = False
            state.started = False
            await self.event("Normal", "Started", f"Started container {state.name}", state.name)
            self.changed()
            probes = None if init else asyncio.create_task(self._probes(state, running, container))
            code = await running.process.wait()
            await log_task
            running.done.set()
            self.running.pop(state.name, None)
            if probes is not None:
                probes.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await probes
            state.state = "terminated"
            state.ready = False
            state.finished_at = now()
            state.signal = -code if code < 0 else 0
            state.exit_code = 128 - code if code < 0 else code
            state.reason = "Completed" if state.exit_code == 0 else "Error"
            state.message = ""
            self.changed()
            if self.stopping.is_set():
                return state.exit_code == 0
            restart = policy == "Always" or (policy == "OnFailure" and state.exit_code != 0)
            if init and state.exit_code == 0:
                return True
            if not restart:
                return state.exit_code == 0
            if time.monotonic() - began > spec.BACKOFF_RESET:
                delay = 0.0
            last = {
                "exitCode": state.exit_code,
                "reason": state.reason,
                "startedAt": state.started_at,
                "finishedAt": state.finished_at,
                "containerID": state.container_id,
            }
            if delay > 0:
                state.last = last
                state.state = "waiting"
                state.reason = "CrashLoopBackOff"
                state.message = (
                    f"back-off {_go_duration(delay)} restarting failed container={state.name} "
                    f"pod={self.full_name}"
                )
                await self.event(
                    "Warning",
                    "BackOff",
                    f"Back-off restarting failed container {state.name} in pod {self.full_name}",
                    state.name,
                )
                self.changed()
                await self._sleep(delay)
            state.last = last
            state.restart_count += 1
            delay = self.kubelet.next_backoff(delay)
        return False

    async def _logs(self, state: ContainerState, running: runtime.Running) -> None:
        directory = self.log_dir / state.name
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / f"{state.restart_count}.log"
        link_dir = Path("/var/log/containers")
        with contextlib.suppress(OSError):
            os.makedirs(link_dir, exist_ok=True)
            link = (
                link_dir
                / f"{self.name}_{self.namespace}_{state.name}-{state.container_id.split('//')[-1]}.log"
            )
            if not link.is_symlink():
                link.symlink_to(path)
        lock = asyncio.Lock()
        with path.open("ab") as fh:

            async def pump(stream: asyncio.StreamReader | None, which: str) -> None:
                if stream is None:
                    return
                rest = b""
                while True:
                    chunk = await stream.read(65536)
                    lines, rest = spec.cri_lines(
                        which, rest + chunk, dt.datetime.now(dt.UTC), final=not chunk
                    )
                    if lines:
                        async with lock:
                            fh.write(lines)
                            fh.flush()
                    if not chunk:
                        return

            await asyncio.gather(
                pump(running.process.stdout, "stdout"), pump(running.process.stderr, "stderr")
            )

    # --- probes -------------------------------------------------------------------------------------
    async def _probes(self, state: ContainerState, running: runtime.Running, container: Obj) -> None:
        startup = container.get("startupProbe")
        if startup:
            probe = Probe("startup", startup)
            await asyncio.sleep(probe.delay)
            failures = 0
            while True:
                ok, message = await self._probe_once(probe, running, container)
                if ok:
                    break
                failures += 1
                if failures >= probe.failures:
                    await self.event("Warning", "Unhealthy", f"Startup probe failed: {message}", state.name)
                    await self._kill_for_restart(state, running, container, "startup")
                    return
                await asyncio.sleep(probe.period)
        state.started = True
        if not container.get("readinessProbe"):
            state.ready = True
        self.changed()
        tasks = []
        if container.get("readinessProbe"):
            tasks.append(
                self._probe_loop(Probe("readiness", container["readinessProbe"]), state, running, container)
            )
        if container.get("livenessProbe"):
            tasks.append(
                self._probe_loop(Probe("liveness", container["livenessProbe"]), state, running, container)
            )
        await asyncio.gather(*tasks)

    async def _probe_loop(
        self, probe: Probe, state: ContainerState, running: runtime.Running, container: Obj
    ) -> None:
        await asyncio.sleep(probe.delay)
        failures = successes = 0
        while True:
            ok, message = await self._probe_once(probe, running, container)
            if ok:
                failures, successes = 0, successes + 1
                if probe.kind == "readiness" and not state.ready and successes >= probe.successes:
                    state.ready = True
                    self.changed()
            else:
                successes, failures = 0, failures + 1
                await self.event(
                    "Warning", "Unhealthy", f"{probe.kind.capitalize()} probe failed: {message}", state.name
                )
                if failures >= probe.failures:
                    if probe.kind == "readiness" and state.ready:
                        state.ready = False
                        self.changed()
                    elif probe.kind == "liveness":
                        await self._kill_for_restart(state, running, container, "liveness")
                        return
            await asyncio.sleep(probe.period)

    async def _kill_for_restart(
        self, state: ContainerState, running: runtime.Running, container: Obj, kind: str
    ) -> None:
        await self.event(
            "Normal", "Killing", f"Container {state.name} failed {kind} probe, will be restarted", state.name
        )
        grace = (container.get(f"{kind}Probe") or {}).get("terminationGracePeriodSeconds")
        if grace is None:
            grace = self.pod.get("spec", {}).get("terminationGracePeriodSeconds", 30)
        await runtime.terminate(running, float(grace))

    async def _probe_once(self, probe: Probe, running: runtime.Running, container: Obj) -> tuple[bool, str]:
        body = probe.spec
        try:
            if "exec" in body:
                argv, env = runtime.exec_argv(running, list(body["exec"].get("command") or []))
                proc = await asyncio.create_subprocess_exec(
                    *argv,
                    env=env,
                    stdout=asyncio.subprocess.PIPE,
                    stderr=asyncio.subprocess.STDOUT,
                    stdin=asyncio.subprocess.DEVNULL,
                    start_new_session=True,
                    preexec_fn=default_signals,
                )
                try:
                    out, _ = await asyncio.wait_for(proc.communicate(), timeout=probe.timeout)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(proc.pid, 9)
                    await proc.wait()
                    return (
                        False,
                        f'command timed out: "{" ".join(body["exec"].get("command") or [])}" '
                        f"timed out after {probe.timeout:g}s",
                    )
                text = out.decode(errors="replace")
                return proc.returncode == 0, text
            if "httpGet" in body:
                get = body["httpGet"]
                port = spec.container_port(self.pod, container, get["port"])
                host = get.get("host") or self.pod_ip
                scheme = get.get("scheme", "HTTP").lower()
                url = f"{scheme}://{host}:{port}{get.get('path', '/')}"
                headers = {h["name"]: h["value"] for h in get.get("httpHeaders") or []}
                headers.setdefault("User-Agent", f"kube-probe/{self.kubelet.kube_minor}")
                timeout = aiohttp.ClientTimeout(total=probe.timeout)
                try:
                    async with (
                        aiohttp.ClientSession(timeout=timeout) as session,
                        session.get(url, headers=headers, ssl=False, allow_redirects=True) as resp,
                    ):
                        await resp.read()
                        if 200 <= resp.status < 400:
                            return True, ""
                        return False, f"HTTP probe failed with statuscode: {resp.status}"
                except TimeoutError:
                    return (
                        False,
                        f'Get "{url}": context deadline exceeded '
                        "(Client.Timeout exceeded while awaiting headers)",
                    )
                except (aiohttp.ClientError, OSError) as exc:
                    return False, f'Get "{url}": dial tcp {host}:{port}: connect: {_reason(exc)}'
            if "tcpSocket" in body:
                port = spec.container_port(self.pod, container, body["tcpSocket"]["port"])
                host = body["tcpSocket"].get("host") or self.pod_ip
                try:
                    _r, w = await asyncio.wait_for(asyncio.open_connection(host, port), timeout=probe.timeout)
                    w.close()
                    return True, ""
                except TimeoutError:
                    return False, f"dial tcp {host}:{port}: i/o timeout"
                except OSError as exc:
                    return False, f"dial tcp {host}:{port}: connect: {_reason(exc)}"
        except LookupError as exc:
            return False, str(exc)
        return False, "unknown probe handler"

    # --- termination --------------------------------------------------------------------------------
    def stop(self) -> None:
        self.stopping.set()

    async def _teardown(self) -> None:
        grace = float(
            self.pod.get("metadata", {}).get("deletionGracePeriodSeconds")
            or self.pod.get("spec", {}).get("terminationGracePeriodSeconds", 30)
        )
        kills = []
        for name, running in list(self.running.items()):
            await self.event("Normal", "Killing", f"Stopping container {name}", name)
            kills.append(runtime.terminate(running, grace))
        await asyncio.gather(*kills, return_exceptions=True)
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, timeout=5)
        if self.sandbox is not None:
            await runtime.stop_sandbox(self.sandbox)
            shutil.rmtree(self.sandbox.run_dir, ignore_errors=True)
        self.kubelet.network.release(self.uid)
        shutil.rmtree(PODS_DIR / self.uid, ignore_errors=True)


def _reason(exc: BaseException) -> str:
    """Go's wording for a failed dial (syscall.Errno's text)."""
    error = getattr(exc, "os_error", None) or exc
    code = getattr(error, "errno", None)
    words = {
        errno.ECONNREFUSED: "connection refused",
        errno.EHOSTUNREACH: "no route to host",
        errno.ENETUNREACH: "network is unreachable",
        errno.ETIMEDOUT: "i/o timeout",
        errno.ECONNRESET: "connection reset by peer",
    }
    if code in words:
        return words[code]
    text = str(error).lower()
    return "connection refused" if "refused" in text else str(error)


def _go_duration(seconds: float) -> str:
    s = int(seconds)
    if s >= 60:
        m, r = divmod(s, 60)
        return f"{m}m{r}s"
    return f"{s}s"


def write_projection(path: Path, data: dict[str, str], items: list[Obj] | None, mode: int) -> None:
    """A configMap/secret volume as the kubelet's atomic writer leaves it: ``..<timestamp>/`` with the files,
    ``..data`` pointing at it, and one symlink per top-level entry."""
    path.mkdir(parents=True, exist_ok=True)
    os.chmod(path, 0o777)
    files: dict[str, tuple[str, int]] = {}
    if items:
        for item in items:
            if item["key"] not in data:
                raise ConfigError(f"configmap references non-existent config key: {item['key']}")
            files[item["path"]] = (data[item["key"]], int(item.get("mode", mode)))
    else:
        files = {k: (v, mode) for k, v in data.items()}
    stamp = "..{}".format(dt.datetime.now(dt.UTC).strftime("%Y_%m_%d_%H_%M_%S.%f"))
    new = path / stamp
    new.mkdir()
    for rel, (text, fmode) in files.items():
        target = new / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        os.chmod(target, fmode)
    tmp = path / "..data_tmp"
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    tmp.symlink_to(stamp)
    old = os.readlink(path / "..data") if (path / "..data").is_symlink() else None
    os.replace(tmp, path / "..data")
    for top in {rel.split("/", 1)[0] for rel in files}:
        link = path / top
        if not link.is_symlink():
            link.symlink_to(f"..data/{top}")
    if old:
        shutil.rmtree(path / old, ignore_errors=True)


def decode_secret(obj: Obj) -> dict[str, str]:
    return {k: base64.b64decode(v).decode(errors="replace") for k, v in (obj.get("data") or {}).items()}


Lookup = Callable[[str, str, str], Awaitable[dict[str, str] | None]]
_ = json
