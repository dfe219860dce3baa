"""Air-gap image import at start, as K3s's preloadImages logs it; Go durations in component args."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest
from gorkheavy_lab.k3s import images
from gorkheavy_lab.k3s.kube.core import go_seconds
from gorkheavy_lab.k3s.logs import Logger


def test_import_dir_reads_release_tar_gz_and_reports_bad_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    directory = tmp_path / "agent" / "images"
    directory.mkdir(parents=True)
    tar = images.airgap_tar("amd64")
    (directory / "k3s-airgap-images-amd64.tar").write_bytes(tar)
    (directory / "extra.tar.gz").write_bytes(gzip.compress(tar))
    (directory / "k3s-airgap-images-amd64.tar.zst").write_bytes(b"\x28\xb5\x2f\xfd")
    (directory / "notes.md").write_text("not an image\n")
    names = images.import_dir(tmp_path, Logger())
    err = capsys.readouterr().err
    assert names == ["docker.io/rancher/mirrored-pause:3.6"] * 2
    assert f'level=info msg="Importing images from {directory}/k3s-airgap-images-amd64.tar"' in err
    assert err.count('level=info msg="Imported docker.io/rancher/mirrored-pause:3.6"') == 2
    assert (
        f'level=error msg="Error encountered while importing {directory}/notes.md: unhandled file type"'
        in err
    )
    assert f"Error encountered while importing {directory}/k3s-airgap-images-amd64.tar.zst: zstd" in err
    recorded = json.loads((tmp_path / "agent" / "containerd" / "images.json").read_text())
    assert recorded == ["docker.io/rancher/mirrored-pause:3.6"]


def test_airgap_tar_is_an_oci_layout_and_reproducible() -> None:
    assert images.airgap_tar("arm64") == images.airgap_tar("arm64")
    assert images.airgap_tar("arm64") != images.airgap_tar("amd64")


@pytest.mark.parametrize(
    ("text", "seconds"), [("40s", 40.0), ("1m30s", 90.0), ("500ms", 0.5), ("2h", 7200.0)]
)
def test_go_durations_for_component_args(text: str, seconds: float) -> None:
    assert go_seconds(text) == seconds
