"""Pod sandboxes and containers as processes on the node, with unprivileged namespaces (the test hosts, like
the lab's VMs, give K3s no CAP_SYS_ADMIN outside a user namespace).

- Sandbox (the pause container): ``unshare --user --net --uts --ipc sleep infinity``; the kubelet maps the
  user namespace one to one (uids 0-65535 are the node's), so ``runAsUser`` is a real uid on the node and
  files the pod writes on its volumes belong to it. The network namespace gets the pod's veth
  (``network.py``).
- Container: ``nsenter`` into the sandbox's namespaces, ``unshare --mount``, then a root filesystem built in a
  tmpfs as containerd's overlayfs snapshotter would give it: the node's ``/usr`` through an overlay with a
  writable layer (the lab's images are the node's own userland, ``spec.resolve_image``), a copy of ``/etc``
  without the node's K3s and SSH secrets, fresh ``/tmp``, ``/var``, ``/root``, ``/run``, ``/home``, ``/opt``,
  ``/dev`` with the usual devices and a private devpts, the node's ``/proc`` and ``/sys``, the pod's
  ``/etc/hosts``, ``/etc/resolv.conf`` and ``/etc/hostname``, the image's files (the ``ollama`` CLI, the
  python3 paths), the volumes at their mountPaths; then ``chroot`` and ``setpriv`` to the container's user.

Not enforced (README): PID namespaces (podman masks parts of the test hosts' /proc, and a kernel refuses a new
procfs under such a mount, so containers see the node's processes), seccomp profiles, cgroup limits (no
writable cgroup tree in a test host), capabilities of root containers beyond the user namespace's."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
from dataclasses import dataclass, field
from pathlib import Path

import gorkheavy_lab

from ..stream.process import default_signals
from .spec import Image

UID_MAP = "0 0 65536\n"
CODE_IN_IMAGE = "/usr/lib/ollama/k3s-standin"  # where the ollama image gets the stand-in's code
SECRET_ETC = ("rancher", "ssh", "shadow", "gshadow", "shadow-", "gshadow-", "sudoers.d")
FRESH_DIRS = ("proc", "sys", "dev", "tmp", "var/tmp", "var/log", "root", "run", "home", "opt", "srv", "mnt")
DEVICES = ("null", "zero", "full", "random", "urandom", "tty")


def code_root() -> Path:
    """The sys.path entry holding ``gorkheavy_lab``: the k3s zipapp on a node, ``app/`` in a checkout."""
    return Path(gorkheavy_lab.__file__).resolve().parent.parent


def ollama_launcher() -> str:
    """``/usr/bin/ollama``: the CLI module without the package's ``__init__`` (which loads the server and
    aiohttp), so that ``ollama show`` in a probe starts in a fraction of a second, as the Go binary does."""
    return (
        "#!/usr/bin/python3\n"
        "import sys, types\n"
        f"root = {CODE_IN_IMAGE!r}\n"
        "for name, path in (('gorkheavy_lab', root + '/gorkheavy_lab'),\n"
        "                   ('gorkheavy_lab.ollama', root + '/gorkheavy_lab/ollama')):\n"
        "    module = types.ModuleType(name)\n"
        "    module.__path__ = [path]\n"
        "    sys.modules[name] = module\n"
        "from gorkheavy_lab.ollama.cli import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )


@dataclass
class Mount:
    source: str
    target: str  # in the container
    read_only: bool = False
    is_file: bool = False


@dataclass
class User:
    uid: int | None = None
    gid: int | None = None
    groups: tuple[int, ...] = ()
    no_new_privs: bool = False
    drop_caps: bool = False


@dataclass
class Sandbox:
    pod_uid: str
    process: asyncio.subprocess.Process
    run_dir: Path

    @property
    def pid(self) -> int:
        return int(self.process.pid)


@dataclass
class Running:
    """A started container: its init process and the argv/env that exec into it."""

    process: asyncio.subprocess.Process
    env: dict[str, str]
    workdir: str
    user: User
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def run_command(*argv: str) -> tuple[int, str]:
    """Run a node command to its end: (exit status, its output)."""
    proc = await asyncio.create_subprocess_exec(
        *argv,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    return int(proc.returncode or 0), out.decode(errors="replace").strip()


class RuntimeError_(Exception):
    """A sandbox or container that could not be created (the kubelet's CreateContainerError etc.)."""


async def start_sandbox(pod_uid: str, hostname: str, run_root: Path) -> Sandbox:
    run_dir = run_root / pod_uid
    run_dir.mkdir(parents=True, exist_ok=True)
    proc = await asyncio.create_subprocess_exec(
        "unshare",
        "--user",
        "--net",
        "--uts",
        "--ipc",
        "--",
        "sleep",
        "infinity",
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    sandbox = Sandbox(pod_uid, proc, run_dir)
    (run_dir / "sandbox.pid").write_text(f"{proc.pid}\n")
    # the user namespace exists once unshare has exec'd sleep: its /proc/PID/exe is then sleep's
    for _ in range(200):
        try:
            if os.readlink(f"/proc/{proc.pid}/ns/user") != os.readlink("/proc/self/ns/user") and (
                os.path.basename(os.readlink(f"/proc/{proc.pid}/exe")) == "sleep"
            ):
                break
        except OSError:
            pass
        if proc.returncode is not None:
            break
        await asyncio.sleep(0.01)
    if proc.returncode is not None:
        err = (await proc.stderr.read()).decode(errors="replace").strip() if proc.stderr else ""
        raise RuntimeError_(f"failed to create pod sandbox: {err or 'unshare exited'}")
    try:
        _write_maps(proc.pid)
    except OSError as exc:
        await stop_sandbox(sandbox)
        raise RuntimeError_(f"failed to create pod sandbox: writing the user namespace map: {exc}") from exc
    # no sethostname: the test hosts' seccomp profile refuses it without CAP_SYS_ADMIN (README)
    del hostname
    code, out = await run_command(*enter(sandbox.pid, net=True), "ip", "link", "set", "lo", "up")
    if code != 0:
        await stop_sandbox(sandbox)
        raise RuntimeError_(f"failed to set up pod sandbox: {out}")
    return sandbox


def read_text(path: str) -> str:
    """A small node file (sysctl, resolv.conf), empty when it cannot be read."""
    try:
        with open(path) as fh:
            return fh.read()
    except OSError:
        return ""


def _write_maps(pid: int) -> None:
    """One to one: uid/gid N in the pod is N on the node (the kubelet has CAP_SETUID/SETGID outside)."""
    for kind in ("uid_map", "gid_map"):
        with open(f"/proc/{pid}/{kind}", "w") as fh:
            fh.write(UID_MAP)


def enter(
    pid: int, *, net: bool = False, uts: bool = False, ipc: bool = False, mount: bool = False
) -> list[str]:
    argv = ["nsenter", "-t", str(pid), "-U"]
    argv += ["-n"] if net else []
    argv += ["-u"] if uts else []
    argv += ["-i"] if ipc else []
    argv += ["-m", "-r", "-w"] if mount else []
    return [*argv, "--"]


async def stop_sandbox(sandbox: Sandbox) -> None:
    with contextlib.suppress(ProcessLookupError):
        sandbox.process.kill()
    with contextlib.suppress(Exception):
        await sandbox.process.wait()


def setup_script(
    root: str,
    *,
    image: Image,
    mounts: list[Mount],
    pod_files: dict[str, str],
    user: User,
    read_only: bool,
    workdir: str,
) -> str:
    """The shell script (run as root of the pod's user namespace, in the container's fresh mount namespace)
    that builds the root filesystem, chroots and becomes the container's user; ``"$@"`` is the argv."""
    q = shlex.quote
    r = q(root)
    lines = [
        "set -e",
        # the node's tools by their paths, whatever PATH the container's environment has (restored below)
        '__kubelet_path="${PATH-}"; __kubelet_had="${PATH+x}"; export PATH=/usr/sbin:/usr/bin:/sbin:/bin',
        f"mount -t tmpfs -o mode=0755 tmpfs {r}",
        f"mkdir -p {r}/.layer/usr/u {r}/.layer/usr/w {r}/usr",
        f"mount -t overlay overlay -o lowerdir=/usr,upperdir={r}/.layer/usr/u,"
        f"workdir={r}/.layer/usr/w,userxattr {r}/usr",
        f"cp -a /etc {r}/etc",
        "cd " + r + "/etc && rm -rf " + " ".join(q(p) for p in SECRET_ETC),
        "cd /",
    ]
    for link in ("bin", "lib", "lib64", "sbin", "lib32", "libx32"):
        lines.append(f'if [ -L /{link} ]; then ln -s "$(readlink /{link})" {r}/{link}; fi')
    lines.append("mkdir -p " + " ".join(f"{r}/{d}" for d in FRESH_DIRS))
    lines.append(f"chmod 1777 {r}/tmp {r}/var/tmp")
    lines.append(f"mount --rbind /proc {r}/proc")
    lines.append(f"mount --rbind /sys {r}/sys")
    lines.append(f"mount -t tmpfs -o mode=0755,nosuid tmpfs {r}/dev")
    for dev in DEVICES:
        lines.append(f"touch {r}/dev/{dev} && mount --bind /dev/{dev} {r}/dev/{dev}")
    lines.append(f"mkdir -p {r}/dev/pts {r}/dev/shm && chmod 1777 {r}/dev/shm")
    lines.append(
        f"mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts {r}/dev/pts"
        f" && ln -s pts/ptmx {r}/dev/ptmx"
    )
    lines.append(
        f"ln -s /proc/self/fd {r}/dev/fd && ln -s /proc/self/fd/0 {r}/dev/stdin"
        f" && ln -s /proc/self/fd/1 {r}/dev/stdout && ln -s /proc/self/fd/2 {r}/dev/stderr"
    )
    if image.kind == "ollama":
        code = code_root()
        kind = "touch" if code.is_file() else "mkdir -p"
        lines.append(f"mkdir -p {r}/usr/lib/ollama && {kind} {r}{CODE_IN_IMAGE}")
        lines.append(f"mount --bind {q(str(code))} {r}{CODE_IN_IMAGE}")
        lines.append(f"cat > {r}/usr/bin/ollama <<'OLLAMA'\n{ollama_launcher()}OLLAMA")
        lines.append(f"chmod 0755 {r}/usr/bin/ollama")
    elif image.kind == "python":
        lines.append(f"mkdir -p {r}/usr/local/bin")
        for name in ("python3", "python", "python3.11"):
            lines.append(f"ln -sf /usr/bin/python3.11 {r}/usr/local/bin/{name}")
    for target, source in pod_files.items():
        lines.append(f"touch {r}{q(target)} && mount --bind {q(source)} {r}{q(target)}")
    for m in mounts:
        target = r + q(m.target)
        make = f'mkdir -p "$(dirname {target})" && touch {target}' if m.is_file else f"mkdir -p {target}"
        lines.append(f"{make} && mount --bind {q(m.source)} {target}")
        if m.read_only:
            lines.append(f"mount -o remount,bind,ro {target}")
    if read_only:
        lines.append(f"mount -o remount,bind,ro {r}/usr && mount -o remount,bind,ro {r}")
    lines.append(f"cd {r}")
    priv = ["/usr/bin/setpriv"]
    if user.uid is not None:
        priv.append(f"--reuid={user.uid}")
    if user.gid is not None:
        priv.append(f"--regid={user.gid}")
    if user.groups:
        priv.append("--groups=" + ",".join(str(g) for g in user.groups))
    elif user.uid is not None or user.gid is not None:
        priv.append("--clear-groups")
    if user.no_new_privs:
        priv.append("--no-new-privs")
    if user.drop_caps:
        priv += ["--inh-caps=-all", "--bounding-set=-all"]
    inner = " ".join(q(p) for p in priv) + f' -- /usr/bin/env -C {q(workdir or "/")} -- "$@"'
    lines.append('if [ -n "$__kubelet_had" ]; then export PATH="$__kubelet_path"; else unset PATH; fi')
    lines.append(f"exec /usr/sbin/chroot {r} {inner}")
    return "\n".join(lines) + "\n"


async def start_container(
    sandbox: Sandbox,
    *,
    name: str,
    attempt: int,
    image: Image,
    argv: list[str],
    env: dict[str, str],
    mounts: list[Mount],
    pod_files: dict[str, str],
    user: User,
    read_only: bool,
    workdir: str,
) -> Running:
    root = sandbox.run_dir / f"{name}-{attempt}" / "rootfs"
    root.mkdir(parents=True, exist_ok=True)
    script = setup_script(
        str(root),
        image=image,
        mounts=mounts,
        pod_files=pod_files,
        user=user,
        read_only=read_only,
        workdir=workdir or image.workdir,
    )
    proc = await asyncio.create_subprocess_exec(
        *enter(sandbox.pid, net=True, uts=True, ipc=True),
        "unshare",
        "--mount",
        "--",
        "/bin/sh",
        "-c",
        script,
        "sh",
        *argv,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
        start_new_session=True,
        preexec_fn=default_signals,
    )
    (root.parent / "init.pid").write_text(f"{proc.pid}\n")
    return Running(proc, env, workdir or image.workdir, user)


def reap_orphans(run_root: Path) -> list[str]:
    """Kill the sandboxes and containers a previous kubelet left (this stand-in has no containerd that would
    keep them across a restart: the pods start again); returns their pod uids."""
    uids: list[str] = []
    if not run_root.is_dir():
        return uids
    for pod_dir in run_root.iterdir():
        for pid_file in [*pod_dir.glob("*/init.pid"), pod_dir / "sandbox.pid"]:
            with contextlib.suppress(OSError, ValueError):
                os.killpg(int(pid_file.read_text().strip()), signal.SIGKILL)
        uids.append(pod_dir.name)
        shutil.rmtree(pod_dir, ignore_errors=True)
    return uids


def exec_argv(running: Running, argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """The argv/env that run ``argv`` inside the running container (its namespaces, root, cwd, user)."""
    priv = ["/usr/bin/setpriv"]
    if running.user.uid is not None:
        priv.append(f"--reuid={running.user.uid}")
    if running.user.gid is not None:
        priv.append(f"--regid={running.user.gid}")
    if running.user.groups:
        priv.append("--groups=" + ",".join(str(g) for g in running.user.groups))
    elif running.user.uid is not None or running.user.gid is not None:
        priv.append("--clear-groups")
    if running.user.no_new_privs:
        priv.append("--no-new-privs")
    pid = int(running.process.pid)
    full = [*enter(pid, net=True, uts=True, ipc=True, mount=True), *priv, "--", *argv]
    return full, dict(running.env)


async def terminate(running: Running, grace: float) -> None:
    """SIGTERM, then SIGKILL after the grace period, as the CRI StopContainer with a timeout."""
    proc = running.process
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(running.done.wait(), timeout=max(grace, 0.0))
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await running.done.wait()
