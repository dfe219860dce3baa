"""The lab's last step on a real terminal: ``kubectl exec -it ... -- gorkheavy chat`` through the stand-in's
API and kubelet endpoint, the orchestrator's chat running in the "container" (a local process with the
container's environment), its models served by the Ollama stand-in: readline's line editing with arrow keys
and Ctrl-E over the remote pty, Ctrl-C cancelling an answer without leaving, Ctrl-D leaving with status 0."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pexpect
import pytest
import yaml
from gorkheavy_lab.ollama import ModelBehavior, OllamaStandin

from tests.integration.app.conftest import MODELS, roster
from tests.unit.k3s_stream.harness import NAMESPACE, Lab, make_pod
from tests.unit.k3s_stream.test_kubectl_exec_tty import spawn


@pytest.fixture
def ollama() -> Iterator[tuple[OllamaStandin, str]]:
    standin = OllamaStandin({model: ModelBehavior() for model in MODELS.values()})
    with standin.serve_in_thread() as url:
        yield standin, url


def test_gorkheavy_chat_through_kubectl_exec(
    lab: Lab, ollama: tuple[OllamaStandin, str], tmp_path: Path
) -> None:
    standin, url = ollama
    config = tmp_path / "gorkheavy.yml"
    config.write_text(yaml.safe_dump(roster(url)))
    pod = make_pod("orchestrator-chat", "orchestrator")
    pod["spec"]["containers"][0]["env"] = [
        {"name": "XDG_STATE_HOME", "value": str(tmp_path / "state")},
        {"name": "NO_COLOR", "value": "1"},
    ]
    lab.put_pod(pod)
    gorkheavy = str(Path(sys.executable).parent / "gorkheavy")
    child = spawn(
        lab,
        "exec",
        "-it",
        "-n",
        NAMESPACE,
        "orchestrator-chat",
        "--",
        gorkheavy,
        "chat",
        "--config",
        str(config),
    )
    child.timeout = 30
    child.expect_exact("YOU: ")
    # readline edits the line: left arrow, insert, Ctrl-E to the end
    child.send("Whats")
    child.send("\x1b[D")
    child.send("'")
    child.send("\x05")
    child.send(" the capital of France?\r")
    child.expect(r"Reply: (.*?)\r\n")
    child.expect_exact("YOU: ")
    asked = [
        r.body["messages"][-1]["content"]
        for r in standin.requests_for(path="/api/chat", model=MODELS["qwen"])
    ]
    assert asked[-1] == "What's the capital of France?"
    # a slow answer: Ctrl-C cancels it and the chat asks again
    for model in (MODELS["qwen"], MODELS["llama"], MODELS["qwen-small"]):
        standin.behavior(model).latency = 30
    child.sendline("And Germany?")
    child.expect_exact("And Germany?\r\n")
    child.expect(r"\d\.\ds")  # the progress line: the answer is being worked on
    child.sendintr()
    child.expect_exact("(cancelled)")
    child.expect_exact("YOU: ")
    child.sendeof()
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
