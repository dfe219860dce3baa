"""What an operator checks after the prepare stage.

Log-in methods, sshd's effective settings, the admin user and sudo. Log-in attempts are made for real,
from the controller to the host's bridge address, with the system ssh client.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

ADMIN = "k3sadmin"
RUN_DIR = Path(os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "/nonexistent"))
CONTROLLER_KEY = RUN_DIR / "id_ed25519"
STALE_KEY = RUN_DIR / "stale_ed25519"
REVOKED_KEY = RUN_DIR / "revoked_ed25519"
MODERN_KEX = {
    "sntrup761x25519-sha512",
    "sntrup761x25519-sha512@openssh.com",
    "curve25519-sha256",
    "curve25519-sha256@libssh.org",
    "diffie-hellman-group18-sha512",
    "diffie-hellman-group16-sha512",
    "diffie-hellman-group-exchange-sha256",
}
MODERN_CIPHERS = {
    "chacha20-poly1305@openssh.com",
    "aes256-gcm@openssh.com",
    "aes128-gcm@openssh.com",
    "aes256-ctr",
    "aes192-ctr",
    "aes128-ctr",
}
MODERN_MACS = {"hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "umac-128-etm@openssh.com"}
CLIENT_OPTIONS = [
    "-o", "StrictHostKeyChecking=no",
    "-o", "UserKnownHostsFile=/dev/null",
    "-o", "LogLevel=ERROR",
    "-o", "ControlMaster=no",
    "-o", "ControlPath=none",
    "-o", "ConnectTimeout=30",
]  # fmt: skip


def _address(host) -> str:
    return str(host.ansible.get_variables()["ansible_host"])


def _is_agent(host) -> bool:
    return "k3s_agents" in host.ansible.get_variables().get("group_names", [])


def _ssh_with_key(
    address: str, user: str, key: Path, command: str = "id -un"
) -> subprocess.CompletedProcess[str]:
    argv = [
        "ssh", *CLIENT_OPTIONS,
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "PreferredAuthentications=publickey",
        "-i", str(key), "-l", user, address, command,
    ]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)


def _ssh_with_password(address: str, user: str, password: str) -> subprocess.CompletedProcess[str]:
    argv = [
        "sshpass", "-e", "ssh", *CLIENT_OPTIONS,
        "-o", "PubkeyAuthentication=no",
        "-o", "PreferredAuthentications=password,keyboard-interactive",
        "-l", user, address, "true",
    ]  # fmt: skip
    env = {**os.environ, "SSHPASS": password}
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False, env=env)


@pytest.fixture(scope="module")
def admin_password() -> str:
    return (RUN_DIR / "admin_password").read_text().strip()


def _sshd_settings(host) -> dict[str, list[str]]:
    out = host.check_output("sudo -n /usr/sbin/sshd -T")
    settings: dict[str, list[str]] = {}
    for line in out.splitlines():
        key, _, value = line.partition(" ")
        settings.setdefault(key, []).append(value)
    return settings


def test_password_login_is_refused(host, admin_password):
    result = _ssh_with_password(_address(host), ADMIN, admin_password)
    assert result.returncode != 0, "password log-in still works"
    # sshd no longer offers password or keyboard-interactive authentication at all.
    assert "Permission denied (publickey)" in result.stderr, result.stderr


def test_admin_logs_in_with_the_controller_key(host):
    result = _ssh_with_key(_address(host), ADMIN, CONTROLLER_KEY)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ADMIN


def test_stale_key_no_longer_logs_in(host):
    result = _ssh_with_key(_address(host), ADMIN, STALE_KEY)
    assert result.returncode == 255
    assert "Permission denied" in result.stderr
    keys = host.file(f"/home/{ADMIN}/.ssh/authorized_keys").content_string.split("\n")
    wanted = [CONTROLLER_KEY] + ([REVOKED_KEY] if _is_agent(host) else [])
    assert [k for k in keys if k.strip()] == [key.with_suffix(".pub").read_text().strip() for key in wanted]


def test_stale_key_in_authorized_keys2_is_refused(host):
    # The fresh VM had the stale key in authorized_keys2 as well, which sshd reads by default and nothing
    # manages.
    assert (
        STALE_KEY.with_suffix(".pub").read_text().strip()
        in host.file(f"/home/{ADMIN}/.ssh/authorized_keys2").content_string
    )
    assert _sshd_settings(host)["authorizedkeysfile"] == [".ssh/authorized_keys"]
    result = _ssh_with_key(_address(host), ADMIN, STALE_KEY, "sudo -n id -un")
    assert result.returncode == 255, result.stdout
    assert "Permission denied (publickey)" in result.stderr


def test_a_revoked_key_is_refused_although_it_is_authorized(host):
    if not _is_agent(host):
        pytest.skip("only the agent lists a revoked key")
    revoked = REVOKED_KEY.with_suffix(".pub").read_text().strip()
    assert revoked in host.file(f"/home/{ADMIN}/.ssh/authorized_keys").content_string
    assert revoked in host.file("/etc/ssh/revoked_keys").content_string
    result = _ssh_with_key(_address(host), ADMIN, REVOKED_KEY)
    assert result.returncode == 255, result.stdout
    assert "Permission denied (publickey)" in result.stderr


def test_root_login_follows_the_setting(host):
    # Root has had the controller's key since the host was created.
    result = _ssh_with_key(_address(host), "root", CONTROLLER_KEY)
    if _is_agent(host):
        assert result.returncode == 0, f"prohibit-password must allow root with a key: {result.stderr}"
        assert result.stdout.strip() == "root"
    else:
        assert result.returncode == 255
        assert "Permission denied" in result.stderr


def test_sshd_uses_the_hardened_settings(host):
    settings = _sshd_settings(host)
    assert settings["passwordauthentication"] == ["no"]
    assert settings["kbdinteractiveauthentication"] == ["no"]
    assert settings["pubkeyauthentication"] == ["yes"]
    assert settings["permitemptypasswords"] == ["no"]
    assert settings["hostbasedauthentication"] == ["no"]
    assert settings["ignorerhosts"] == ["yes"]
    assert settings["authenticationmethods"] == ["publickey"]
    assert settings["permitrootlogin"] == (["without-password"] if _is_agent(host) else ["no"])
    assert settings["maxauthtries"] == ["2"]
    assert settings["logingracetime"] == ["30"]
    assert settings["x11forwarding"] == ["no"]
    assert settings["allowtcpforwarding"] == ["no"]
    assert settings["allowagentforwarding"] == ["no"]
    kex = settings["kexalgorithms"][0].split(",")
    assert set(kex) <= MODERN_KEX, kex
    assert "sntrup761x25519-sha512@openssh.com" in kex
    assert set(settings["ciphers"][0].split(",")) <= MODERN_CIPHERS
    assert set(settings["macs"][0].split(",")) <= MODERN_MACS
    if _is_agent(host):
        assert sorted(settings["allowusers"]) == ["k3sadmin", "root"]
    else:
        assert "allowusers" not in settings
    # Throttling, keep-alive, compression, environment, sftp.
    assert settings["maxstartups"] == ["10:30:60"]
    assert settings["persourcemaxstartups"] == ["4"]
    assert settings["tcpkeepalive"] == ["no"]
    assert settings["compression"] == ["no"]
    assert "acceptenv" not in settings
    assert settings["subsystem"] == ["sftp internal-sftp -f AUTHPRIV -l INFO"]
    assert settings["revokedkeys"] == ["/etc/ssh/revoked_keys"]
    # Host keys and signatures: ed25519 and rsa-sha2 only, RSA keys of at least 3072 bits.
    assert sorted(settings["hostkey"]) == ["/etc/ssh/ssh_host_ed25519_key", "/etc/ssh/ssh_host_rsa_key"]
    assert settings["hostkeyalgorithms"] == ["ssh-ed25519,rsa-sha2-512,rsa-sha2-256"]
    for key in ("pubkeyacceptedalgorithms", "casignaturealgorithms"):
        algorithms = settings[key][0].split(",")
        assert all(a.startswith(("ssh-ed25519", "sk-ssh-ed25519", "rsa-sha2-")) for a in algorithms), (
            algorithms
        )
    assert settings["requiredrsasize"] == ["3072"]


def test_only_ed25519_and_a_4096_bit_rsa_host_key_are_left(host):
    with host.sudo():
        keys = sorted(host.check_output("ls /etc/ssh").split())
        rsa = host.check_output("ssh-keygen -l -f /etc/ssh/ssh_host_rsa_key.pub").split()
    assert [k for k in keys if k.startswith("ssh_host_")] == [
        "ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "ssh_host_rsa_key", "ssh_host_rsa_key.pub",
    ]  # fmt: skip
    assert rsa[0] == "4096"
    assert rsa[-1] == "(RSA)"


def test_only_moduli_of_3072_bits_or_more_are_left(host):
    sizes = {int(line.split()[4]) for line in host.file("/etc/ssh/moduli").content_string.splitlines()
             if line[:1].isdigit()}  # fmt: skip
    assert sizes, "no moduli left: the group exchange would not be offered"
    assert min(sizes) >= 3071, sorted(sizes)


def _audit_policy(host) -> str:
    """ssh-audit's built-in hardening policy for the host's system."""
    release = {
        key: value.strip('"')
        for key, _, value in (
            line.partition("=") for line in host.file("/etc/os-release").content_string.splitlines()
        )
    }
    policies = {
        ("debian", "12"): "Hardened Debian 12 (version 3)",
        ("ubuntu", "22.04"): "Hardened Ubuntu Server 22.04 LTS (version 6)",
        ("ubuntu", "24.04"): "Hardened Ubuntu Server 24.04 LTS (version 2)",
    }
    return policies[(release["ID"], release["VERSION_ID"])]


def test_ssh_audit_passes_the_hardening_policy_for_the_system(host):
    policy = _audit_policy(host)
    argv = [sys.executable, "-m", "ssh_audit", "--skip-rate-test", "-j", "-P", policy, _address(host)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    report = json.loads(done.stdout)
    assert report["policy"] == policy
    assert report["passed"] is True, json.dumps(report["errors"], indent=1)
    assert done.returncode == 0, done.stderr


def test_sshd_refuses_unauthenticated_connections_past_the_per_source_limit(host):
    """With ufw off, sshd's own start-up limit holds: from one address at most PerSourceMaxStartups (4)
    connections may wait unauthenticated; the next ones are dropped at once."""
    limit, extra = 4, 3
    connections = []
    try:
        for _ in range(limit + extra):
            conn = socket.create_connection((_address(host), 22), timeout=30)
            connections.append(conn)
            # Each connection has its sshd child before the next one comes, so the order is the one of accept.
            time.sleep(0.2)
        answers = [conn.recv(64) for conn in connections]
    finally:
        for conn in connections:
            conn.close()
    assert all(a.startswith(b"SSH-2.0-OpenSSH_") for a in answers[:limit]), answers
    assert answers[limit:] == [b"Exceeded MaxStartups\r\n"] * extra, answers


def test_admin_password_is_locked(host):
    with host.sudo():
        status = host.check_output(f"passwd -S {ADMIN}").split()
    assert status[1] == "L", status
    # Key log-in and passwordless sudo still work (this test runs as the admin user over SSH).
    assert host.check_output("sudo -n id -un") == "root"


def test_hardening_dropin_is_read_first_and_beats_cloud_init(host):
    # Editing sshd_config keeps its owner and mode.
    assert host.file("/etc/ssh/sshd_config").mode == 0o644
    assert host.file("/etc/ssh/sshd_config").user == "root"
    main = host.file("/etc/ssh/sshd_config").content_string
    assert "Include /etc/ssh/sshd_config.d/*.conf" in main
    dropins = sorted(
        host.check_output("sudo -n find /etc/ssh/sshd_config.d -name '*.conf' -printf '%f\\n'").split()
    )
    assert dropins[0] == "00-gorkheavy.conf"
    # The fresh-VM drop-in is still there, but its conflicting line is commented out, as are sshd_config's:
    # the
    # settings hold even if a file sorted before the drop-in.
    assert "50-cloud-init.conf" in dropins
    cloud_init = host.check_output("sudo -n cat /etc/ssh/sshd_config.d/50-cloud-init.conf").splitlines()
    assert cloud_init == ["#gorkheavy-ssh-hardening# PasswordAuthentication yes"]
    main_lines = main.splitlines()
    for line in ("X11Forwarding yes", "AcceptEnv LANG LC_*", "Subsystem\tsftp\t/usr/lib/openssh/sftp-server"):
        assert "#gorkheavy-ssh-hardening# " + line in main_lines
        assert line not in main_lines
    dropin = host.file("/etc/ssh/sshd_config.d/00-gorkheavy.conf")
    assert dropin.user == "root"
    assert dropin.mode == 0o644
    assert host.run("sudo -n /usr/sbin/sshd -t").rc == 0


def test_sshd_is_running_and_does_not_announce_the_distribution(host):
    assert host.service("ssh").is_running
    with socket.create_connection((_address(host), 22), timeout=30) as conn:
        banner = conn.recv(256).decode("ascii", "replace").strip()
    assert banner.startswith("SSH-2.0-OpenSSH_"), banner
    assert "Debian" not in banner
    assert "Ubuntu" not in banner


def test_admin_has_passwordless_sudo(host):
    # testinfra connects as the admin user; -n makes sudo fail instead of asking for a password.
    assert host.user().name == ADMIN
    assert host.check_output("sudo -n id -u") == "0"


def test_sudoers_file_is_valid_and_locked_down(host):
    path = "/etc/sudoers.d/gorkheavy-admin"
    with host.sudo():
        sudoers = host.file(path)
        assert sudoers.exists
        assert sudoers.user == "root"
        assert sudoers.group == "root"
        assert sudoers.mode == 0o440
        assert f"{ADMIN} ALL=(ALL:ALL) NOPASSWD: ALL" in sudoers.content_string
        check = host.run(f"visudo -cf {shlex.quote(path)}")
    assert check.rc == 0, check.stderr


def test_admin_user_account(host):
    user = host.user(ADMIN)
    assert user.exists
    assert user.shell == "/bin/bash"
    assert user.home == f"/home/{ADMIN}"
    ssh_dir = host.file(f"/home/{ADMIN}/.ssh")
    assert ssh_dir.mode == 0o700
    assert ssh_dir.user == ADMIN
