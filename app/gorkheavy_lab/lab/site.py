"""One run of ``ansible-playbook site.yml``: its output shown as it comes, the time of each stage, the recap.

The stage of a play is the playbook under ``playbooks/`` that names it (site.yml imports one playbook per
stage), so the timings follow the playbooks as they are, with no list kept here.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

import yaml

STAGES = ("provision", "prepare", "cluster", "ensemble")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")
_PLAY = re.compile(r"^PLAY \[(.*)\] \**$")
_RECAP = re.compile(
    r"^(?P<host>\S+)\s*:\s*ok=(?P<ok>\d+)\s+changed=(?P<changed>\d+)\s+unreachable=(?P<unreachable>\d+)\s+"
    r"failed=(?P<failed>\d+)\s+skipped=(?P<skipped>\d+)\s+rescued=(?P<rescued>\d+)\s+ignored=(?P<ignored>\d+)"
)


@dataclass(frozen=True)
class HostRecap:
    ok: int
    changed: int
    unreachable: int
    failed: int
    skipped: int
    rescued: int
    ignored: int


@dataclass
class SiteRun:
    """What a run of site.yml did: exit code, every output line, the recap per host, seconds per stage."""

    returncode: int
    lines: list[str] = field(default_factory=list)
    recap: dict[str, HostRecap] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    def clean(self) -> bool:
        """Exit 0 and every host without failures or unreachable connections."""
        return (
            self.returncode == 0
            and bool(self.recap)
            and all(r.failed == 0 and r.unreachable == 0 for r in self.recap.values())
        )

    def unchanged(self) -> bool:
        return self.clean() and all(r.changed == 0 for r in self.recap.values())

    def recap_text(self) -> str:
        return " | ".join(
            f"{host}: ok={r.ok} changed={r.changed} unreachable={r.unreachable} failed={r.failed}"
            for host, r in sorted(self.recap.items())
        )


# The driver's last line about a run: "site.yml exit 0 after 214 s (provision 26 s, prepare 148 s, ...)".
_TIMING = re.compile(r"site\.yml exit (?P<rc>-?\d+) after (?P<total>\d+) s \((?P<stages>[^)]*)\)")


def parse_timing(text: str) -> SiteRun | None:
    """The exit code and seconds (total and per stage) of the last run the driver's output reports."""
    found = list(_TIMING.finditer(_ANSI.sub("", text)))
    if not found:
        return None
    last = found[-1]
    run = SiteRun(returncode=int(last["rc"]), seconds=float(last["total"]))
    for item in last["stages"].split(", "):
        stage, _, seconds = item.rpartition(" ")[0].rpartition(" ")
        if stage and seconds.isdigit():
            run.stage_seconds[stage] = float(seconds)
    return run


def timing_table(first: SiteRun, second: SiteRun) -> str:
    """First run against second run, per stage and in total, with the ratio."""
    rows = [f"{'stage':<12}{'first run':>12}{'second run':>12}{'second/first':>14}"]
    for stage in (*STAGES, "total"):
        a = first.seconds if stage == "total" else first.stage_seconds.get(stage, 0.0)
        b = second.seconds if stage == "total" else second.stage_seconds.get(stage, 0.0)
        ratio = f"{b / a:.2f}" if a else "-"
        rows.append(f"{stage:<12}{a:>11.0f}s{b:>11.0f}s{ratio:>14}")
    return "\n".join(rows)


def play_stages(repo: Path) -> dict[str, str]:
    """Play name -> stage, read from playbooks/<stage>.yml."""
    found: dict[str, str] = {}
    for stage in STAGES:
        path = repo / "playbooks" / f"{stage}.yml"
        if not path.is_file():
            continue
        for play in yaml.safe_load(path.read_text()) or []:
            if isinstance(play, dict) and "name" in play:
                found[str(play["name"])] = stage
    return found


def parse_recap(lines: Sequence[str]) -> dict[str, HostRecap]:
    recap: dict[str, HostRecap] = {}
    for line in lines:
        match = _RECAP.match(_ANSI.sub("", line))
        if match:
            values = {k: int(v) for k, v in match.groupdict().items() if k != "host"}
            recap[match["host"]] = HostRecap(**values)
    return recap


def run_site(
    command: Sequence[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    echo: TextIO | None = sys.stdout,
    log: Path | None = None,
    announce: Callable[[str], None] | None = None,
) -> SiteRun:
    """Run ``command`` (an ansible-playbook of site.yml), echoing its output, timing each stage."""
    stages = play_stages(cwd)
    started = time.monotonic()
    current: tuple[str, float] | None = None
    run = SiteRun(returncode=-1)
    handle = log.open("w") if log is not None else None
    try:
        proc = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\n")
            run.lines.append(line)
            if echo is not None:
                echo.write(raw)
                echo.flush()
            if handle is not None:
                handle.write(_ANSI.sub("", raw))
            match = _PLAY.match(_ANSI.sub("", line))
            if match:
                stage = stages.get(match[1], "other")
                now = time.monotonic()
                if current is None or current[0] != stage:
                    if current is not None:
                        run.stage_seconds[current[0]] = (
                            run.stage_seconds.get(current[0], 0.0) + now - current[1]
                        )
                    current = (stage, now)
                    if announce is not None:
                        announce(f"stage {stage} (after {now - started:.0f} s)")
        run.returncode = proc.wait()
    finally:
        if handle is not None:
            handle.close()
    end = time.monotonic()
    if current is not None:
        run.stage_seconds[current[0]] = run.stage_seconds.get(current[0], 0.0) + end - current[1]
    run.seconds = end - started
    run.recap = parse_recap(run.lines)
    return run
