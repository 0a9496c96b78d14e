"""The `ocdit` command: `ocdit templates render`, `segment`, `bag`, `data`, `eval`, `train`."""

from __future__ import annotations

import argparse
import sys

from . import __version__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ocdit", description="OC-DiT instance segmentation from CAD templates.")
    parser.add_argument("--version", action="version", version=f"ocdit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    from .pipeline import cli as segment_cli

    segment_cli.add_parser(sub).set_defaults(run=segment_cli.run)
    try:
        from .templates import cli as templates_cli
    except ImportError:  # the template renderer's optional dependencies are missing
        templates_cli = None
    if templates_cli is not None:
        templates_cli.add_parser(sub).set_defaults(run=templates_cli.run)
    from . import bag as bag_cli  # rosbags itself is imported only when the command runs

    bag_cli.add_parser(sub).set_defaults(run=bag_cli.run)
    from .data import cli as data_cli  # trimesh/pybullet are imported only when a data command runs

    data_cli.add_parser(sub).set_defaults(run=data_cli.run)
    from .evaluation import cli as eval_cli  # pycocotools is imported only when scoring

    eval_cli.add_parser(sub).set_defaults(run=eval_cli.run)
    from .training import cli as train_cli

    train_cli.add_parser(sub).set_defaults(run=train_cli.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "run", None):
        parser.print_help()
        return 0 if argv is None and len(sys.argv) == 1 else 2
    return int(args.run(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
