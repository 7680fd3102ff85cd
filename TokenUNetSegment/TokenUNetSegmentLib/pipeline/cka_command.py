"""The ``cka`` command's arguments, without torch, so that ``tokenunet cka --help`` and argument errors answer at
once; the CKA itself (:mod:`.cka`, torch) is imported when the command runs."""

from __future__ import annotations

import argparse

from .arguments import integer, user_path

POOLINGS = ("positions", "flatten", "mean")


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the CKA command's arguments to ``parser`` (so it can be mounted as a subcommand)."""
    parser.add_argument("--a", required=True, help="first network name (see build_network), e.g. MetaUNETR-conv")
    parser.add_argument("--b", required=True, help="second network name, e.g. MetaUNETR-recurrence or 32Attn")
    parser.add_argument(
        "--in-channels", type=integer(1, 64), default=1, help="input channels of both networks (default 1)"
    )
    parser.add_argument(
        "--size", type=integer(1, 4096), default=64, help="side of the cubic random inputs (default 64)"
    )
    parser.add_argument("--samples", type=integer(2, 100000), default=8, help="number of input samples (default 8)")
    parser.add_argument(
        "--pooling",
        choices=POOLINGS,
        default="positions",
        help="what a sample is: a position of the coarsest stage grid (default), or a whole input (flatten, mean)",
    )
    parser.add_argument("--debiased", action="store_true", help="unbiased HSIC estimator (near 0 when unrelated)")
    parser.add_argument(
        "--seed", type=integer(0, 2**63 - 1), default=0, help="seed of the weights and inputs (default 0)"
    )
    parser.add_argument("--a-option", action="append", metavar="NAME=VALUE", help="constructor option of --a")
    parser.add_argument("--b-option", action="append", metavar="NAME=VALUE", help="constructor option of --b")
    parser.add_argument(
        "--a-weights", type=user_path, help="state dict of --a (.safetensors or torch file); default: random init"
    )
    parser.add_argument("--b-weights", type=user_path, help="state dict of --b; default: random init")
    parser.add_argument("--out", default="cka", help="folder for cka.json and cka.png (default ./cka)")
    return parser


def run_command(args: argparse.Namespace) -> int:
    """The pipeline CLI's ``cka`` command (:func:`.cka.run_command`)."""
    from .cka import run_command as run

    return run(args)
