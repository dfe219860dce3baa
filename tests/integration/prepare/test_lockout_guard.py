"""The SSH lockout guard on a real systemd host, over real SSH.

The host starts like a fresh VM whose operator logs in with a password: the admin user has a
password and password sudo, and cloud-init's drop-in turns SSH password log-in on. The inventory
gives the admin user a public key that does not belong to the controller's private key, so the
guard's fresh key log-in must fail and the play must stop before sshd is changed. With the
matching key the same play hardens sshd.
"""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.hosts.systemd_host import REPO, SystemdHost, build_image

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

ADMIN = "k3sadmin"
GUARD_MESSAGE = "Lockout guard: refusing to turn password log-in off"
SSH_OPTIONS = "-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR"


def _keypair(directory: Path, name: str, kind: str = "ed25519", bits: str = "") -> Path:
    key = directory / name
    size = ["-b", bits] if bits else []
    subprocess.run(["ssh-keygen", "-q", "-t", kind, *size, "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


def _run_prepare(inventory: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        # New test hosts get removed ones' addresses: never reuse an SSH master connection across hosts.
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(inventory.parent / "ssh-control"),
        "ANSIBLE_CONFIG": str(REPO / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_HOST_KEY_CHECKING": "False",
        # The whole output of every run, for a look after a failure (the assertions show only its end).
        "ANSIBLE_LOG_PATH": str(inventory.parent / "ansible.log"),
        "ANSIBLE_CALLBACKS_ENABLED": "ansible.posix.profile_tasks",
    }
    return subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(REPO / "playbooks/prepare.yml"), *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=240,
        env=env,
        cwd=REPO,
    )


def _password_login(address: str, password: str) -> subprocess.CompletedProcess[str]:
    argv = ["sshpass", "-e", "ssh", *SSH_OPTIONS.split()]
    argv += ["-o", "PubkeyAuthentication=no", "-o", "PreferredAuthentications=password"]
    argv += [f"{ADMIN}@{address}", "id -un"]
    env = {**os.environ, "SSHPASS": password}
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120, env=env)


def _key_login(host: SystemdHost, key: Path, command: str) -> subprocess.CompletedProcess[str]:
    """A fresh key log-in as the admin user, the way an operator would try it."""
    argv = ["ssh", *SSH_OPTIONS.split(), "-o", "BatchMode=yes", "-o", "ControlPath=none", "-i", str(key)]
    argv += [f"{ADMIN}@{host.address}", command]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120)


def _sshd_state(host: SystemdHost) -> str:
    """sshd_config's checksum and the drop-ins present: what the guard must leave untouched."""
    return host.sh("sha256sum /etc/ssh/sshd_config; ls /etc/ssh/sshd_config.d").stdout


@pytest.fixture(scope="module")
def fresh_vm(tmp_path_factory):
    work = tmp_path_factory.mktemp("lockout")
    controller_key = _keypair(work, "controller")
    wrong_key = _keypair(work, "someone-else")
    password = secrets.token_urlsafe(18)
    build_image()
    host = SystemdHost.start("gorkheavy-lockout", controller_key.with_suffix(".pub"))
    try:
        host.sh(
            f"useradd --create-home --shell /bin/bash --groups sudo {ADMIN} && chpasswd"
            " && echo 'PasswordAuthentication yes' > /etc/ssh/sshd_config.d/50-cloud-init.conf"
            # Only 2048-bit moduli, as some images ship: the group exchange must then not be offered.
            " && awk '/^#/ || $5 < 3071' /etc/ssh/moduli > /tmp/moduli && mv /tmp/moduli /etc/ssh/moduli"
            " && systemctl reload ssh.service",
            stdin=f"{ADMIN}:{password}\n",
        )

        def inventory(*public_keys: Path) -> Path:
            path = work / f"inventory-{'-'.join(key.stem for key in public_keys)}.yml"
            host_vars = {
                "ansible_host": host.address,
                "ansible_user": ADMIN,
                "ansible_password": password,
                "ansible_become_password": password,
                "ansible_ssh_common_args": SSH_OPTIONS,
            }
            group_vars = {
                "gorkheavy_admin_user": ADMIN,
                "gorkheavy_ssh_public_keys": [key.read_text().strip() for key in public_keys],
                "gorkheavy_ssh_private_key_file": str(controller_key),
            }
            tree = {
                "all": {"children": {"k3s_cluster": {"hosts": {host.name: host_vars}, "vars": group_vars}}}
            }
            path.write_text(yaml.safe_dump(tree))
            return path

        yield {
            "host": host,
            "password": password,
            "controller_key": controller_key,
            "wrong_inventory": inventory(wrong_key.with_suffix(".pub")),
            "right_inventory": inventory(controller_key.with_suffix(".pub")),
            "weak_inventory": inventory(
                controller_key.with_suffix(".pub"),
                _keypair(work, "old-ecdsa", "ecdsa").with_suffix(".pub"),
                _keypair(work, "small-rsa", "rsa", "2048").with_suffix(".pub"),
            ),
        }
    finally:
        host.remove()


