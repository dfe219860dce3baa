"""The Python ``kubernetes`` client's exec and logs (``kubernetes.stream``, WebSocket ``v4.channel.k8s.io``),
as a tool of the project's own would use them against the stand-in."""

from __future__ import annotations

import kubernetes
from kubernetes.stream import stream

from tests.unit.k3s_stream.harness import NAMESPACE, Lab, make_pod, stamp, write


def test_python_client_exec_and_logs(lab: Lab) -> None:
    lab.put_pod(make_pod("pyclient", "app"))
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(str(lab.kubeconfig), client_configuration=config)
    api = kubernetes.client.CoreV1Api(kubernetes.client.ApiClient(config))
    out = stream(
        api.connect_get_namespaced_pod_exec,
        "pyclient",
        NAMESPACE,
        command=["sh", "-c", "echo from the pod; echo oops >&2"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
    )
    assert out == "from the pod\noops\n"
    client = stream(
        api.connect_get_namespaced_pod_exec,
        "pyclient",
        NAMESPACE,
        command=["sh", "-c", "exit 5"],
        stderr=True,
        stdin=False,
        stdout=True,
        tty=False,
        _preload_content=False,
    )
    client.run_forever(timeout=10)
    assert client.returncode == 5
    stored = lab.runtime.pod(NAMESPACE, "pyclient")
    assert stored is not None
    write(lab.pod_dir(dict(stored), "app") / "0.log", (stamp(), "stdout", "F", "a line"))
    assert api.read_namespaced_pod_log("pyclient", NAMESPACE) == "a line\n"
