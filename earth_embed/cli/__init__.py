"""The ``earth-embed`` command. Each subcommand module has a ``register(subparsers)`` function."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from ..errors import EarthEmbedError
from . import apps, region, scene
from .common import cli_session, default_model

COMMAND_MODULES = [scene, apps, region]

__all__ = ["build_parser", "default_model", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="earth-embed",
        description="Dense self-supervised Sentinel-2 embeddings: stream scenes to georeferenced rasters.",
    )
    from ..version import __version__

    parser.add_argument("--version", action="version", version=f"earth-embed {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        with cli_session(args.command):
            return int(args.func(args) or 0)
    except EarthEmbedError as err:
        print(f"earth-embed {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        signum = getattr(err, "signum", signal.SIGINT)
        said = getattr(args, "on_interrupt", None)
        what = said(args) if said else "temporary files were removed and nothing was written under the final name"
        print(f"earth-embed {args.command}: interrupted ({signal.Signals(signum).name}); {what}", file=sys.stderr)
        return 128 + signum
    except OSError as err:  # e.g. a folder that cannot be created: a message, not a traceback
        print(f"earth-embed {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
