"""``kubectl attach``: the container's output as it is written, input to its stdin, the end when it stops."""

from __future__ import annotations

import os
import subprocess
import threading

from tests.unit.k3s_stream.harness import NAMESPACE, Lab, make_pod, running_status, stamp, write


def test_attach_follows_output_and_feeds_stdin(lab: Lab) -> None:
    pod = make_pod("attached", "app")
    pod["spec"]["containers"][0]["stdin"] = True
    lab.put_pod(pod)
    stored = lab.runtime.pod(NAMESPACE, "attached")
    assert stored is not None
    log = lab.pod_dir(dict(stored), "app") / "0.log"
    write(log, (stamp(), "stdout", "F", "written before the attach"))
    fifo = lab.kubeconfig.parent / "attached.stdin"
    os.mkfifo(fifo)
    lab.runtime.stdin_paths[(NAMESPACE, "attached", "app")] = fifo
    received = lab.kubeconfig.parent / "attached.got"
    # the container's main process, as far as its stdin goes
    reader = subprocess.Popen(["sh", "-c", f'read line < {fifo}; echo "$line" > {received}'])
    with subprocess.Popen(
        [*lab.kubectl_argv(), "attach", "-i", "-n", NAMESPACE, "attached", "-c", "app"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    ) as attach:
        assert attach.stdin is not None
        assert attach.stdout is not None
        # output from the moment the stream is up: write until the first line comes through
        stop = threading.Event()

        def ticks() -> None:
            while not stop.wait(0.1):
                write(log, (stamp(), "stdout", "F", "tick"))

        ticker = threading.Thread(target=ticks)
        ticker.start()
        try:
            assert attach.stdout.readline() == "tick\n"
        finally:
            stop.set()
            ticker.join()
        write(log, (stamp(), "stdout", "F", "live line"), (stamp(), "stderr", "F", "live error"))
        while (line := attach.stdout.readline()) == "tick\n":
            pass
        assert line == "live line\n"
        attach.stdin.write("hello container\n")
        attach.stdin.flush()
        assert reader.wait(5) == 0
        assert received.read_text() == "hello container\n"
        ended = dict(stored)
        ended["status"] = running_status("app")
        ended["status"]["containerStatuses"][0]["state"] = {
            "terminated": {"exitCode": 0, "reason": "Completed"}
        }
        lab.put_pod(ended)
        out, err = attach.communicate(timeout=5)
    assert attach.returncode == 0
    assert "written before" not in out
    assert "live error" in err