def test_password_login_works_on_the_fresh_vm(fresh_vm):
    result = _password_login(fresh_vm["host"].address, fresh_vm["password"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ADMIN


def test_check_mode_with_the_wrong_key_reports_the_guard_and_changes_nothing(fresh_vm):
    before = _sshd_state(fresh_vm["host"])
    result = _run_prepare(fresh_vm["wrong_inventory"], "--check", "--tags", "admin_user,ssh_hardening")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Lockout guard (check mode)" in result.stdout
    assert "A real run stops here" in result.stdout
    assert _sshd_state(fresh_vm["host"]) == before


def test_guard_stops_the_run_with_the_wrong_key_before_sshd_changes(fresh_vm):
    host = fresh_vm["host"]
    before = _sshd_state(host)
    result = _run_prepare(fresh_vm["wrong_inventory"])
    out = result.stdout
    assert result.returncode == 2, out[-3000:]
    # The play stopped at the guard, with the reason and the fix in the message.
    assert "TASK [gorkheavy.lite.ssh_hardening : Stop before sshd is changed" in out
    assert GUARD_MESSAGE in out
    assert "Permission denied (publickey" in out
    assert "sshd was not changed" in out
    assert "TASK [gorkheavy.lite.ssh_hardening : Put the hardening drop-in in place" not in out
    assert "gorkheavy.lite.swap" not in out.split("Stop before sshd is changed", 1)[1]
    # The admin user did get the (wrong) key: admin_user ran, the guard then caught the mismatch.
    assert "someone-else" in host.sh(f"cat /home/{ADMIN}/.ssh/authorized_keys").stdout
    # sshd is exactly as it was and still takes passwords.
    assert _sshd_state(host) == before
    assert "passwordauthentication yes" in host.sh("sshd -T").stdout.splitlines()
    login = _password_login(host.address, fresh_vm["password"])
    assert login.returncode == 0, login.stderr


def test_keys_the_hardened_sshd_would_refuse_are_named_before_anything_changes(fresh_vm):
    host = fresh_vm["host"]
    before = host.sh(f"cat /home/{ADMIN}/.ssh/authorized_keys; passwd -S {ADMIN}").stdout
    result = _run_prepare(fresh_vm["weak_inventory"], "--tags", "admin_user")
    assert result.returncode == 2, result.stdout[-3000:]
    flat = " ".join(result.stdout.split())
    assert "Fix admin_user_ssh_public_keys" in flat
    assert "old-ecdsa (ECDSA" in flat, flat[-2000:]
    assert "small-rsa (RSA 2048 bits" in flat, flat[-2000:]
    assert "under 3072 bits" in flat
    assert "controller (" not in flat
    assert host.sh(f"cat /home/{ADMIN}/.ssh/authorized_keys; passwd -S {ADMIN}").stdout == before


def test_with_the_matching_key_check_mode_passes_the_guard_and_changes_nothing(fresh_vm):
    host = fresh_vm["host"]
    before = _sshd_state(host) + host.sh(f"cat /home/{ADMIN}/.ssh/authorized_keys; ls /etc/sudoers.d").stdout
    result = _run_prepare(
        fresh_vm["right_inventory"], "--check", "--diff", "--tags", "admin_user,ssh_hardening"
    )
    assert result.returncode == 0, result.stdout[-3000:]
    # Check mode reports what it would do, and does none of it.
    assert "+PasswordAuthentication no" in result.stdout  # the drop-in's diff
    after = _sshd_state(host) + host.sh(f"cat /home/{ADMIN}/.ssh/authorized_keys; ls /etc/sudoers.d").stdout
    assert after == before


def test_with_the_matching_key_the_same_play_hardens_sshd(fresh_vm):
    host = fresh_vm["host"]
    result = _run_prepare(fresh_vm["right_inventory"], "--tags", "admin_user,ssh_hardening")
    assert result.returncode == 0, result.stdout[-3000:]
    assert GUARD_MESSAGE not in result.stdout
    assert "00-gorkheavy.conf" in host.sh("ls /etc/ssh/sshd_config.d").stdout
    assert "passwordauthentication no" in host.sh("sshd -T").stdout.splitlines()
    refused = _password_login(host.address, fresh_vm["password"])
    assert refused.returncode != 0
    assert "Permission denied (publickey)" in refused.stderr
    key_login = _key_login(host, fresh_vm["controller_key"], "sudo -n id -u")
    assert key_login.returncode == 0, key_login.stderr
    assert key_login.stdout.strip() == "0"
    # No modulus of 3072 bits or more was left, so sshd does not offer the group exchange at all (its built-in
    # fallback group would answer with 2048 bits).
    assert host.sh("grep -c '^[0-9]' /etc/ssh/moduli", check=False).stdout.strip() == "0"
    kex = [line for line in host.sh("sshd -T").stdout.splitlines() if line.startswith("kexalgorithms ")]
    assert kex, kex
    assert "diffie-hellman-group-exchange-sha256" not in kex[0], kex
    assert "curve25519-sha256" in kex[0]


def _dropin_and_backups(host: SystemdHost) -> str:
    return host.sh(
        "sha256sum /etc/ssh/sshd_config /etc/ssh/sshd_config.d/*; ls -a /etc/ssh/sshd_config.d"
    ).stdout


def test_a_change_that_breaks_key_login_after_the_reload_is_undone(fresh_vm):
    """aes128-cbc passes sshd -t, but the controller's ssh client offers no CBC cipher: after the reload no
    new connection can log in. The guard must notice, put the previous drop-in back and fail the play."""
    host = fresh_vm["host"]
    before = _dropin_and_backups(host)
    result = _run_prepare(
        fresh_vm["right_inventory"],
        "--tags",
        "admin_user,ssh_hardening",
        "-e",
        '{"ssh_hardening_ciphers": ["aes128-cbc"]}',
    )
    flat = " ".join(result.stdout.split())
    assert result.returncode == 2, result.stdout[-3000:]
    assert "Lockout guard: after sshd on" in flat, flat[-3000:]
    assert "could no longer log in" in flat
    assert (
        "The previous sshd configuration was put back and sshd reloaded; the admin user can log in again"
        in flat
    )
    # Exactly the previous files, no backup left behind, and sshd runs with them.
    assert _dropin_and_backups(host) == before
    assert "aes128-cbc" not in host.sh("sshd -T | grep ^ciphers").stdout
    key_login = _key_login(host, fresh_vm["controller_key"], "sudo -n id -un")
    assert key_login.returncode == 0, key_login.stderr
    assert key_login.stdout.strip() == "root"


@pytest.fixture(scope="module")
def root_only_vm(tmp_path_factory):
    """A fresh VM where only root has the controller's key and the admin user does not exist yet."""
    work = tmp_path_factory.mktemp("root-only")
    controller_key = _keypair(work, "controller")
    build_image()
    host = SystemdHost.start("gorkheavy-rootonly", controller_key.with_suffix(".pub"))
    try:
        host_vars = {
            "ansible_host": host.address,
            "ansible_user": "root",
            "ansible_ssh_private_key_file": str(controller_key),
            "ansible_ssh_common_args": SSH_OPTIONS,
            "ssh_hardening_permit_root_login": "prohibit-password",
        }
        group_vars = {
            "gorkheavy_admin_user": ADMIN,
            "gorkheavy_ssh_public_keys": [controller_key.with_suffix(".pub").read_text().strip()],
            "gorkheavy_ssh_private_key_file": str(controller_key),
        }
        inventory = work / "inventory.yml"
        tree = {"all": {"children": {"k3s_cluster": {"hosts": {host.name: host_vars}, "vars": group_vars}}}}
        inventory.write_text(yaml.safe_dump(tree))
        yield {"host": host, "inventory": inventory, "controller_key": controller_key}
    finally:
        host.remove()


def test_check_mode_on_a_host_without_the_admin_user(root_only_vm):
    host = root_only_vm["host"]
    result = _run_prepare(root_only_vm["inventory"], "--check", "--tags", "admin_user,ssh_hardening")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Lockout guard (check mode)" in result.stdout
    assert host.sh(f"id {ADMIN}", check=False).returncode != 0, "check mode created the user"
    assert "00-gorkheavy.conf" not in host.sh("ls /etc/ssh/sshd_config.d").stdout


def test_admin_user_is_created_and_the_guard_passes_in_the_same_run(root_only_vm):
    host = root_only_vm["host"]
    first = _run_prepare(root_only_vm["inventory"], "--tags", "admin_user,ssh_hardening")
    assert first.returncode == 0, first.stdout[-3000:]
    assert "Lockout guard" not in first.stdout
    assert host.sh(f"id -nG {ADMIN}").stdout.split() == [ADMIN]
    modes = host.sh(f"stat -c '%a %U' /home/{ADMIN}/.ssh /home/{ADMIN}/.ssh/authorized_keys").stdout.split()
    assert modes == ["700", ADMIN, "600", ADMIN]
    assert "permitrootlogin without-password" in host.sh("sshd -T").stdout.splitlines()
    refused = _password_login(host.address, "no-password-works-here")
    assert "Permission denied (publickey)" in refused.stderr, refused.stderr
    # Root keeps key log-in (prohibit-password), so the next run connects the same way and changes nothing.
    second = _run_prepare(root_only_vm["inventory"], "--tags", "admin_user,ssh_hardening")
    assert second.returncode == 0, second.stdout[-3000:]
    recap = [line for line in second.stdout.splitlines() if " ok=" in line]
    assert recap, second.stdout[-2000:]
    assert all(" changed=0 " in line for line in recap), recap
