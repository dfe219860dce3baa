#!/usr/bin/python3
"""Inside a lab VM (a test host), at boot before sshd: apply the NoCloud seed of its cloud-init drive.

It reads ``/var/lib/cloud/seed/nocloud/{meta-data,user-data,network-config}`` exactly as qemu-server renders
them and does what cloud-init on an Ubuntu 24.04 cloud image does with those keys:

- every boot: the hostname (``/etc/hostname``) and ``manage_etc_hosts`` (``127.0.1.1 <fqdn> <hostname>``), the
  network (version 1 ``physical`` entries matched by MAC: static IPv4 address and gateway; ``dhcp4`` keeps the
  address the network handed out) and the nameservers and search domains (``/etc/resolv.conf``);
- once per instance (a new ``instance-id``, which Proxmox derives from the rendered config): new SSH host keys
  (``ssh_deletekeys``), the default user (``user:``, else ``ubuntu``) with Ubuntu's groups, shell, locked
  password unless ``password:`` is set, ``NOPASSWD:ALL`` in ``/etc/sudoers.d/90-cloud-init-users``, its
  ``ssh_authorized_keys`` (added to the existing ones), and root's keys wrapped in the "Please login as the
  user" command (``disable_root``).

At the end it writes ``/var/lib/cloud/instance/boot-finished`` and ``/run/cloud-init/result.json`` as
cloud-init's final stage does. ``package_upgrade`` is not applied (the lab has no package mirror). Python
3.11, PyYAML only.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import json
import os
import pwd
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

SEED = Path("/var/lib/cloud/seed/nocloud")
CLOUD = Path("/var/lib/cloud")
HANG_MARKER = Path("/etc/gorkheavy-lab/boot-hangs")
VERSION = "24.4.1-0ubuntu0~24.04.1"
DEFAULT_USER = "ubuntu"
DEFAULT_GROUPS = ("adm", "cdrom", "dip", "lxd", "sudo")
ROOT_COMMAND = (
    "no-port-forwarding,no-agent-forwarding,no-X11-forwarding,"
    'command="echo \'Please login as the user \\"{user}\\" rather than the user \\"root\\".\';'
    'echo;sleep 10;exit 142" '
)


def log(message: str) -> None:
    line = f"{datetime.datetime.now(datetime.UTC).isoformat(timespec='seconds')} - nocloud: {message}"
    print(line, flush=True)
    with contextlib.suppress(OSError), open("/var/log/cloud-init.log", "a", encoding="utf-8") as out:
        out.write(line + "\n")


def run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        log(f"{' '.join(argv)} failed: {result.stderr.strip()}")
    return result


def load(name: str) -> Any:
    path = SEED / name
    return yaml.safe_load(path.read_text(encoding="utf-8")) if path.exists() else None


def write(path: Path, content: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".nocloud-tmp")
    tmp.write_text(content, encoding="utf-8")
    os.chmod(tmp, mode)
    os.replace(tmp, path)


# -- every boot ---------------------------------------------------------------------------------------------


def apply_hostname(user_data: dict[str, Any]) -> None:
    hostname = str(user_data.get("hostname") or "")
    if not hostname:
        return
    fqdn = str(user_data.get("fqdn") or hostname)
    # /etc/hostname, /etc/hosts and /etc/resolv.conf are bind mounts of the container: rewritten in place
    Path("/etc/hostname").write_text(hostname + "\n", encoding="utf-8")
    if user_data.get("manage_etc_hosts") is True:
        hosts = Path("/etc/hosts")
        old = hosts.read_text(encoding="utf-8").splitlines()
        lines = [line for line in old if not line.startswith("127.0.1.1")]
        lines.append(f"127.0.1.1 {fqdn} {hostname}" if fqdn != hostname else f"127.0.1.1 {hostname}")
        hosts.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _links() -> dict[str, str]:
    """MAC address -> interface name."""
    out = run("ip", "-json", "link", "show").stdout
    return {str(link.get("address", "")).lower(): str(link["ifname"]) for link in json.loads(out or "[]")}


def apply_network(network: dict[str, Any]) -> None:
    links = _links()
    for entry in network.get("config") or []:
        kind = entry.get("type")
        if kind == "nameserver":
            lines = [f"nameserver {a}" for a in entry.get("address") or []]
            if entry.get("search"):
                lines.insert(0, "search " + " ".join(entry["search"]))
            if lines:
                Path("/etc/resolv.conf").write_text("\n".join(lines) + "\n", encoding="utf-8")
            continue
        if kind != "physical":
            continue
        ifname = links.get(str(entry.get("mac_address", "")).lower(), str(entry.get("name", "")))
        for subnet in entry.get("subnets") or []:
            if subnet.get("type") != "static":
                continue
            iface = ipaddress.IPv4Interface(f"{subnet['address']}/{subnet['netmask']}")
            current = json.loads(run("ip", "-json", "-4", "addr", "show", "dev", ifname).stdout or "[]")
            have = {f"{a['local']}/{a['prefixlen']}" for link in current for a in link.get("addr_info", [])}
            if iface.with_prefixlen not in have:
                was = ", ".join(sorted(have)) or "none"
                log(f"{ifname}: static address {iface.with_prefixlen} (was {was})")
                run("ip", "-4", "addr", "flush", "dev", ifname, "scope", "global")
                run("ip", "addr", "add", iface.with_prefixlen, "dev", ifname)
            gateway = subnet.get("gateway")
            if gateway:
                route = json.loads(run("ip", "-json", "-4", "route", "show", "default").stdout or "[]")
                if not any(r.get("gateway") == gateway for r in route):
                    log(f"{ifname}: default route via {gateway}")
                    run("ip", "route", "replace", "default", "via", str(gateway), "dev", ifname)


# -- once per instance --------------------------------------------------------------------------------------


def new_host_keys() -> None:
    for key in Path("/etc/ssh").glob("ssh_host_*key*"):
        key.unlink()
    run("ssh-keygen", "-A")
    log("generated new SSH host keys")


def _authorize(user: pwd.struct_passwd, keys: list[str]) -> None:
    ssh_dir = Path(user.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(ssh_dir, user.pw_uid, user.pw_gid)
    path = ssh_dir / "authorized_keys"
    existing = path.read_text(encoding="utf-8").splitlines() if path.exists() else []
    lines = existing + [k for k in keys if k not in existing]
    write(path, "".join(f"{line}\n" for line in lines), 0o600)
    os.chown(path, user.pw_uid, user.pw_gid)


def apply_user(user_data: dict[str, Any]) -> None:
    name = str(user_data.get("user") or DEFAULT_USER)
    keys = [str(k) for k in user_data.get("ssh_authorized_keys") or []]
    password = user_data.get("password")
    if name != "root":
        if "default" not in (user_data.get("users") or []):
            return
        for group in DEFAULT_GROUPS:
            if run("getent", "group", group, check=False).returncode != 0:
                run("groupadd", group)
                log(f"created group {group}")
        try:
            pwd.getpwnam(name)
            run("usermod", "--append", "--groups", ",".join(DEFAULT_GROUPS), name)
        except KeyError:
            run(
                "useradd", "--create-home", "--shell", "/bin/bash", "--comment", "Ubuntu",
                "--groups", ",".join(DEFAULT_GROUPS), name,
            )  # fmt: skip
            log(f"created the default user {name}")
        stamp = datetime.datetime.now(datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
        write(
            Path("/etc/sudoers.d/90-cloud-init-users"),
            f"# Created by cloud-init v. {VERSION} on {stamp}\n\n# User rules for {name}\n"
            f"{name} ALL=(ALL) NOPASSWD:ALL\n\n",
            0o440,
        )
    if password:
        text = str(password)
        if text.startswith("$"):
            run("usermod", "--password", text, name)
        else:
            subprocess.run(["chpasswd"], input=f"{name}:{text}\n", text=True, check=False)
        run("passwd", "--unlock", name, check=False)
    elif name != "root":
        run("passwd", "--lock", name, check=False)
    entry = pwd.getpwnam(name)
    if keys:
        _authorize(entry, keys)
        log(f"authorized {len(keys)} SSH key(s) for {name}")
    if name != "root" and keys and user_data.get("disable_root", True) is not False:
        _authorize(pwd.getpwnam("root"), [ROOT_COMMAND.format(user=name) + k for k in keys])


def main() -> int:
    if HANG_MARKER.exists() and HANG_MARKER.read_text(encoding="utf-8").strip() == "hang":
        log("the guest hangs at boot (the lab's boot-hang marker for this VM)")
        while True:
            time.sleep(3600)
    started = time.monotonic()
    meta = load("meta-data") or {}
    user_data = load("user-data") or {}
    network = load("network-config") or {}
    instance_id = str(meta.get("instance-id", "iid-datasource-none"))
    id_file = CLOUD / "data" / "instance-id"
    previous = id_file.read_text(encoding="utf-8").strip() if id_file.exists() else None
    log(f"instance-id {instance_id} (previous boot: {previous or 'none'})")
    errors: list[str] = []

    def step(name: str, func: Callable[[], None]) -> None:
        # as cloud-init, a module that fails is logged and the others still run
        try:
            func()
        except Exception as exc:
            errors.append(f"{name}: {exc}")
            log(f"{name} failed: {type(exc).__name__}: {exc}")

    step("network", lambda: apply_network(network))
    step("set_hostname", lambda: apply_hostname(user_data))
    instance = CLOUD / "instances" / instance_id
    instance.mkdir(parents=True, exist_ok=True)
    if previous != instance_id:
        step("ssh host keys", new_host_keys)
        step("users_groups", lambda: apply_user(user_data))
        write(id_file, instance_id + "\n")
    link = CLOUD / "instance"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(instance)
    uptime = Path("/proc/uptime").read_text(encoding="utf-8").split()[0]
    stamp = datetime.datetime.now(datetime.UTC).strftime("%a, %d %b %Y %H:%M:%S +0000")
    write(instance / "boot-finished", f"{uptime} - {stamp} - v. {VERSION}\n")
    result = {"v1": {"datasource": f"DataSourceNoCloud [seed={SEED}]", "errors": errors}}
    write(Path("/run/cloud-init/result.json"), json.dumps(result, indent=1) + "\n")
    log(f"finished in {time.monotonic() - started:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
