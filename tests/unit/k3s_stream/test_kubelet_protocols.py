"""The streaming endpoints at the message level: each channel protocol a client may pick (v5, v4, the
base64 one, the original one), the kubelet's first empty message, the Status or text on the error channel, the
v5 close signal, resize, and the kubelet's and API server's refusals."""

from __future__ import annotations

import json
import ssl
from typing import Any
from urllib.parse import urlencode

import aiohttp
import pytest
from gorkheavy_lab.k3s.stream import channels

from tests.unit.k3s_stream.harness import NAMESPACE, Lab, make_pod


@pytest.fixture(scope="module")
def pod(lab: Lab) -> str:
    lab.put_pod(make_pod("proto", "app"))
    return "proto"


async def session_messages(
    url: str,
    ctx: ssl.SSLContext,
    protocol: str,
    send: list[bytes | str] = (),  # type: ignore[assignment]
) -> tuple[str | None, list[Any]]:
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(url, protocols=[protocol], ssl=ctx) as ws,
    ):
        for message in send:
            if isinstance(message, str):
                await ws.send_str(message)
            else:
                await ws.send_bytes(message)
        received = [msg.data async for msg in ws]
        return ws.protocol, received


def kubelet_exec(lab: Lab, pod: str, command: list[str], **flags: str) -> str:
    query = urlencode([*flags.items(), *(("command", c) for c in command)])
    return f"{lab.kubelet_url}/exec/{NAMESPACE}/{pod}/app?{query}"


async def test_v4_binary_status_json_with_exit_code(lab: Lab, pod: str) -> None:
    url = kubelet_exec(lab, pod, ["sh", "-c", "echo hi; exit 2"], output="1", error="1")
    chosen, received = await session_messages(url, lab.admin_ssl(), channels.V4)
    assert chosen == channels.V4
    assert received[0] == b"\x01"  # the kubelet's empty first message on stdout
    assert b"".join(m[1:] for m in received if m[0] == channels.STDOUT) == b"hi\n"
    status = json.loads(received[-1][1:])
    assert received[-1][0] == channels.ERROR
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "2"}]


async def test_original_protocol_has_error_text_and_base64_has_text_messages(lab: Lab, pod: str) -> None:
    url = kubelet_exec(lab, pod, ["sh", "-c", "echo oops >&2; exit 1"], error="1")
    _, received = await session_messages(url, lab.admin_ssl(), channels.V1)
    assert received[0] == b"\x02"
    assert (
        received[-1] == b"\x03command terminated with non-zero exit code: "
        b"error executing command [sh -c echo oops >&2; exit 1], exit code 1"
    )
    assert b"\x02oops\n" in received
    url = kubelet_exec(lab, pod, ["echo", "b64"], output="1")
    chosen, received = await session_messages(url, lab.admin_ssl(), channels.V4_BASE64)
    assert chosen == channels.V4_BASE64
    assert received[0] == "1"
    assert "1YjY0Cg==" in received
    assert json.loads(__import__("base64").b64decode(received[-1][1:])) == {
        "metadata": {},
        "status": "Success",
    }


async def test_v5_through_the_api_with_stdin_close_and_resize(lab: Lab, pod: str) -> None:
    query = urlencode([("stdin", "true"), ("stdout", "true"), ("command", "cat")])
    url = f"{lab.api_url}/api/v1/namespaces/{NAMESPACE}/pods/{pod}/exec?{query}"
    _, received = await session_messages(
        url, lab.admin_ssl(), channels.V5, [b"\x00abc", b"\x00def", bytes([255, 0])]
    )
    assert b"".join(m[1:] for m in received if m[0] == channels.STDOUT) == b"abcdef"
    assert received[-1] == b'\x03{"metadata": {}, "status": "Success"}'
    query = urlencode([("stdin", "true"), ("stdout", "true"), ("tty", "true"), ("command", "sh")])
    url = f"{lab.api_url}/api/v1/namespaces/{NAMESPACE}/pods/{pod}/exec?{query}"
    resize = b"\x04" + json.dumps({"Width": 132, "Height": 50}).encode()
    _, received = await session_messages(
        url, lab.admin_ssl(), channels.V5, [resize, b"\x00stty size; exit\r"]
    )
    assert b"50 132" in b"".join(m[1:] for m in received if m[0] == channels.STDOUT)


