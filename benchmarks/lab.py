"""site.yml on the lab, first run against second run, per stage. Prints a table.

    python benchmarks/lab.py              # a fresh lab: down, up, site.yml twice, down (as root; minutes)
    python benchmarks/lab.py --keep       # leave the lab up afterwards (make lab-chat, make lab-down)

The first run starts from nothing: the Proxmox stand-in creates the templates and VMs (systemd test
hosts), the prepare stage hardens them, the cluster stage installs the K3s stand-in and joins the agents, the
ensemble stage deploys the models and the orchestrator and waits for their rollouts (model pulls included).
The second run is the same command on the converged lab, which must change nothing. Target: the second run
takes at most a third of the first. The load average is printed with the figures: the machine is shared, and
every stage is mostly SSH round trips and Python start-ups, so the seconds follow the load.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "app"), str(REPO)]

from gorkheavy_lab.lab import Lab, LabSettings  # noqa: E402
from gorkheavy_lab.lab.site import timing_table  # noqa: E402

TARGET = 1 / 3


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the lab up afterwards")
    parser.add_argument("--quiet", action="store_true", help="do not echo ansible-playbook's output")
    args = parser.parse_args()
    lab = Lab(LabSettings())
    lab.down()
    if lab.up(site=False) != 0:
        return 1
    load_before = os.getloadavg()
    first = lab.run_site(echo=not args.quiet)
    if not first.clean():
        print(f"benchmark: the first run failed: {first.recap_text()}", file=sys.stderr)
        return 1
    second = lab.run_site(echo=not args.quiet)
    load_after = os.getloadavg()
    print()
    print(timing_table(first, second))
    print(f"second run changed nothing: {second.unchanged()} ({second.recap_text()})")
    ratio = second.seconds / first.seconds
    verdict = "met" if ratio <= TARGET else "NOT met"
    print(f"target second/first <= {TARGET:.2f}: {verdict} ({ratio:.2f})")
    print(f"load average (1, 5, 15 min) before: {load_before}, after: {load_after}; {os.cpu_count()} CPUs")
    if not args.keep:
        lab.down()
    return 0 if second.unchanged() else 1


if __name__ == "__main__":
    sys.exit(main())
