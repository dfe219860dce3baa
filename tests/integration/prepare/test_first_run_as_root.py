"""A first run of the prepare stage as root on a fresh VM where only root has the controller's key and the
admin user does not exist yet, on a real systemd host over real SSH."""

from __future__ import annotations

import pytest
import yaml

from tests.hosts.systemd_host import SystemdHost, build_image
from tests.integration.prepare.prepare_run import ADMIN, SSH_OPTIONS, keypair, password_login, run_prepare

pytestmark = [pytest.mark.hosts, pytest.mark.slow]


@pytest.fixture(scope="module")
def root_only_vm(tmp_path_factory):
    """A fresh VM where only root has the controller's key and the admin user does not exist yet."""
    work = tmp_path_factory.mktemp("root-only")
    controller_key = keypair(work, "controller")
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
    result = run_prepare(root_only_vm["inventory"], "--check", "--tags", "admin_user,ssh_hardening")
    assert result.returncode == 0, result.stdout[-3000:]
    assert "Lockout guard (check mode)" in " ".join(result.stdout.split())
    assert host.sh(f"id {ADMIN}", check=False).returncode != 0, "check mode created the user"
    assert "00-gorkheavy.conf" not in host.sh("ls /etc/ssh/sshd_config.d").stdout


def test_admin_user_is_created_and_the_guard_passes_in_the_same_run(root_only_vm):
    host = root_only_vm["host"]
    first = run_prepare(root_only_vm["inventory"], "--tags", "admin_user,ssh_hardening")
    assert first.returncode == 0, first.stdout[-3000:]
    assert "Lockout guard" not in " ".join(first.stdout.split())
    assert host.sh(f"id -nG {ADMIN}").stdout.split() == [ADMIN]
    modes = host.sh(f"stat -c '%a %U' /home/{ADMIN}/.ssh /home/{ADMIN}/.ssh/authorized_keys").stdout.split()
    assert modes == ["700", ADMIN, "600", ADMIN]
    assert "permitrootlogin without-password" in host.sh("sshd -T").stdout.splitlines()
    refused = password_login(host.address, "no-password-works-here")
    assert "Permission denied (publickey)" in refused.stderr, refused.stderr
    # Root keeps key log-in (prohibit-password), so the next run connects the same way and changes nothing.
    second = run_prepare(root_only_vm["inventory"], "--tags", "admin_user,ssh_hardening")
    assert second.returncode == 0, second.stdout[-3000:]
    recap = [line for line in second.stdout.splitlines() if " ok=" in line]
    assert recap, second.stdout[-2000:]
    assert all(" changed=0 " in line for line in recap), recap
