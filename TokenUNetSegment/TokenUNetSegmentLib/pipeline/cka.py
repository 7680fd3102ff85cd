"""Linear Centered Kernel Alignment (CKA) between the encoder stages of two networks (MetaUNETR's analysis).

Reference: Kornblith, Norouzi, Lee, Hinton, "Similarity of Neural Network Representations Revisited",
ICML 2019. Linear CKA of X (n, p) and Y (n, q), both centred over the n samples, is
``HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y))`` with the linear kernel, i.e.
``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``: 1 for identical representations, invariant to orthogonal
transforms and isotropic scaling of either side, near 0 for independent ones.

Samples and features: one sample is one input volume. By default (``pooling="flatten"``) a stage's
feature vector for a sample is its whole map flattened (channels x positions), so spatial layout
counts and stages of different resolutions compare directly; ``pooling="mean"`` averages over
positions first (channels only, invariant to where things are). Use more samples than a handful:
with n samples, independent random features still give a CKA around p / n for small n.

Command line::

    python -m TokenUNetSegmentLib.pipeline.cka --a MetaUNETR-conv --b MetaUNETR-recurrence --size 64 --out cka
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ..model import build_network, network_names

POOLINGS = ("flatten", "mean")


def _as_matrix(features, name: str) -> torch.Tensor:
    matrix = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2D (samples, features) matrix, got shape {tuple(matrix.shape)}.")
    return matrix.detach().to("cpu", torch.float64)


def linear_cka(x, y) -> float:
    """Linear CKA of two (n_samples, features) matrices (torch or numpy) with the same samples in the same order.

    Raises:
        ValueError: not 2D, different sample counts, fewer than 2 samples, or a constant representation.
    """
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same number of samples, got {x.shape[0]} and {y.shape[0]}.")
    if x.shape[0] < 2:
        raise ValueError("CKA needs at least 2 samples.")
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    if x.shape[0] <= max(x.shape[1], y.shape[1]):  # kernel (Gram) form: n x n
        gram_x, gram_y = x @ x.T, y @ y.T
        cross, self_x, self_y = (gram_x * gram_y).sum(), gram_x.square().sum(), gram_y.square().sum()
    else:  # feature form: p x q
        cross, self_x, self_y = (y.T @ x).square().sum(), (x.T @ x).square().sum(), (y.T @ y).square().sum()
    denominator = torch.sqrt(self_x * self_y)
    if denominator == 0:
        raise ValueError("CKA is undefined for a representation that is constant over the samples.")
    return float(cross / denominator)


def stage_feature_matrices(
    network: nn.Module, inputs: Sequence[torch.Tensor], pooling: str = "flatten"
) -> list[torch.Tensor]:
    """The (n_samples, features) matrix of every encoder stage of ``network`` (``network.stage_features``).

    Args:
        network: a network with ``stage_features(x) -> list of (1, C, h, w, d) maps``.
        inputs: the samples, each (1, in_channels, H, W, D); run one at a time, in eval mode.
        pooling: ``"flatten"`` (whole map per sample) or ``"mean"`` (average over positions).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling '{pooling}'; choose one of {', '.join(POOLINGS)}.")
    if not hasattr(network, "stage_features"):
        raise ValueError(f"{type(network).__name__} has no stage_features method, so CKA cannot compare its stages.")
    network.eval()
    per_stage: list[list[torch.Tensor]] = []
    with torch.inference_mode():
        for x in inputs:
            for index, feature in enumerate(network.stage_features(x)):
                row = feature.flatten(2).mean(dim=2) if pooling == "mean" else feature.flatten(1)
                if index == len(per_stage):
                    per_stage.append([])
                per_stage[index].append(row.to(torch.float64))
    return [torch.cat(rows) for rows in per_stage]


def cka_matrix(
    network_a: nn.Module, network_b: nn.Module, inputs: Sequence[torch.Tensor], pooling: str = "flatten"
) -> np.ndarray:
    """The stage x stage linear CKA matrix between two networks on the same inputs (rows: stages of ``a``)."""
    if len(inputs) < 2:
        raise ValueError("CKA needs at least 2 input samples.")
    features_a = stage_feature_matrices(network_a, inputs, pooling)
    features_b = stage_feature_matrices(network_b, inputs, pooling)
    return np.array([[linear_cka(fa, fb) for fb in features_b] for fa in features_a])


def _literal(text: str):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def _parse_options(pairs: Sequence[str] | None) -> dict:
    options = {}
    for pair in pairs or ():
        key, sep, value = pair.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(f"network option '{pair}' must look like NAME=VALUE (e.g. feature_size=12).")
        options[key] = _literal(value)
    return options


