"""The lab driver's own promises, on a throw-away lab of this test (its own checkout directory, network name,
subnet and container prefix): state and secrets, the network, the timing of site.yml by stage, and `down`
removing what the lab made and nothing else."""

from __future__ import annotations

import json
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from gorkheavy_lab.lab import Lab, LabError, LabSettings
from gorkheavy_lab.lab.site import parse_recap, parse_timing, play_stages, run_site, timing_table

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout as the driver sees it: site.yml, the stage playbooks and inventory/lab."""
    (tmp_path / "site.yml").write_text((REPO / "site.yml").read_text())
    (tmp_path / "playbooks").mkdir()
    for stage in ("provision", "prepare", "cluster", "ensemble"):
        (tmp_path / "playbooks" / f"{stage}.yml").write_text(
            (REPO / "playbooks" / f"{stage}.yml").read_text()
        )
    (tmp_path / "inventory" / "lab").mkdir(parents=True)
    return tmp_path


def test_state_is_private_and_its_secrets_are_kept_across_runs(checkout: Path) -> None:
    lab = Lab(LabSettings(repo=checkout), out=lambda _line: None)
    lab.ensure_state()
    first = lab.secrets()
    assert set(first) == {"vault_gorkheavy_proxmox_api_token_secret", "vault_gorkheavy_k3s_token"}
    assert all(len(v) >= 32 for v in first.values())
    state = lab.settings.state_dir
    assert state.stat().st_mode & 0o777 == 0o700
    for name in ("vault.yml", "vault-password", "ssh/id_ed25519"):
        assert (state / name).stat().st_mode & 0o777 == 0o600, name
    vault = (state / "vault.yml").read_text()
    assert vault.startswith("$ANSIBLE_VAULT;1.1;AES256")
    assert not any(secret in vault for secret in first.values())
    lab.ensure_state()
    assert lab.secrets() == first
    # the file is the one ansible-vault reads
    view = subprocess.run(
        [str(Path(sys.executable).parent / "ansible-vault"), "view", "--vault-password-file",
         str(state / "vault-password"), str(state / "vault.yml")],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert first["vault_gorkheavy_k3s_token"] in view.stdout


def test_each_stage_is_timed_by_the_playbook_that_names_its_plays(checkout: Path) -> None:
    stages = play_stages(checkout)
    assert stages["Provision the K3s VMs through the Proxmox VE API"] == "provision"
    assert stages["Join the K3s agents"] == "cluster"
    assert stages["Deploy the model ensemble and the orchestrator"] == "ensemble"
    script = (
        "import time\n"
        "for name in ['Provision the K3s VMs through the Proxmox VE API', 'Prepare the nodes for K3s']:\n"
        "    print(f'PLAY [{name}] ' + '*' * 20, flush=True); time.sleep(0.3)\n"
        "print('PLAY RECAP ****')\n"
        "print('k3s-server                 : ok=3    changed=1    unreachable=0    failed=0    skipped=0    "
        "rescued=0    ignored=0')\n"
    )
    seen: list[str] = []
    run = run_site([sys.executable, "-c", script], cwd=checkout, env={}, echo=None, announce=seen.append)
    assert run.returncode == 0
    assert [s.split(" (")[0] for s in seen] == ["stage provision", "stage prepare"]
    assert set(run.stage_seconds) == {"provision", "prepare"}
    # A stage is timed from the line that opens it to the next one, as the lines are read: a line read late
    # shortens the stage before it, but the stages never add up to more than the run, which slept 0.6 s.
    assert all(seconds > 0 for seconds in run.stage_seconds.values())
    assert sum(run.stage_seconds.values()) <= run.seconds
    assert run.seconds >= 0.6
    assert run.recap["k3s-server"].changed == 1
    assert run.clean()
    assert not run.unchanged()


def test_the_timings_are_read_back_from_the_drivers_output() -> None:
    out = (
        "lab: site.yml exit 2 after 9 s (provision 9 s); log a\n"
        "\x1b[0;32mlab: site.yml exit 0 after 387 s (provision 26 s, prepare 148 s, cluster 104 s, "
        "ensemble 108 s); log b\x1b[0m"
    )
    first = parse_timing(out)
    assert first is not None
    assert (first.returncode, first.seconds) == (0, 387.0)
    assert first.stage_seconds == {"provision": 26.0, "prepare": 148.0, "cluster": 104.0, "ensemble": 108.0}
    second = parse_timing("lab: site.yml exit 0 after 129 s (provision 13 s, prepare 60 s, cluster 30 s)")
    assert second is not None
    table = timing_table(first, second).splitlines()
    assert table[1].split() == ["provision", "26s", "13s", "0.50"]
    assert table[4].split() == ["ensemble", "108s", "0s", "0.00"]
    assert table[5].split() == ["total", "387s", "129s", "0.33"]
    assert parse_timing("no run") is None


def test_the_recap_is_read_through_colours() -> None:
    line = (
        "\x1b[0;31mk3s-agent-1\x1b[0m       : \x1b[0;32mok=5   \x1b[0m changed=0    unreachable=0    "
        "\x1b[0;31mfailed=2   \x1b[0m skipped=1    rescued=0    ignored=0"
    )
    recap = parse_recap([line])
    assert recap["k3s-agent-1"].ok == 5
    assert recap["k3s-agent-1"].failed == 2


@pytest.fixture
def podman_lab(checkout: Path) -> Iterator[Lab]:
    tag = secrets.token_hex(3)
    settings = LabSettings(
        repo=checkout,
        network=f"gklabtest-{tag}",
        subnet="10.79.77.0/24",
        container_prefix=f"gklabtest-{tag}-",
    )
    lab = Lab(settings, out=lambda _line: None)
    yield lab
    names = [f"gklabtest-{tag}-vm", f"gklabtest-{tag}x-keep"]
    subprocess.run(["podman", "rm", "-f", "-t", "0", "--ignore", *names], capture_output=True, check=False)
    subprocess.run(["podman", "network", "rm", "-f", settings.network], capture_output=True, check=False)


@pytest.mark.hosts
def test_down_removes_what_the_lab_made_and_nothing_else(podman_lab: Lab) -> None:
    s = podman_lab.settings
    podman_lab.ensure_state()
    podman_lab.ensure_network()
    podman_lab.ensure_network()  # a second time changes nothing
    assert podman_lab.network_subnet() == s.subnet
    image = "localhost/gorkheavy-testhost:bookworm"
    for name in (f"{s.container_prefix}vm", f"{s.container_prefix[:-1]}x-keep"):
        subprocess.run(["podman", "create", "--name", name, "--network", s.network, image, "/sbin/init"],
                       capture_output=True, check=True)  # fmt: skip
    assert [row["name"] for row in podman_lab.containers()] == [f"{s.container_prefix}vm"]
    (s.inventory / "kubeconfig-gorkheavy-lite.yaml").write_text("{}")
    (s.inventory.parent / "lab.known_hosts").write_text("")
    (s.inventory.parent / "example.known_hosts").write_text("")
    (s.inventory / "hosts.yml").write_text("all: {}\n")
    # a pidfile whose pid is not the stand-in of this checkout is never signalled
    (s.proxmox_dir).mkdir()
    (s.proxmox_dir / "standin.pid").write_text("1\n")
    assert podman_lab.proxmox_pid() is None
    keep = subprocess.run(["podman", "container", "exists", f"{s.container_prefix[:-1]}x-keep"], check=False)
    assert keep.returncode == 0
    # the other container holds the network: down removes its own container, then says why the network stays
    with pytest.raises(LabError, match="network rm"):
        podman_lab.down()
    subprocess.run(["podman", "rm", "-f", "-t", "0", f"{s.container_prefix[:-1]}x-keep"], check=True,
                   capture_output=True)  # fmt: skip
    assert podman_lab.down() == 0
    assert podman_lab.containers() == []
    assert podman_lab.network_subnet() is None
    assert not s.state_dir.exists()
    assert sorted(p.name for p in s.inventory.iterdir()) == ["hosts.yml"]
    assert sorted(p.name for p in s.inventory.parent.iterdir()) == ["example.known_hosts", "lab"]


@pytest.mark.hosts
def test_a_network_of_that_name_with_another_subnet_is_refused(podman_lab: Lab) -> None:
    s = podman_lab.settings
    subprocess.run(["podman", "network", "create", "--subnet", "10.79.78.0/24", s.network],
                   capture_output=True, check=True)  # fmt: skip
    with pytest.raises(
        LabError, match=r"exists with subnet 10\.79\.78\.0/24, the lab needs 10\.79\.77\.0/24"
    ):
        podman_lab.ensure_network()
    assert json.loads(subprocess.run(["podman", "network", "inspect", s.network], capture_output=True,
                                     text=True, check=True).stdout)  # fmt: skip
