"""Run the Proxmox VE stand-in: ``python -m gorkheavy_lab.proxmox serve --help`` (README.md beside this file).

``serve`` runs the API until it is stopped (SIGINT or SIGTERM); VMs are simulated (``--backend simulated``) or
real systemd test hosts in podman (``--backend podman --network NAME``). ``remove-vms`` removes the podman
containers of a prefix (what ``serve --backend podman`` created). Without a sub-command, ``serve`` is meant.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import signal
import sys
from pathlib import Path
from types import FrameType

from gorkheavy_lab.proxmox.backend import SimulatedBackend, VmBackend
from gorkheavy_lab.proxmox.podman import IMAGE, PodmanBackend, PodmanError
from gorkheavy_lab.proxmox.standin import STATD_PERIOD, ProxmoxStandin
from gorkheavy_lab.proxmox.state import StorageDef

PROG = "python -m gorkheavy_lab.proxmox"


def _serve_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser(
        "serve",
        help="run the API (default)",
        description="Run the Proxmox VE 9.1 API stand-in over HTTPS until SIGINT/SIGTERM. It prints "
        "'Proxmox VE stand-in on https://HOST:PORT (CA: FILE)' once it accepts connections.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8006, help="port (default 8006, as pveproxy; 0: any free)")
    serve.add_argument("--nodes", default="pve1,pve2,pve3", help="comma-separated node names")
    serve.add_argument(
        "--state-dir",
        type=Path,
        help="directory for state.json (the cluster, kept across restarts), pve-ca.pem and the boot-hang "
        "markers (boot-hangs/<VM name>); created when missing",
    )
    serve.add_argument("--state", help="JSON state file (default: STATE_DIR/state.json)")
    serve.add_argument("--ca-out", help="write the CA certificate (PEM) here (default: STATE_DIR/pve-ca.pem)")
    serve.add_argument(
        "--token",
        action="append",
        default=[],
        help="'user@realm!name=SECRET' (repeatable; on the command line, so visible in ps: see --token-file)",
    )
    serve.add_argument(
        "--token-file",
        type=Path,
        action="append",
        default=[],
        help="a file of one 'user@realm!name=SECRET' per line (blank lines and '#' comments skipped), "
        "readable by its owner only (repeatable)",
    )
    serve.add_argument("--user", action="append", default=[], help="'user@realm=PASSWORD' for ticket login")
    serve.add_argument(
        "--task-duration", action="append", default=[], help="'type=seconds', e.g. qmclone=0.3"
    )
    serve.add_argument(
        "--statd-period",
        type=float,
        default=STATD_PERIOD,
        help="seconds between status-daemon cycles that refresh /cluster/resources (0: no lag)",
    )
    serve.add_argument(
        "--storage",
        action="append",
        default=[],
        help="add a storage: 'NAME=TYPE:CONTENT[,CONTENT...][:shared]', e.g. 'nfs=nfs:images,import:shared'",
    )
    serve.add_argument(
        "--unauthorized-delay",
        type=float,
        default=0.0,
        help="delay of 401 answers (the real server waits 3 s)",
    )
    serve.add_argument("--backend", choices=["simulated", "podman"], default="simulated")
    serve.add_argument(
        "--agent-delay", type=float, default=0.5, help="simulated: seconds until a started VM's agent answers"
    )
    serve.add_argument("--network", help="podman: the (existing) podman network the VMs are attached to")
    serve.add_argument(
        "--container-prefix",
        "--name-prefix",
        dest="container_prefix",
        default="gorkheavy-lab-",
        help="podman: a VM's container is PREFIX + its name (default gorkheavy-lab-)",
    )
    serve.add_argument("--image", default=IMAGE, help=f"podman: the test-host image (default {IMAGE})")
    serve.add_argument(
        "--ip-forward",
        type=int,
        choices=[0, 1],
        default=0,
        help="podman: IPv4 forwarding in each VM's network namespace (default 0, as on a fresh VM)",
    )


def _remove_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    remove = sub.add_parser(
        "remove-vms",
        help="remove the podman containers of a prefix",
        description="Remove every container 'serve --backend podman' created with this prefix (label "
        "gorkheavy.lab.owner), running or not, and print their names. Nothing else is touched.",
    )
    remove.add_argument("--network", required=True, help="the podman network the VMs are attached to")
    remove.add_argument(
        "--container-prefix", "--name-prefix", dest="container_prefix", default="gorkheavy-lab-"
    )


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _serve_parser(sub)
    _remove_parser(sub)
    return parser


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def serve(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    state_dir: Path | None = args.state_dir
    if state_dir is not None:
        state_dir.mkdir(parents=True, exist_ok=True)
    state = args.state or (state_dir / "state.json" if state_dir else None)
    ca_out = args.ca_out or (state_dir / "pve-ca.pem" if state_dir else None)
    durations = {}
    for item in args.task_duration:
        name, _, seconds = item.partition("=")
        try:
            durations[name] = float(seconds)
        except ValueError:
            parser.error(f"--task-duration {item!r}: expected TYPE=SECONDS, e.g. qmclone=0.3")
    backend: VmBackend
    if args.backend == "podman":
        if not args.network:
            parser.error("--backend podman needs --network NAME (an existing podman network)")
        try:
            backend = PodmanBackend(
                args.network,
                prefix=args.container_prefix,
                image=args.image,
                ip_forward=args.ip_forward,
                hang_dir=state_dir / "boot-hangs" if state_dir else None,
            )
        except (PodmanError, ValueError) as exc:
            parser.error(str(exc))
    else:
        backend = SimulatedBackend(agent_delay=args.agent_delay)
    standin = ProxmoxStandin(
        nodes=[n for n in args.nodes.split(",") if n],
        state_file=state,
        task_durations=durations,
        backend=backend,
        unauthorized_delay=args.unauthorized_delay,
        statd_period=args.statd_period,
    )
    if isinstance(backend, PodmanBackend):
        # the guests' resolv.conf comes from the node's, as qemu-server's get_dns_conf reads it
        dns, search = _resolv_conf(Path("/etc/resolv.conf"))
        standin.host_dns = dns or standin.host_dns
        standin.host_search = search or standin.host_search
    for spec in args.storage:
        name, _, rest = spec.partition("=")
        kind, _, tail = rest.partition(":")
        content, _, flag = tail.partition(":")
        if not (name and kind and content) or flag not in ("", "shared"):
            parser.error(f"--storage {spec!r}: expected NAME=TYPE:CONTENT[,CONTENT...][:shared]")
        standin.add_storage(StorageDef(name, kind, content.split(","), shared=flag == "shared"))
    for token in args.token:
        tokenid, secret = _token(token)
        if not tokenid:
            parser.error(f"--token {token!r}: expected 'user@realm!name=SECRET'")
        standin.add_token(tokenid, secret)
    for path in args.token_file:
        try:
            tokens = _token_file(path)
        except ValueError as exc:
            parser.error(f"--token-file {path}: {exc}")
        for tokenid, secret in tokens:
            standin.add_token(tokenid, secret)
    for user in args.user:
        userid, sep, password = user.partition("=")
        if not sep or "@" not in userid:
            parser.error(f"--user {user!r}: expected 'user@realm=PASSWORD'")
        standin.add_user(userid, password)
    # SIGINT too, explicitly: started from a shell's background job, the process inherits SIGINT ignored
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, _terminate)
    with contextlib.suppress(KeyboardInterrupt):
        standin.serve_forever(args.host, args.port, ca_out=ca_out)


def _token(spec: str) -> tuple[str, str]:
    """('user@realm!name', 'SECRET') of 'user@realm!name=SECRET'; ('', '') when malformed."""
    tokenid, sep, secret = spec.partition("=")
    if not sep or not secret or not re.fullmatch(r"[^@!\s]+@[^@!\s]+![A-Za-z][A-Za-z0-9._-]*", tokenid):
        return "", ""
    return tokenid, secret


def _token_file(path: Path) -> list[tuple[str, str]]:
    """The tokens of a token file. The secrets are never put into an error message."""
    try:
        mode = path.stat().st_mode
        text = path.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read it: {exc.strerror}") from None
    if mode & 0o077:
        raise ValueError(f"its mode is {mode & 0o777:04o}; the secrets need 0600 (chmod 600 {path})")
    tokens = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        tokenid, secret = _token(line)
        if not tokenid:
            raise ValueError(f"line {number}: expected 'user@realm!name=SECRET'")
        tokens.append((tokenid, secret))
    if not tokens:
        raise ValueError("it names no token")
    return tokens


def _resolv_conf(path: Path) -> tuple[list[str], str]:
    dns: list[str] = []
    search = ""
    with contextlib.suppress(OSError):
        for line in path.read_text().splitlines():
            words = line.split()
            if len(words) >= 2 and words[0] == "nameserver" and len(dns) < 3:
                dns.append(words[1])
            elif len(words) >= 2 and words[0] in ("search", "domain"):
                search = " ".join(words[1:])
    return dns, search


def remove_vms(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    try:
        backend = PodmanBackend(args.network, prefix=args.container_prefix)
        for name in backend.remove_all():
            print(f"removed {name}")
    except (PodmanError, ValueError) as exc:
        parser.error(str(exc))


def main(argv: list[str] | None = None) -> None:
    args_in = list(sys.argv[1:] if argv is None else argv)
    if not args_in or args_in[0] not in ("serve", "remove-vms", "-h", "--help"):
        args_in.insert(0, "serve")
    parser = _parser()
    args = parser.parse_args(args_in)
    if args.command == "serve":
        serve(args, parser)
    else:
        remove_vms(args, parser)


if __name__ == "__main__":
    main()
