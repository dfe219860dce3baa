"""``python -m gorkheavy_lab.lab up|down|chat|status|site`` (see README.md beside this file)."""

from __future__ import annotations

import argparse
import sys

from gorkheavy_lab.lab.driver import Lab, LabError, LabSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gorkheavy_lab.lab",
        description="The lab: site.yml on this machine against the Proxmox VE stand-in, then gorkheavy chat.",
    )
    sub = parser.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="bring the lab up (or converge it) and run site.yml on it")
    up.add_argument("--no-site", action="store_true", help="only the lab itself, without running site.yml")
    up.add_argument(
        "ansible_args", nargs=argparse.REMAINDER, help="after --: more ansible-playbook arguments"
    )
    site = sub.add_parser(
        "site", help="run site.yml on the running lab (arguments after -- go to ansible-playbook)"
    )
    site.add_argument("ansible_args", nargs=argparse.REMAINDER)
    sub.add_parser("chat", help="kubectl exec -it -n gorkheavy deploy/orchestrator -- gorkheavy chat")
    sub.add_parser("status", help="what of the lab exists and runs")
    sub.add_parser("down", help="remove everything the lab created, and nothing else")
    args = parser.parse_args(argv)
    lab = Lab(LabSettings())
    extra = [a for a in getattr(args, "ansible_args", []) or [] if a != "--"]
    try:
        if args.command == "up":
            return lab.up(site=not args.no_site, extra=extra)
        if args.command == "site":
            return lab.run_site(extra).returncode
        if args.command == "chat":
            return lab.chat()
        if args.command == "status":
            return lab.status()
        return lab.down()
    except LabError as exc:
        print(f"lab: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
