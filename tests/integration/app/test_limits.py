"""Reply size caps: every model reply is bounded in tokens (num_predict) and bytes, whatever is sent."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from gorkheavy.backends.ollama import OllamaClient, make_session
from gorkheavy.core.roster import ModelSpec
from gorkheavy.core.types import ChatMessage, ErrorCause, ModelCallError

from .conftest import MODELS, Backend, Wired, roster

ROOT = Path(__file__).parents[3]


async def test_every_call_asks_for_its_stage_token_cap(backend: Backend, wired: Wired) -> None:
    await wired.pipeline.run("s", "What is K3s?")
    sent = {name: backend.chats(name)[-1].body["options"]["num_predict"] for name in MODELS}
    assert sent == {"promptimizer": 256, "qwen-small": 1024, "qwen": 1024, "llama": 1024, "judge": 1024}


async def test_a_reply_cut_by_the_token_cap_is_kept_and_flagged(backend: Backend, wired: Wired) -> None:
    backend.behavior("llama").reply = " ".join(f"word{i}" for i in range(2000))  # one token per word
    result = await wired.pipeline.run("s", "q")
    llama = next(c for c in result.candidates if c.name == "llama")
    assert llama.cause is ErrorCause.TOO_LONG
    assert llama.ok
    assert llama.text.split() == [f"word{i}" for i in range(1024)]  # Ollama stopped at num_predict
    assert "size limit" in llama.error
    assert result.answer


async def test_a_backend_that_never_ends_is_cut_at_the_byte_cap(backend: Backend, wired: Wired) -> None:
    backend.standin.configure(MODELS["qwen"], failure="endless", reply="lorem ipsum " * 100, chunks=1)
    result = await wired.pipeline.run("s", "q")
    qwen = next(c for c in result.candidates if c.name == "qwen")
    assert qwen.cause is ErrorCause.TOO_LONG  # not a timeout: the cap ended the call
    assert 16384 - 4 < len(qwen.text.encode()) <= 16384
    assert result.answer


async def test_a_whole_reply_past_the_byte_cap_is_cut_there_and_flagged(
    backend: Backend, wired: Wired
) -> None:
    backend.behavior("qwen").reply = "é" + "x" * 20_000  # one piece, under the token cap, over 16 KiB
    backend.behavior("qwen").chunks = 1
    result = await wired.pipeline.run("s", "q")
    qwen = next(c for c in result.candidates if c.name == "qwen")
    assert backend.chats("qwen")[0].body["stream"] is False
    assert qwen.cause is ErrorCause.TOO_LONG
    assert qwen.ok
    assert qwen.text == "é" + "x" * (16384 - 2)  # the first 16 KiB, as a streamed reply is cut
    assert result.answer


async def test_a_whole_reply_larger_than_a_line_is_not_read(backend: Backend) -> None:
    backend.standin.configure(MODELS["qwen"], reply="y" * 10_000, chunks=1)
    spec = ModelSpec("qwen", MODELS["qwen"], backend.url)
    session = make_session(connect_timeout=2)
    try:
        client = OllamaClient(session, max_line_bytes=4096)
        with pytest.raises(ModelCallError) as raised:
            await client.chat(spec, [ChatMessage("user", "q")], keep_alive="5m")
        assert raised.value.cause is ErrorCause.TOO_LONG
        assert "more than 4096 bytes" in raised.value.message
        # within the limit the same reply is read whole
        whole = await OllamaClient(session).chat(spec, [ChatMessage("user", "q")], keep_alive="5m")
        assert whole.text == "y" * 10_000
        assert not whole.truncated
    finally:
        await session.close()


# -- the server's memory stays flat whatever a backend sends ---------------------------------------------


def _vm(pid: int, key: str) -> int:
    """A VmHWM/VmRSS figure of process ``pid`` in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    match = re.search(rf"^{key}:\s+(\d+) kB", text, re.MULTILINE)
    assert match, text
    return int(match.group(1)) * 1024


def _first_line(process: subprocess.Popen[str], pattern: str) -> str:
    assert process.stdout is not None
    for _ in range(50):
        line = process.stdout.readline()
        if match := re.search(pattern, line):
            return match.group(1)
    raise AssertionError(f"no line matching {pattern!r}")


@pytest.fixture
def endless_ollama() -> Iterator[str]:
    """An Ollama stand-in process whose qwen streams ~4 KB chunks for ever, never sending ``done``."""
    models = [f"{m},latency=0.05" for m in MODELS.values() if m != MODELS["qwen"]]
    models.append(f"{MODELS['qwen']},failure=endless,chunks=1,reply={'lorem ipsum ' * 350}")
    args = [sys.executable, "-m", "gorkheavy_lab.ollama", "--port", "0", "--no-record"]
    for model in models:
        args += ["--model", model]
    process = subprocess.Popen(args, cwd=ROOT / "app", stdout=subprocess.PIPE, text=True)
    try:
        yield _first_line(process, r"listening on (http://\S+)")
    finally:
        process.terminate()
        process.wait(timeout=10)


def _post(url: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
    return result


def test_server_memory_stays_flat_with_a_backend_that_streams_for_ever(
    tmp_path: Path, endless_ollama: str
) -> None:
    data = roster(endless_ollama, timeouts={"expert": 4}, server={"host": "127.0.0.1", "port": 0})
    config = tmp_path / "c.yml"
    config.write_text(yaml.safe_dump(data))
    server = subprocess.Popen(
        [sys.executable, "-m", "gorkheavy", "serve", "--config", str(config)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "XDG_STATE_HOME": str(tmp_path)},
    )
    try:
        url = _first_line(server, r"serving on (http://\S+)")
        with urllib.request.urlopen(f"{url}/healthz", timeout=10):
            pass
        before = _vm(server.pid, "VmHWM")
        started = time.monotonic()
        results = [
            _post(f"{url}/v1/chat", {"session": f"s{i}", "message": "Tell me everything."}) for i in range(3)
        ]
        elapsed = time.monotonic() - started
        growth = _vm(server.pid, "VmHWM") - before
        assert growth < 20 * 1024 * 1024, f"peak RSS grew by {growth / 1e6:.1f} MB"
        for result in results:
            qwen = next(c for c in result["candidates"] if c["name"] == "qwen")
            assert qwen["cause"] == "too_long"
            assert len(qwen["text"].encode()) <= 16384
        assert elapsed < 3 * 4  # each request ended at the cap, before the 4 s expert timeout
        with urllib.request.urlopen(f"{url}/metrics", timeout=10) as response:
            metrics = response.read().decode()
        assert 'gorkheavy_model_errors_total{cause="too_long",name="qwen"} 3.0' in metrics
    finally:
        server.terminate()
        server.wait(timeout=20)
