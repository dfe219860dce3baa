"""The lab's chat on a real terminal, as a person has it after `make lab`: ``python -m gorkheavy_lab.lab
chat`` (kubectl exec -it -n gorkheavy deploy/orchestrator -- gorkheavy chat, the lab's kubeconfig) in a pty.

A question typed, the ensemble's answer shown; Ctrl-C while the next answer is being worked on cancels it and
the chat asks again; ``exit`` leaves, and the lab says how to come back and how to tear down.
``python -m tests.e2e.chat`` runs the same check on a running lab (the molecule scenario ``default`` does).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pexpect

REPO = Path(__file__).resolve().parents[2]


def lab_env() -> dict[str, str]:
    values = dict(os.environ)
    values["PYTHONPATH"] = os.pathsep.join([str(REPO / "app"), str(REPO)])
    values["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), values.get("PATH", "")])
    values["ANSIBLE_NOCOLOR"] = "1"
    values["ANSIBLE_FORCE_COLOR"] = "0"
    return values


def check_chat(timeout: float = 120) -> str:
    """Drive the chat; return the first answer. Raises on anything a person would not see."""
    child = pexpect.spawn(
        sys.executable,
        ["-m", "gorkheavy_lab.lab", "chat"],
        cwd=str(REPO),
        env=lab_env(),
        dimensions=(30, 100),
        timeout=timeout,
        encoding="utf-8",
        codec_errors="replace",
    )
    child.delaybeforesend = 0.05
    try:
        child.expect_exact("YOU: ")
        child.sendline("What is K3s?")
        child.expect(r"Reply: (.+?)\r\n")
        answer = str(child.match.group(1)).strip()
        if not answer:
            raise AssertionError("the ensemble's answer was empty")
        child.expect_exact("YOU: ")
        # Ctrl-C while the ensemble works on an answer cancels that answer, and the chat asks again.
        child.sendline("And what is Proxmox VE?")
        child.expect(r"\d\.\ds")
        child.sendintr()
        child.expect_exact("(cancelled)")
        child.expect_exact("YOU: ")
        child.sendline("exit")
        child.expect_exact("make lab-chat")
        child.expect_exact("make lab-down")
        child.expect(pexpect.EOF)
    finally:
        child.close()
    if child.exitstatus != 0:
        raise AssertionError(f"the chat ended with exit status {child.exitstatus}")
    return answer


if __name__ == "__main__":
    print(f"chat: the ensemble answered {check_chat()!r}; Ctrl-C cancelled an answer; exit left the chat")
