"""Stopping the API server and the kubelet while clients hold streams open (a watch, ``kubectl logs -f``)
takes seconds, as with K3s: the servers end or drop those streams instead of waiting for the clients to hang
up."""

from __future__ import annotations

import subprocess
import time

from tests.unit.k3s_stream.harness import NAMESPACE, Lab, make_pod, stamp, write


def test_a_stop_with_a_watch_and_a_log_follow_open_takes_seconds(lab: Lab) -> None:
    pod = make_pod("steady", "app")
    lab.put_pod(pod)
    stored = lab.runtime.pod(NAMESPACE, "steady")
    assert stored is not None
    write(lab.pod_dir(dict(stored), "app") / "0.log", (stamp(), "stdout", "F", "serving"))
    with (
        subprocess.Popen(
            [*lab.kubectl_argv(), "logs", "-f", "-n", NAMESPACE, "steady"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        ) as follow,
        subprocess.Popen(
            [*lab.kubectl_argv(), "get", "pods", "-n", NAMESPACE, "--watch", "--no-headers"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        ) as watch,
    ):
        assert follow.stdout is not None
        assert watch.stdout is not None
        assert follow.stdout.readline() == "serving\n"  # the log stream is open
        assert watch.stdout.readline().split()[0] == "steady"  # and so is the watch
        started = time.monotonic()
        assert lab.stop(), "the servers did not stop within 30 s"
        took = time.monotonic() - started
        # the stream ended from the server's side: kubectl does not hang on
        follow.wait(10)
        watch.kill()
    # aiohttp's default would wait 60 s for each of them
    assert took < 15, f"stopping took {took:.1f} s"
