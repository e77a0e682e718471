"""`melfusion` console script: thin argparse front end; each subcommand lives in melfusion.commands."""

from __future__ import annotations

import argparse
import importlib
import sys

from melfusion.errors import MelfusionInputError

# Each module defines `register(subparsers) -> None` and sets `func` on its parser.
_COMMAND_MODULES = (
    "melfusion.commands.generate",
    "melfusion.commands.convert",
    "melfusion.commands.train",
    "melfusion.commands.evaluate",
    "melfusion.commands.data",
    "melfusion.commands.pair",
    "melfusion.commands.describe",
    "melfusion.commands.weights",
    "melfusion.commands.app",
)


def build_parser() -> argparse.ArgumentParser:
    from melfusion import __version__

    parser = argparse.ArgumentParser(prog="melfusion", description="Music from an image and a text prompt.")
    parser.add_argument("--version", action="version", version=f"melfusion {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except MelfusionInputError as err:
        message = " ".join(str(err).splitlines())  # one line, even if a path or reason held a newline
        print(f"melfusion {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("melfusion: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
