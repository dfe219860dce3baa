"""``python -m gorkheavy_lab.k3s build --out DIR [--version V] [--arch A]`` builds the artifact;
``python -m gorkheavy_lab.k3s schemas`` refreshes the bundled schemas; anything else runs the stand-in
itself from source (``python -m gorkheavy_lab.k3s server ...``), as the built ``k3s`` file would."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import build, cli, release, schemas


def _build(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m gorkheavy_lab.k3s build")
    parser.add_argument("--out", required=True, type=Path, help="directory to write the release assets into")
    parser.add_argument("--version", default=release.PINNED_VERSION, help="K3s version the build claims")
    parser.add_argument("--arch", default="amd64", choices=release.ARCHES)
    opts = parser.parse_args(argv)
    try:
        sums = build.build(opts.out, opts.version, opts.arch)
    except ValueError as exc:
        parser.error(str(exc))
    for name, digest in sorted(sums.items()):
        print(f"{digest}  {opts.out / name}")
    return 0


def main() -> int:
    args = sys.argv[1:]
    if args and args[0] == "build":
        return _build(args[1:])
    if args and args[0] == "schemas":
        target = Path(__file__).resolve().parent / "data" / "schemas" / "v1.36"
        for stem in schemas.extract(target):
            print(f"{target / stem}.json")
        return 0
    return cli.main(["k3s", *args])


if __name__ == "__main__":
    sys.exit(main())