async def test_kubelet_refusals(lab: Lab, pod: str) -> None:
    async with aiohttp.ClientSession() as session:
        anonymous = ssl.create_default_context(cadata=lab.pki.server_ca.pem.decode())
        url = kubelet_exec(lab, pod, ["true"], output="1")
        with pytest.raises(aiohttp.ClientError):  # the kubelet's TLS wants a client certificate
            async with session.get(url, ssl=anonymous) as response:
                await response.read()
        async with session.get(url, ssl=lab.admin_ssl()) as response:
            assert (response.status, await response.text()) == (400, "Upgrade request required")
        async with session.get(kubelet_exec(lab, pod, ["true"]), ssl=lab.admin_ssl()) as response:
            assert (response.status, await response.text()) == (
                400,
                "you must specify at least 1 of stdin, stdout, stderr",
            )
        ghost = f"{lab.kubelet_url}/exec/{NAMESPACE}/ghost/app?output=1&command=true"
        async with session.get(ghost, ssl=lab.admin_ssl()) as response:
            assert (response.status, await response.text()) == (404, "pod does not exist")
        logs = f"{lab.kubelet_url}/containerLogs/{NAMESPACE}/{pod}/nope"
        async with session.get(logs, ssl=lab.admin_ssl()) as response:
            assert (response.status, await response.text()) == (
                404,
                'container "nope" not found in pod "proto"\n',
            )
        async with session.get(f"{logs[: -len('nope')]}app?tailLines=-1", ssl=lab.admin_ssl()) as response:
            assert (response.status, await response.text()) == (422, '{"message": "Invalid request."}')
        node = lab.kubeconfig.parent / "node.pem"
        cert, key = lab.pki.node_client("other-node")
        node.write_bytes(cert + key)
        ctx = ssl.create_default_context(cadata=lab.pki.server_ca.pem.decode())
        ctx.load_cert_chain(str(node))
        async with session.get(url, ssl=ctx) as response:
            assert response.status == 403
            assert "user=system:node:other-node" in await response.text()


async def test_spdy_is_refused_with_a_clear_answer_and_discovery_lists_the_subresources(
    lab: Lab, pod: str
) -> None:
    url = f"{lab.api_url}/api/v1/namespaces/{NAMESPACE}/pods/{pod}/exec?stdout=true&command=true"
    headers = {
        "Connection": "Upgrade",
        "Upgrade": "SPDY/3.1",
        "X-Stream-Protocol-Version": "v4.channel.k8s.io",
    }
    async with aiohttp.ClientSession() as session:
        async with session.post(url, ssl=lab.admin_ssl(), headers=headers) as response:
            assert response.status == 400
            assert "SPDY/3.1 streams are not modelled" in await response.text()
        async with session.get(f"{lab.api_url}/api/v1", ssl=lab.admin_ssl()) as response:
            resources = {r["name"]: r["verbs"] for r in (await response.json())["resources"]}
    assert resources["pods/exec"] == ["create", "get"]
    assert resources["pods/attach"] == ["create", "get"]
    assert resources["pods/log"] == ["get"]


async def test_api_translates_v5_and_proxies_the_older_protocols(lab: Lab, pod: str) -> None:
    query = urlencode([("stdout", "true"), ("command", "sh"), ("command", "-c"), ("command", "exit 2")])
    url = f"{lab.api_url}/api/v1/namespaces/{NAMESPACE}/pods/{pod}/exec?{query}"
    # v5: the translator's own first message, the exit in the translator's words
    _, received = await session_messages(url, lab.admin_ssl(), channels.V5)
    assert received[0] == b"\x01"
    assert [m for m in received if m[:1] == b"\x01"] == [b"\x01"]  # the kubelet's empty one is not passed on
    status = json.loads(received[-1][1:])
    assert (
        status["message"] == "command terminated with non-zero exit code: command terminated with exit code 2"
    )
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "2"}]
    # v4: proxied, the kubelet's own words
    _, received = await session_messages(url, lab.admin_ssl(), channels.V4)
    assert json.loads(received[-1][1:])["message"] == (
        "command terminated with non-zero exit code: error executing command [sh -c exit 2], exit code 2"
    )
    # a kubelet that refuses: after the upgrade, an InternalError Status
    waiting = make_pod("refused", "app")
    waiting["status"]["containerStatuses"][0]["state"] = {"waiting": {"reason": "ContainerCreating"}}
    lab.put_pod(waiting)
    url = f"{lab.api_url}/api/v1/namespaces/{NAMESPACE}/pods/refused/exec?{query}"
    _, received = await session_messages(url, lab.admin_ssl(), channels.V5)
    assert received[0] == b"\x01"
    refused = json.loads(received[-1][1:])
    assert (refused["reason"], refused["code"]) == ("InternalError", 500)
    assert (
        refused["message"]
        == 'Internal error occurred: unable to upgrade connection: container not found ("app")'
    )
