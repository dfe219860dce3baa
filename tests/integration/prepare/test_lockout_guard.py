"""The SSH lockout guard on a real systemd host, over real SSH.

The host starts like a fresh VM whose operator logs in with a password: the admin user has a
password and password sudo, and cloud-init's drop-in turns SSH password log-in on. The inventory
gives the admin user a public key that does not belong to the controller's private key, so the
guard's fresh key log-in must fail and the play must stop before sshd is changed. With the
matching key the same play hardens sshd. A first run as root on a VM without the admin user is
test_first_run_as_root.py's (a host of its own).
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
import yaml

from tests.hosts.systemd_host import SystemdHost, build_image
from tests.integration.prepare.prepare_run import (
    ADMIN,
    SSH_OPTIONS,
    key_login,
    keypair,
    password_login,
    run_prepare,
)

pytestmark = [pytest.mark.hosts, pytest.mark.slow]

GUARD_MESSAGE = "Lockout guard: refusing to turn password log-in off"


def _sshd_state(host: SystemdHost) -> str:
    """sshd_config's checksum and the drop-ins present: what the guard must leave untouched."""
    return host.sh("sha256sum /etc/ssh/sshd_config; ls /etc/ssh/sshd_config.d").stdout


@pytest.fixture(scope="module")
def fresh_vm(tmp_path_factory):
    work = tmp_path_factory.mktemp("lockout")
    controller_key = keypair(work, "controller")
    wrong_key = keypair(work, "someone-else")
    password = secrets.token_urlsafe(18)
    build_image()
    host = SystemdHost.start("gorkheavy-lockout", controller_key.with_suffix(".pub"))
    try:
        host.sh(
            f"useradd --create-home --shell /bin/bash --groups sudo {ADMIN} && chpasswd"
            " && echo 'PasswordAuthentication yes' > /etc/ssh/sshd_config.d/50-cloud-init.conf"
            # Only 2048-bit moduli, as some images ship: the group exchange must then not be offered.
            " && awk '/^#/ || $5 < 3071' /etc/ssh/moduli > /tmp/moduli && mv /tmp/moduli /etc/ssh/moduli"
            # a restart returns once the new sshd listens (Type=notify); a reload would return before it does
            " && systemctl restart ssh.service",
            stdin=f"{ADMIN}:{password}\n",
        )
        host.wait_for_ssh()

        def inventory(*public_keys: Path) -> Path:
            path = work / f"inventory-{'-'.join(key.stem for key in public_keys)}.yml"
            host_vars = {
                "ansible_host": host.address,
                "ansible_user": ADMIN,
                "ansible_password": password,
                "ansible_become_password": password,
                # after the hardening only the key logs in: no run may depend on a connection left open
                "ansible_ssh_private_key_file": str(controller_key),
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
                keypair(work, "old-ecdsa", "ecdsa").with_suffix(".pub"),
                keypair(work, "small-rsa", "rsa", "2048").with_suffix(".pub"),
            ),
        }
    finally:
        host.remove()


def test_password_login_works_on_the_fresh_vm(fresh_vm):
    result = password_login(fresh_vm["host"].address, fresh_vm["password"])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ADMIN


def test_check_mode_with_the_wrong_key_reports_the_guard_and_changes_nothing(fresh_vm):
    before = _sshd_state(fresh_vm["host"])
    result = run_prepare(fresh_vm["wrong_inventory"], "--check", "--tags", "admin_user,ssh_hardening")
    assert result.returncode == 0, result.stdout[-3000:]
    # Messages are read with the line breaks undone: where Ansible wraps a message depends on the length of
    # what it quotes (addresses, key paths, ssh's words).
    flat = " ".join(result.stdout.split())
    assert "Lockout guard (check mode)" in flat
    assert "A real run stops here" in flat
    assert _sshd_state(fresh_vm["host"]) == before


def test_guard_stops_the_run_with_the_wrong_key_before_sshd_changes(fresh_vm):
    host = fresh_vm["host"]
    before = _sshd_state(host)
    result = run_prepare(fresh_vm["wrong_inventory"])
    out = " ".join(result.stdout.split())
    assert result.returncode == 2, result.stdout[-3000:]
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
    login = password_login(host.address, fresh_vm["password"])
    assert login.returncode == 0, login.stderr


def test_keys_the_hardened_sshd_would_refuse_are_named_before_anything_changes(fresh_vm):
    host = fresh_vm["host"]
    before = host.sh(f"cat /home/{ADMIN}/.ssh/authorized_keys; passwd -S {ADMIN}").stdout
    result = run_prepare(fresh_vm["weak_inventory"], "--tags", "admin_user")
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
    result = run_prepare(
        fresh_vm["right_inventory"], "--check", "--diff", "--tags", "admin_user,ssh_hardening"
    )
    assert result.returncode == 0, result.stdout[-3000:]
    # Check mode reports what it would do, and does none of it.
    assert "+PasswordAuthentication no" in result.stdout  # the drop-in's diff
    after = _sshd_state(host) + host.sh(f"cat /home/{ADMIN}/.ssh/authorized_keys; ls /etc/sudoers.d").stdout
    assert after == before


def test_with_the_matching_key_the_same_play_hardens_sshd(fresh_vm):
    host = fresh_vm["host"]
    result = run_prepare(fresh_vm["right_inventory"], "--tags", "admin_user,ssh_hardening")
    assert result.returncode == 0, result.stdout[-3000:]
    assert GUARD_MESSAGE not in " ".join(result.stdout.split())
    assert "00-gorkheavy.conf" in host.sh("ls /etc/ssh/sshd_config.d").stdout
    assert "passwordauthentication no" in host.sh("sshd -T").stdout.splitlines()
    refused = password_login(host.address, fresh_vm["password"])
    assert refused.returncode != 0
    assert "Permission denied (publickey)" in refused.stderr
    login = key_login(host, fresh_vm["controller_key"], "sudo -n id -u")
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "0"
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
    result = run_prepare(
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
    login = key_login(host, fresh_vm["controller_key"], "sudo -n id -un")
    assert login.returncode == 0, login.stderr
    assert login.stdout.strip() == "root"
