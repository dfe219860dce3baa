"""Run the Proxmox VE stand-in as a process: ``python -m gorkheavy_lab.proxmox --help``."""

from __future__ import annotations

import argparse
import contextlib

from gorkheavy_lab.proxmox.backend import SimulatedBackend
from gorkheavy_lab.proxmox.standin import STATD_PERIOD, ProxmoxStandin
from gorkheavy_lab.proxmox.state import StorageDef


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gorkheavy_lab.proxmox", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8006)
    parser.add_argument("--nodes", default="pve1,pve2,pve3", help="comma-separated node names")
    parser.add_argument("--token", action="append", default=[], help="'user@realm!name=SECRET' (repeatable)")
    parser.add_argument("--user", action="append", default=[], help="'user@realm=PASSWORD' for ticket login")
    parser.add_argument("--state", help="JSON file that keeps the state across restarts")
    parser.add_argument("--ca-out", help="write the CA certificate (PEM) here")
    parser.add_argument(
        "--task-duration", action="append", default=[], help="'type=seconds', e.g. qmclone=0.3"
    )
    parser.add_argument(
        "--agent-delay", type=float, default=0.5, help="seconds until a started VM's agent answers"
    )
    parser.add_argument(
        "--statd-period",
        type=float,
        default=STATD_PERIOD,
        help="seconds between status-daemon cycles that refresh /cluster/resources (0: no lag)",
    )
    parser.add_argument(
        "--storage",
        action="append",
        default=[],
        help="add a storage: 'NAME=TYPE:CONTENT[,CONTENT...][:shared]', e.g. 'nfs=nfs:images,import:shared'",
    )
    parser.add_argument(
        "--unauthorized-delay",
        type=float,
        default=0.0,
        help="delay of 401 answers (the real server waits 3 s)",
    )
    args = parser.parse_args(argv)

    durations = {}
    for item in args.task_duration:
        name, _, seconds = item.partition("=")
        durations[name] = float(seconds)
    standin = ProxmoxStandin(
        nodes=[n for n in args.nodes.split(",") if n],
        state_file=args.state,
        task_durations=durations,
        backend=SimulatedBackend(agent_delay=args.agent_delay),
        unauthorized_delay=args.unauthorized_delay,
        statd_period=args.statd_period,
    )
    for spec in args.storage:
        name, _, rest = spec.partition("=")
        kind, _, tail = rest.partition(":")
        content, _, flag = tail.partition(":")
        if not (name and kind and content) or flag not in ("", "shared"):
            parser.error(f"--storage {spec!r}: expected NAME=TYPE:CONTENT[,CONTENT...][:shared]")
        standin.add_storage(StorageDef(name, kind, content.split(","), shared=flag == "shared"))
    for token in args.token:
        tokenid, _, secret = token.partition("=")
        standin.add_token(tokenid, secret)
    for user in args.user:
        userid, _, password = user.partition("=")
        standin.add_user(userid, password)
    with contextlib.suppress(KeyboardInterrupt):
        standin.serve_forever(args.host, args.port, ca_out=args.ca_out)


if __name__ == "__main__":
    main()
