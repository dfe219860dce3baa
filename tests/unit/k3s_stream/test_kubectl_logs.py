"""``kubectl logs`` of pods of the in-process stand-in, read from CRI log files as the kubelet writes them:
the current and the previous instance, ``--tail``, ``--timestamps``, ``--limit-bytes``, ``--since``, partial
records, ``-f`` until the container ends, and the kubelet's and API server's errors."""

from __future__ import annotations

import subprocess
import time

from tests.unit.k3s_stream.harness import NAMESPACE, Lab, make_pod, running_status, stamp, write


def test_logs_current_previous_tail_timestamps(lab: Lab) -> None:
    pod = make_pod("logger", "app")
    pod["status"] = running_status("app", restarts=1, last=True)
    lab.put_pod(pod)
    stored = lab.runtime.pod(NAMESPACE, "logger")
    assert stored is not None
    directory = lab.pod_dir(dict(stored), "app")
    old = stamp(-3600)
    write(directory / "0.log", (old, "stdout", "F", "first run"), (old, "stderr", "F", "crashed"))
    t = stamp(-5)
    write(
        directory / "1.log",
        (t, "stdout", "F", "one"),
        (t, "stderr", "F", "two"),
        (t, "stdout", "P", "thr"),
        (t, "stdout", "F", "ee"),
        (t, "stdout", "F", "four"),
    )
    assert lab.kubectl("logs", "-n", NAMESPACE, "logger").stdout == "one\ntwo\nthree\nfour\n"
    assert lab.kubectl("logs", "-n", NAMESPACE, "logger", "--previous").stdout == "first run\ncrashed\n"
    assert lab.kubectl("logs", "-n", NAMESPACE, "logger", "--tail=1").stdout == "four\n"
    assert lab.kubectl("logs", "-n", NAMESPACE, "logger", "--tail=3").stdout == "three\nfour\n"
    assert lab.kubectl("logs", "-n", NAMESPACE, "logger", "--limit-bytes=6").stdout == "one\ntw"
    assert lab.kubectl("logs", "-n", NAMESPACE, "logger", "--previous", "--since=10m").stdout == ""
    stamped = lab.kubectl("logs", "-n", NAMESPACE, "logger", "--timestamps", "--tail=3").stdout
    assert stamped == f"{t} three\n{t} four\n"


def test_logs_follow_until_the_container_ends(lab: Lab) -> None:
    pod = make_pod("follower", "app")
    lab.put_pod(pod)
    stored = lab.runtime.pod(NAMESPACE, "follower")
    assert stored is not None
    log = lab.pod_dir(dict(stored), "app") / "0.log"
    write(log, (stamp(), "stdout", "F", "before"))
    with subprocess.Popen(
        [*lab.kubectl_argv(), "logs", "-f", "-n", NAMESPACE, "follower"], stdout=subprocess.PIPE, text=True
    ) as follow:
        assert follow.stdout is not None
        assert follow.stdout.readline() == "before\n"
        write(log, (stamp(), "stdout", "F", "after"))
        assert follow.stdout.readline() == "after\n"
        assert follow.poll() is None  # still following
        ended = dict(stored)
        ended["status"] = running_status("app")
        ended["status"]["containerStatuses"][0]["state"] = {
            "terminated": {"exitCode": 0, "reason": "Completed"}
        }
        write(log, (stamp(), "stdout", "F", "last words"))
        lab.put_pod(ended)
        started = time.monotonic()
        assert follow.stdout.read() == "last words\n"
        assert follow.wait(5) == 0
        assert time.monotonic() - started < 3


def test_logs_errors_as_kubectl_prints_them(lab: Lab) -> None:
    waiting = make_pod("pulling", "app")
    waiting["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}
    lab.put_pod(waiting)
    result = lab.kubectl("logs", "-n", NAMESPACE, "pulling")
    assert result.stderr == (
        'Error from server (BadRequest): container "app" in pod "pulling" '
        "is waiting to start: ContainerCreating\n"
    )
    fresh = make_pod("fresh", "app")
    lab.put_pod(fresh)
    result = lab.kubectl("logs", "-n", NAMESPACE, "fresh", "--previous")
    assert result.stderr == (
        'Error from server (BadRequest): previous terminated container "app" in pod "fresh" not found\n'
    )
    lab.put_pod(make_pod("pair", "app", "sidecar"))
    raw = lab.kubectl("get", "--raw", f"/api/v1/namespaces/{NAMESPACE}/pods/pair/log")
    assert raw.stderr == (
        "Error from server (BadRequest): a container name must be specified for pod pair, "
        "choose one of: [app sidecar]\n"
    )
    unscheduled = make_pod("pending", "app", node="")
    unscheduled["spec"].pop("nodeName")
    lab.put_pod(unscheduled)
    result = lab.kubectl("logs", "-n", NAMESPACE, "pending")
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")
