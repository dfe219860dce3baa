"""Fixtures: a fresh Proxmox VE stand-in per test (HTTPS on 127.0.0.1, its own CA) and an inventory for it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from gorkheavy_lab.proxmox import ProxmoxStandin, Server
from proxmoxer import ProxmoxAPI

from tests.integration.provision import harness

ADMIN_TOKEN = ("root@pam!setup", "setup-secret")
STATD_PERIOD = 1.0


@dataclass
class Lab:
    standin: ProxmoxStandin
    server: Server
    tmp_path: Path

    def inventory(self, **kwargs: Any) -> Path:
        return harness.write_inventory(self.tmp_path, self.server.url, self.server.ca_path, **kwargs)

    def admin(self) -> ProxmoxAPI:
        """The cluster as another administrator sees it (for setting up foreign VMs and reading back)."""
        host, port = self.server.url.removeprefix("https://").rsplit(":", 1)
        user, token = ADMIN_TOKEN[0].split("!")
        return ProxmoxAPI(
            host,
            port=int(port),
            user=user,
            token_name=token,
            token_value=ADMIN_TOKEN[1],
            verify_ssl=self.server.ca_path,
        )

    def wait(self, upid: str) -> None:
        api = self.admin()
        node = upid.split(":")[1]
        for _ in range(200):
            status = api.nodes(node).tasks(upid).status.get()
            if status["status"] == "stopped":
                assert status["exitstatus"] == "OK", status
                return
            time.sleep(0.05)
        raise AssertionError(f"task {upid} did not finish")

    def vms(self) -> dict[int, dict[str, Any]]:
        """Every guest in the cluster, by VMID, as /cluster/resources lists it once pvestatd caught up."""
        self.standin.statd_cycle()
        return {int(r["vmid"]): r for r in self.admin().cluster.resources.get(type="vm")}

    def freeze_statd(self) -> None:
        """Let no status-daemon cycle happen from now on: the listing keeps what it shows now."""
        self.standin.statd_period = 3600.0
        self.standin.statd_next = self.standin.cluster.clock() + 3600.0

    def config(self, node: str, vmid: int) -> dict[str, Any]:
        return self.admin().nodes(node).qemu(vmid).config.get()

    def create_foreign_vm(self, node: str, vmid: int, name: str, tags: str | None = None) -> None:
        data: dict[str, Any] = {"vmid": vmid, "name": name, "memory": "2048", "cores": 2}
        if tags:
            data["tags"] = tags
        self.wait(self.admin().nodes(node).qemu.post(**data))

    def provision(self, inventory: Path, *args: str, **kwargs: Any) -> harness.Run:
        return harness.run_playbook("provision.yml", inventory, *args, **kwargs)

    def reset(self, inventory: Path, *args: str, **kwargs: Any) -> harness.Run:
        return harness.run_playbook("reset.yml", inventory, *args, **kwargs)


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    # Tasks still run asynchronously (the roles must poll them), only shorter than the stand-in's defaults;
    # /cluster/resources lags like pvestatd's, with a 1-second cycle instead of 10.
    standin = ProxmoxStandin(
        nodes=["pve1", "pve2", "pve3"],
        task_durations={"default": 0.02, "qmclone": 0.1, "download": 0.1},
        statd_period=STATD_PERIOD,
    )
    standin.add_token(harness.TOKEN_ID, harness.SECRET)
    standin.add_token(*ADMIN_TOKEN)
    standin.add_remote_file(harness.IMAGE_URL, harness.IMAGE_BYTES, virtual_size=3 * 2**30)
    with standin.serve_https(host="127.0.0.1", port=0) as server:
        yield Lab(standin, server, tmp_path)
    assert standin.schema_violations == [], "a request was not valid by the Proxmox VE schema"
    assert standin.response_violations == []
