"""``kubectl exec -it`` as a person runs it, on a real terminal (pexpect's pty): kubectl puts its terminal in
raw mode and the pty on the node does the rest: a typed line with a backspace, Ctrl-C ending the shell's
foreground command and not the shell, a window resize that ``stty size`` inside sees, and the exit status."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pexpect
import pytest

from tests.unit.k3s_stream.harness import NAMESPACE, Lab, edit_and_interrupt, make_pod

PROMPT = "kstream$ "


def spawn(lab: Lab, *args: str) -> pexpect.spawn:
    argv = lab.kubectl_argv()
    child = pexpect.spawn(
        argv[0], [*argv[1:], *args], dimensions=(24, 80), timeout=10, encoding="utf-8", codec_errors="replace"
    )
    child.delaybeforesend = 0.05
    return child


def test_interactive_shell_through_a_deployment(lab: Lab) -> None:
    def deployment() -> None:
        lab.api.store.create(
            lab.api.registry.by_kind("apps/v1", "Deployment"),  # type: ignore[arg-type]
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"name": "orchestrator", "namespace": NAMESPACE},
                "spec": {
                    "selector": {"matchLabels": {"app": "orchestrator"}},
                    "template": {
                        "metadata": {"labels": {"app": "orchestrator"}},
                        "spec": {"containers": [{"name": "orchestrator", "image": "python:3.11-slim"}]},
                    },
                },
            },
        )

    lab.call(deployment)
    lab.put_pod(make_pod("orchestrator-7d9f-x2k4q", "orchestrator", labels={"app": "orchestrator"}))
    child = spawn(lab, "exec", "-it", "-n", NAMESPACE, "deploy/orchestrator", "--", "sh")
    child.expect_exact(PROMPT)
    edit_and_interrupt(child, PROMPT)
    child.sendline("stty size; tty; echo TERM=$TERM")
    child.expect(r"24 80\r\n/dev/pts/\d+\r\nTERM=xterm\r\n")
    child.expect_exact(PROMPT)
    # the window grows: kubectl sends the size on the resize channel, the pty takes it
    # (kubectl sends it from its SIGWINCH handler, so keystrokes typed at once may still overtake it)
    child.setwinsize(40, 100)
    for _ in range(20):
        child.sendline("stty size")
        seen = child.expect_exact(["40 100\r\n", "24 80\r\n"])
        child.expect_exact(PROMPT)
        if seen == 0:
            break
    assert seen == 0
    child.sendline("exit 7")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 7
    assert "command terminated with exit code 7" in (child.before or "")


@pytest.mark.usefixtures("started_in_the_background")
def test_ctrl_c_reaches_the_command_when_the_kubelet_ignores_sigint(lab: Lab) -> None:
    # runc starts an exec's process with every signal at its default, whatever the kubelet's own are
    lab.put_pod(make_pod("from-background", "app"))
    child = spawn(lab, "exec", "-it", "-n", NAMESPACE, "from-background", "--", "sh")
    child.expect_exact(PROMPT)
    child.sendline("grep -E '^Sig(Ign|Blk)' /proc/self/status")
    # nothing blocked, none of signals 1 to 31 ignored (glibc keeps 32 and 33, which no process can change)
    child.expect(r"SigBlk:\t0{16}\r\nSigIgn:\t0{7}[01][08]0{7}\r\n")
    child.expect_exact(PROMPT)
    edit_and_interrupt(child, PROMPT)
    child.sendline("exit")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_shell_stays_when_kubectl_is_killed(lab: Lab, tmp_path: Path) -> None:
    # as with K3s's containerd (k3s-io/k3s#13749, kubernetes/kubectl#1076): the shell outlives the session
    lab.put_pod(make_pod("left-behind", "app"))
    child = spawn(lab, "exec", "-it", "-n", NAMESPACE, "left-behind", "--", "sh")
    child.expect_exact(PROMPT)
    pidfile = tmp_path / "pid"
    child.sendline(f"echo $$ > {pidfile}")
    child.expect_exact(PROMPT)
    pid = int(pidfile.read_text())
    child.terminate(force=True)
    time.sleep(0.5)
    try:
        os.kill(pid, 0)  # still there
    finally:
        os.kill(pid, signal.SIGKILL)
