"""The real kubectl 1.36.4 execs into pods of the in-process stand-in: WebSocket v5 through the API server to
the kubelet's endpoint, exit codes as kubectl reports them, stdin with its end, and the errors kubectl prints
for a container that is not running or not in the pod."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.unit.k3s_stream.harness import NAMESPACE, Lab, make_pod


@pytest.fixture(scope="module")
def pod(lab: Lab) -> str:
    lab.put_pod(make_pod("worker-1", "app"))
    return "worker-1"


def test_exec_streams_stdout_and_stderr_and_exit_code(lab: Lab, pod: str) -> None:
    result = lab.kubectl("exec", "-n", NAMESPACE, pod, "--", "sh", "-c", "echo out; echo err >&2; exit 3")
    assert result.stdout == "out\n"
    assert result.stderr == "err\ncommand terminated with exit code 3\n"
    assert result.returncode == 3
    ok = lab.kubectl("exec", "-n", NAMESPACE, pod, "--", "printf", "%s|", "a b", "c")
    assert (ok.returncode, ok.stdout, ok.stderr) == (0, "a b|c|", "")


def test_exec_stdin_reaches_the_command_and_ends(lab: Lab, pod: str) -> None:
    # cat ends only when its input does: the v5 close signal carries the end of kubectl's stdin
    result = lab.kubectl(
        "exec", "-i", "-n", NAMESPACE, pod, "--", "sh", "-c", "cat; echo done", input="line 1\nline 2\n"
    )
    assert (result.returncode, result.stdout) == (0, "line 1\nline 2\ndone\n"), result.stderr


STATUS_LINES = ("grep", "-E", "^Sig(Ign|Blk)", "/proc/self/status")


@pytest.mark.usefixtures("started_in_the_background")
def test_exec_command_starts_with_default_signals(lab: Lab, pod: str) -> None:
    # what runc gives an exec'd process, whatever the kubelet's own dispositions: nothing ignored or blocked
    result = lab.kubectl("exec", "-n", NAMESPACE, pod, "--", *STATUS_LINES)
    blocked, ignored = (int(line.split(":")[1], 16) for line in result.stdout.splitlines())
    assert blocked == 0, result.stdout
    # signals 1 to 31 (glibc keeps 32 and 33 for itself: an ignored one inherited from outside stays so)
    assert ignored & ((1 << 31) - 1) == 0, result.stdout


def test_exec_killed_command_reports_128_plus_signal(lab: Lab, pod: str) -> None:
    result = lab.kubectl("exec", "-n", NAMESPACE, pod, "--", "sh", "-c", "kill -TERM $$")
    assert result.returncode == 143
    assert result.stderr == "command terminated with exit code 143\n"


def test_exec_errors_as_kubectl_prints_them(lab: Lab, pod: str) -> None:
    lab.put_pod(make_pod("two", "app", "sidecar"))
    # kubectl checks the name itself; the API server's own answer, as kube-apiserver words it:
    wrong = lab.kubectl("exec", "-n", NAMESPACE, pod, "-c", "nope", "--", "true")
    assert wrong.stderr == "error: container nope is not valid for pod worker-1 out of: app\n"
    raw = lab.kubectl(
        "get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}/exec?container=nope&command=true"
    )
    assert raw.stderr == "Error from server (BadRequest): container nope is not valid for pod worker-1\n"
    raw = lab.kubectl("get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/two/exec?command=true&stdout=1")
    assert raw.stderr == (
        "Error from server (BadRequest): a container name must be specified for pod two, "
        "choose one of: [app sidecar]\n"
    )
    # a plain request past the API server's checks gets the kubelet's 400 "Upgrade request required" as text,
    # which kubectl does not print (it is no Status)
    raw = lab.kubectl("get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/{pod}/exec?command=true&stdout=1")
    assert (
        raw.stderr
        == "Error from server (BadRequest): the server rejected our request for an unknown reason\n"
    )
    missing = lab.kubectl("exec", "-n", NAMESPACE, "ghost", "--", "true")
    assert missing.stderr == 'Error from server (NotFound): pods "ghost" not found\n'
    waiting = make_pod("starting", "app")
    waiting["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}
    lab.put_pod(waiting)
    result = lab.kubectl("exec", "-n", NAMESPACE, "starting", "--", "true")
    assert result.returncode == 1
    # kube-apiserver's stream translator has upgraded kubectl's v5 WebSocket before the kubelet refuses, so
    # the refusal comes as an InternalError Status (as K3s 1.33 shows it, k3s-io/k3s#13470), no SPDY retry
    assert (
        result.stderr
        == 'error: Internal error occurred: unable to upgrade connection: container not found ("app")\n'
    )


def test_command_goes_on_when_kubectl_goes_away(lab: Lab, pod: str, tmp_path: Path) -> None:
    # as with containerd (kubernetes/kubernetes#89031): the exec'd command is not ended with the stream
    done = tmp_path / "done"
    script = f"echo started; sleep 1; echo finished > {done}"
    with subprocess.Popen(
        [*lab.kubectl_argv(), "exec", "-n", NAMESPACE, pod, "--", "sh", "-c", script],
        stdout=subprocess.PIPE,
        text=True,
    ) as kubectl:
        assert kubectl.stdout is not None
        assert kubectl.stdout.readline() == "started\n"
        kubectl.kill()
    deadline = time.monotonic() + 10
    while not done.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert done.read_text() == "finished\n"