def _build(name: str, in_channels: int, size: int, options: dict, weights: str | None) -> nn.Module:
    if name.startswith("MetaUNETR-"):  # its fixed-size mixers need to know the input size
        options = {"img_size": size, **options}
    network = build_network(name, in_channels, 2, **options)
    if weights:
        path = Path(weights)
        if not path.is_file():
            raise ValueError(f"weights file not found: {path}")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            network.load_state_dict(state)
        except RuntimeError as error:
            first = str(error).strip().splitlines()[0]
            raise ValueError(f"weights {path.name} do not fit network '{name}': {first}") from None
    return network


def save_heatmap(matrix: np.ndarray, path: Path, label_a: str, label_b: str) -> None:
    """Write the CKA matrix as a heatmap PNG (needs matplotlib)."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(1.2 + 0.9 * matrix.shape[1], 1.0 + 0.9 * matrix.shape[0]), layout="constrained")
    axes = figure.add_subplot()
    image = axes.imshow(matrix, vmin=0.0, vmax=1.0, cmap="magma", origin="lower")
    for (row, column), value in np.ndenumerate(matrix):
        axes.text(column, row, f"{value:.2f}", ha="center", va="center", color="white" if value < 0.6 else "black")
    axes.set_xticks(range(matrix.shape[1]), [str(i + 1) for i in range(matrix.shape[1])])
    axes.set_yticks(range(matrix.shape[0]), [str(i + 1) for i in range(matrix.shape[0])])
    axes.set_xlabel(f"{label_b} stage")
    axes.set_ylabel(f"{label_a} stage")
    figure.colorbar(image, ax=axes, label="linear CKA")
    figure.savefig(path, dpi=100)


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the CKA command's arguments to ``parser`` (so it can be mounted as a subcommand)."""
    parser.add_argument("--a", required=True, help="first network name (see build_network), e.g. MetaUNETR-conv")
    parser.add_argument("--b", required=True, help="second network name, e.g. MetaUNETR-recurrence or 32Attn")
    parser.add_argument("--in-channels", type=int, default=1, help="input channels of both networks (default 1)")
    parser.add_argument("--size", type=int, default=64, help="side of the cubic random inputs (default 64)")
    parser.add_argument("--samples", type=int, default=8, help="number of input samples (default 8)")
    parser.add_argument("--pooling", choices=POOLINGS, default="flatten", help="stage feature per sample")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and inputs (default 0)")
    parser.add_argument("--a-option", action="append", metavar="NAME=VALUE", help="constructor option of --a")
    parser.add_argument("--b-option", action="append", metavar="NAME=VALUE", help="constructor option of --b")
    parser.add_argument("--a-weights", help="state dict of --a (.safetensors or torch file); default: random init")
    parser.add_argument("--b-weights", help="state dict of --b; default: random init")
    parser.add_argument("--out", default="cka", help="folder for cka.json and cka.png (default ./cka)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Run the CKA command on parsed arguments; user errors raise ``ValueError``."""
    for name in (args.a, args.b):
        if name not in network_names():
            raise ValueError(f"unknown network '{name}'; choose one of {', '.join(network_names())}.")
    if args.samples < 2:
        raise ValueError(f"--samples must be at least 2, got {args.samples}.")
    if args.size < 1:
        raise ValueError(f"--size must be positive, got {args.size}.")
    torch.manual_seed(args.seed)
    network_a = _build(args.a, args.in_channels, args.size, _parse_options(args.a_option), args.a_weights)
    network_b = _build(args.b, args.in_channels, args.size, _parse_options(args.b_option), args.b_weights)
    generator = torch.Generator().manual_seed(args.seed)
    shape = (1, args.in_channels, args.size, args.size, args.size)
    inputs = [torch.randn(shape, generator=generator) for _ in range(args.samples)]
    matrix = cka_matrix(network_a, network_b, inputs, args.pooling)

    print(f"linear CKA ({args.pooling}, {args.samples} samples of {args.size}^3): rows {args.a}, columns {args.b}")
    print("stage " + "".join(f"{j + 1:>8d}" for j in range(matrix.shape[1])))
    for i, row in enumerate(matrix):
        print(f"{i + 1:>5d} " + "".join(f"{value:8.3f}" for value in row))

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {
        "a": args.a,
        "b": args.b,
        "in_channels": args.in_channels,
        "size": args.size,
        "samples": args.samples,
        "pooling": args.pooling,
        "seed": args.seed,
        "matrix": matrix.tolist(),
    }
    (out / "cka.json").write_text(json.dumps(record, indent=2) + "\n")
    try:
        save_heatmap(matrix, out / "cka.png", args.a, args.b)
    except ImportError:
        print("matplotlib is not installed: wrote cka.json only (pip install matplotlib for cka.png).", file=sys.stderr)
        return 0
    print(f"wrote {out / 'cka.json'} and {out / 'cka.png'}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 with a one-line message for user errors)."""
    parser = add_arguments(argparse.ArgumentParser(prog="cka", description=__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    try:
        return run(args)
    except (ValueError, OSError) as error:
        print(f"cka: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
