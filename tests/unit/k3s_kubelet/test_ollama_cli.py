"""The ollama image's CLI as the lab's kubelet runs it: `serve` with a model store on disk, `pull` from the
catalogue only (an unknown model fails as the real CLI fails), `list`, `show`, `rm`, OLLAMA_HOST."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from gorkheavy_lab.ollama.cli import host_url

APP = Path(__file__).resolve().parents[3] / "app"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def serving(env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    """``ollama serve`` with ``env``, until it says it listens."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "gorkheavy_lab.ollama.cli", "serve"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        for _ in range(100):
            if "Listening on" in proc.stderr.readline():
                break
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[dict[str, str]]:
    env = {
        **os.environ,
        "OLLAMA_HOST": f"127.0.0.1:{_free_port()}",
        "OLLAMA_MODELS": str(tmp_path / "models"),
        "PYTHONPATH": str(APP),
    }
    with serving(env):
        yield env


def ollama(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gorkheavy_lab.ollama.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_host_parsing_as_envconfig() -> None:
    assert host_url(None) == ("127.0.0.1", 11434, "http")
    assert host_url("0.0.0.0:11434") == ("0.0.0.0", 11434, "http")
    assert host_url("http://10.0.0.5:8080") == ("10.0.0.5", 8080, "http")
    assert host_url(":9999") == ("127.0.0.1", 9999, "http")


def test_pull_list_show_rm_and_the_store_on_disk(server: dict[str, str]) -> None:
    assert ollama(server, "list").stdout.split() == ["NAME", "ID", "SIZE", "MODIFIED"]
    pulled = ollama(server, "pull", "gemma3:1b")
    assert pulled.returncode == 0
    assert pulled.stdout.splitlines()[0] == "pulling manifest"
    assert pulled.stdout.splitlines()[-1] == "success"
    store = Path(server["OLLAMA_MODELS"])
    manifest = store / "manifests/registry.ollama.ai/library/gemma3/1b"
    assert manifest.is_file()
    rows = ollama(server, "list").stdout.splitlines()
    assert rows[1].split()[0] == "gemma3:1b"
    assert ollama(server, "show", "gemma3:1b").stdout.splitlines()[0] == "  Model"
    missing = ollama(server, "show", "llama3.2:1b")
    assert (missing.returncode, missing.stderr) == (1, "Error: model 'llama3.2:1b' not found\n")
    unknown = ollama(server, "pull", "nosuch-model:7b")
    assert unknown.returncode == 1
    assert unknown.stderr == "Error: pull model manifest: file does not exist\n"
    assert ollama(server, "rm", "gemma3:1b").stdout == "deleted 'gemma3:1b'\n"
    assert not manifest.exists()


def test_a_pulled_model_survives_a_restart(tmp_path: Path) -> None:
    base = {**os.environ, "OLLAMA_MODELS": str(tmp_path / "models"), "PYTHONPATH": str(APP)}
    first = {**base, "OLLAMA_HOST": f"127.0.0.1:{_free_port()}"}
    with serving(first):
        assert ollama(first, "pull", "qwen3:0.6b").returncode == 0
    second = {**base, "OLLAMA_HOST": f"127.0.0.1:{_free_port()}"}
    with serving(second):
        assert ollama(second, "list").stdout.splitlines()[1].split()[0] == "qwen3:0.6b"
    down = ollama(second, "list")
    assert (down.returncode, down.stderr) == (
        1,
        "Error: could not connect to ollama server, run 'ollama serve' to start it\n",
    )


@pytest.mark.parametrize("keep_alive", ["-1", "-1m"])
def test_a_negative_keep_alive_keeps_the_model_loaded(tmp_path: Path, keep_alive: str) -> None:
    """OLLAMA_KEEP_ALIVE below zero (seconds or a Go duration) keeps a model loaded for ever, as in Ollama."""
    host = f"127.0.0.1:{_free_port()}"
    env = {
        **os.environ,
        "OLLAMA_HOST": host,
        "OLLAMA_MODELS": str(tmp_path / "models"),
        "OLLAMA_KEEP_ALIVE": keep_alive,
        "PYTHONPATH": str(APP),
    }
    with serving(env):
        assert ollama(env, "pull", "gemma3:1b").returncode == 0
        body = json.dumps({"model": "gemma3:1b", "prompt": "hi", "stream": False}).encode()
        request = urllib.request.Request(f"http://{host}/api/generate", data=body, method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert json.load(answer)["done"] is True
        with urllib.request.urlopen(f"http://{host}/api/ps", timeout=30) as answer:
            running = json.load(answer)["models"]
    assert [model["name"] for model in running] == ["gemma3:1b"]
    assert running[0]["expires_at"] > "2200"
