"""Linear Centered Kernel Alignment (CKA) between the encoder stages of two networks (MetaUNETR's analysis).

Reference: Kornblith, Norouzi, Lee, Hinton, "Similarity of Neural Network Representations Revisited",
ICML 2019. Linear CKA of X (n, p) and Y (n, q), both centred over the n samples, is
``HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y))`` with the linear kernel, i.e.
``||Y^T X||_F^2 / (||X^T X||_F ||Y^T Y||_F)``: 1 for identical representations, invariant to orthogonal
transforms and isotropic scaling of either side, near 0 for independent ones.

Samples and features (``pooling``): by default (``"positions"``) every stage map is average-pooled to
the coarsest stage grid of the two networks, and each position of that grid in each input is one
sample whose features are the stage's channels; so stages of different resolutions and widths
compare on the same samples, and many samples come from few inputs. ``"flatten"`` makes each input
one sample with its whole map as features (needs many real inputs: with a few random inputs the
Gram matrices are near-identity and every CKA comes out near 1); ``"mean"`` makes each input one
sample with its channel means as features. Independent features of p dimensions over n samples
still give a CKA of about p / n, so use n well above the feature count for a meaningful zero.

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
import torch.nn.functional as F
from torch import nn

from ..model import build_network, network_names
from .cka_command import POOLINGS, add_arguments
from .run_contract import ExitCode


def _as_matrix(features, name: str) -> torch.Tensor:
    matrix = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2D (samples, features) matrix, got shape {tuple(matrix.shape)}.")
    return matrix.detach().to("cpu", torch.float64)


def linear_cka(x, y, debiased: bool = False) -> float:
    """Linear CKA of two (n_samples, features) matrices (torch or numpy) with the same samples in the same order.

    Args:
        x, y: the two representations, (n, p) and (n, q).
        debiased: use the unbiased HSIC estimator (Song et al. 2012), whose value for independent
            features is near 0 even when the feature count is not small against n (it can then be
            slightly negative); needs at least 4 samples.

    Raises:
        ValueError: not 2D, different sample counts, too few samples, or a constant representation.
    """
    x, y = _as_matrix(x, "x"), _as_matrix(y, "y")
    n = x.shape[0]
    if n != y.shape[0]:
        raise ValueError(f"x and y must have the same number of samples, got {n} and {y.shape[0]}.")
    if n < (4 if debiased else 2):
        raise ValueError(f"CKA needs at least {4 if debiased else 2} samples{' when debiased' if debiased else ''}.")
    x, y = x - x.mean(dim=0), y - y.mean(dim=0)
    if debiased:
        gram_x, gram_y = x @ x.T, y @ y.T
        cross, self_x, self_y = (
            _unbiased_hsic(gram_x, gram_y),
            _unbiased_hsic(gram_x, gram_x),
            _unbiased_hsic(gram_y, gram_y),
        )
    elif n <= max(x.shape[1], y.shape[1]):  # kernel (Gram) form: n x n
        gram_x, gram_y = x @ x.T, y @ y.T
        cross, self_x, self_y = (gram_x * gram_y).sum(), gram_x.square().sum(), gram_y.square().sum()
    else:  # feature form: p x q
        cross, self_x, self_y = (y.T @ x).square().sum(), (x.T @ x).square().sum(), (y.T @ y).square().sum()
    if self_x <= 0 or self_y <= 0:
        raise ValueError("CKA is undefined for a representation that is constant over the samples.")
    return float(cross / torch.sqrt(self_x * self_y))


def _unbiased_hsic(gram_x: torch.Tensor, gram_y: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC estimator of two n x n Gram matrices (up to a constant factor)."""
    n = gram_x.shape[0]
    gram_x, gram_y = gram_x - torch.diag(gram_x.diagonal()), gram_y - torch.diag(gram_y.diagonal())
    trace = (gram_x * gram_y).sum()
    sums = gram_x.sum() * gram_y.sum() / ((n - 1) * (n - 2))
    cross = 2.0 * (gram_x.sum(dim=0) @ gram_y.sum(dim=1)) / (n - 2)
    return (trace + sums - cross) / (n * (n - 3))


def stage_maps(network: nn.Module, inputs: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    """Every encoder stage's map for every input: ``maps[stage][sample]`` is (1, C, h, w, d).

    Args:
        network: a network with ``stage_features(x) -> list of (1, C, h, w, d) maps``; run in eval mode.
        inputs: the samples, each (1, in_channels, H, W, D), run one at a time.
    """
    if not hasattr(network, "stage_features"):
        raise ValueError(f"{type(network).__name__} has no stage_features method, so CKA cannot compare its stages.")
    network.eval()
    maps: list[list[torch.Tensor]] = []
    with torch.inference_mode():
        for x in inputs:
            for index, feature in enumerate(network.stage_features(x)):
                if index == len(maps):
                    maps.append([])
                maps[index].append(feature.float())
    return maps


def coarsest_grid(*networks_maps: list[list[torch.Tensor]]) -> tuple[int, int, int]:
    """The smallest stage grid, axis by axis, over all stages of all networks."""
    shapes = [stage[0].shape[2:] for maps in networks_maps for stage in maps]
    return tuple(min(shape[axis] for shape in shapes) for axis in range(3))


def to_matrix(maps: Sequence[torch.Tensor], pooling: str = "positions", grid: Sequence[int] | None = None):
    """One stage's (n_samples, features) matrix from its maps (one (1, C, h, w, d) map per input).

    ``positions``: each map is average-pooled to ``grid`` and every grid position of every input is a
    sample with the C channels as features; ``flatten``: one sample per input, its whole map as
    features; ``mean``: one sample per input, its channel means as features.
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling '{pooling}'; choose one of {', '.join(POOLINGS)}.")
    if pooling == "flatten":
        rows = [m.flatten(1) for m in maps]
    elif pooling == "mean":
        rows = [m.flatten(2).mean(dim=2) for m in maps]
    else:
        if grid is None:
            raise ValueError("pooling 'positions' needs the common grid of the stages to compare.")
        rows = [F.adaptive_avg_pool3d(m, tuple(grid)).flatten(2).transpose(1, 2).flatten(0, 1) for m in maps]
    return torch.cat(rows).to(torch.float64)


def stage_feature_matrices(
    network: nn.Module, inputs: Sequence[torch.Tensor], pooling: str = "positions", grid=None
) -> list[torch.Tensor]:
    """The (n_samples, features) matrix of every encoder stage (see :func:`to_matrix`).

    For ``positions`` the grid defaults to the network's own coarsest stage grid.
    """
    maps = stage_maps(network, inputs)
    grid = grid or coarsest_grid(maps)
    return [to_matrix(stage, pooling, grid) for stage in maps]


def cka_matrix(
    network_a: nn.Module,
    network_b: nn.Module,
    inputs: Sequence[torch.Tensor],
    pooling: str = "positions",
    debiased: bool = False,
    names: tuple[str, str] = ("network a", "network b"),
) -> np.ndarray:
    """The stage x stage linear CKA matrix between two networks on the same inputs (rows: stages of ``a``).

    With ``positions`` every stage of both networks is pooled to the coarsest stage grid of the two.

    Raises:
        ValueError: a stage whose features are not all finite (``names`` say which network, in the message).
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling '{pooling}'; choose one of {', '.join(POOLINGS)}.")
    if len(inputs) < 2:
        raise ValueError("CKA needs at least 2 input samples.")
    maps_a, maps_b = stage_maps(network_a, inputs), stage_maps(network_b, inputs)
    grid = coarsest_grid(maps_a, maps_b)
    features_a = [to_matrix(stage, pooling, grid) for stage in maps_a]
    features_b = [to_matrix(stage, pooling, grid) for stage in maps_b]
    for name, features in zip(names, (features_a, features_b), strict=True):
        for index, matrix in enumerate(features):
            if not torch.isfinite(matrix).all():  # NaN weights, or activations past float32's range
                raise ValueError(
                    f"stage {index + 1} of {name} gives NaN or infinite features, so its CKA is undefined; "
                    "check its weights"
                )
    return np.array([[linear_cka(fa, fb, debiased) for fb in features_b] for fa in features_a])


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
        if key in ("in_channels", "out_channels"):
            given = "--in-channels" if key == "in_channels" else "the command (2: CKA compares the encoders' stages)"
            raise ValueError(f"network option '{key}' is set by {given}; drop {pair}.")
        options[key] = _literal(value)
    return options


def _build(name: str, in_channels: int, size: int, options: dict, weights: str | None, samples: int = 1) -> nn.Module:
    from .errors import OutOfMemoryError
    from .memory import format_size, memory_limit
    from .metadata import Architecture
    from .package_loader import check_network_fits

    if name.startswith("MetaUNETR-"):  # its fixed-size mixers need to know the input size
        options = {"img_size": size, **options}
    # the network, one input's activations and all the inputs fit, checked before anything is allocated
    fit = check_network_fits(Architecture(name, in_channels, 2, options), (size,) * 3, f"network '{name}'")
    need = 3 * fit.parameter_bytes + fit.window_bytes((size,) * 3) + 4.0 * samples * in_channels * size**3
    limit, described = memory_limit()
    if need > limit:
        raise OutOfMemoryError(
            f"comparing {samples} inputs of {size}^3 with '{name}' needs about {format_size(need)}, over {described}",
            "use a smaller --size or fewer --samples",
        )
    network = build_network(name, in_channels, 2, **options)
    if weights:
        from .weights import state_dict_from_bytes, weights_file_problem

        path = Path(weights)
        problem = weights_file_problem(path)  # a FIFO: never opened (reading it would wait for a writer)
        if problem is not None:
            raise ValueError(problem)
        if path.stat().st_size > limit // 3:
            raise ValueError(f"weights file {path.name} is larger than a third of {described}")
        state = state_dict_from_bytes(path.read_bytes(), path.name)
        for key, tensor in state.items():
            if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not torch.isfinite(tensor).all():
                raise ValueError(f"weights {path.name} hold NaN or infinite values ({key})")
        try:
            network.load_state_dict(state)
        except RuntimeError as error:
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            first = lines[1] if len(lines) > 1 else lines[0]  # what differs, not torch's "Error(s) in loading ..."
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


def run(args: argparse.Namespace) -> int:
    """Run the CKA command on parsed arguments; user errors raise ``ValueError``."""
    for name in (args.a, args.b):
        if name not in network_names():
            raise ValueError(f"unknown network '{name}'; choose one of {', '.join(network_names())}.")
    if args.samples < 2:
        raise ValueError(f"--samples must be at least 2, got {args.samples}.")
    if args.size < 1:
        raise ValueError(f"--size must be positive, got {args.size}.")
    if args.pooling != "positions" and args.samples < 3:  # two centred samples: a CKA of 1 for any features
        raise ValueError(
            f"--samples {args.samples} with --pooling {args.pooling} gives {args.samples} samples, whose linear CKA "
            "is 1 for any two networks; use at least 3."
        )
    if args.debiased and args.pooling != "positions" and args.samples < 4:  # one sample per input: known now
        raise ValueError(
            f"--debiased needs at least 4 samples; --samples {args.samples} with --pooling {args.pooling} gives "
            f"{args.samples}."
        )
    from .output_folder import OutputFolder, earlier_result

    written_before_manifests = earlier_result(("cka.json",), optional=("cka.png",))
    folder = OutputFolder(args.out, "cka", reserved=("cka.json", "cka.png"), legacy_files=written_before_manifests)
    folder.open()  # checked and locked before anything is computed
    with folder:
        folder.check_space(OUTPUT_BYTES)
        return _run(args, folder)


OUTPUT_BYTES = 1 << 20
"""Room checked for cka.json and cka.png before any work (they take 20-60 KB)."""


def _check_memory(networks, samples: int, shape) -> None:
    """Refuse before the samples are made when they and the stage maps kept of them (measured on one sample)
    exceed free memory or ``TOKENUNET_MEMORY_LIMIT`` (before: ``--samples 100000`` of 32^3 allocated until the
    machine ran out)."""
    from .memory import format_size, memory_limit

    probe = torch.zeros(shape)
    per_sample = probe.numel() * 4 + sum(
        feature.numel() * 4 for network in networks for stage in stage_maps(network, [probe]) for feature in stage
    )
    limit, what = memory_limit()
    if samples * per_sample > limit:
        raise ValueError(
            f"{samples} samples of {shape[1]} x {shape[2]}^3 need about {format_size(samples * per_sample)} "
            f"(inputs and stage maps), over {what} ({format_size(limit)}); use fewer --samples or a smaller --size"
        )


def _run(args: argparse.Namespace, folder) -> int:
    torch.manual_seed(args.seed)
    a_options, b_options = _parse_options(args.a_option), _parse_options(args.b_option)
    network_a = _build(args.a, args.in_channels, args.size, a_options, args.a_weights, args.samples)
    network_b = _build(args.b, args.in_channels, args.size, b_options, args.b_weights, args.samples)
    generator = torch.Generator().manual_seed(args.seed)
    shape = (1, args.in_channels, args.size, args.size, args.size)
    _check_memory((network_a, network_b), args.samples, shape)
    inputs = [torch.randn(shape, generator=generator) for _ in range(args.samples)]
    names = (f"network '{args.a}' (--a)", f"network '{args.b}' (--b)")
    matrix = cka_matrix(network_a, network_b, inputs, args.pooling, args.debiased, names)

    out = folder.staging
    record = {
        "a": args.a,
        "b": args.b,
        "in_channels": args.in_channels,
        "size": args.size,
        "samples": args.samples,
        "pooling": args.pooling,
        "debiased": args.debiased,
        "seed": args.seed,
        "matrix": matrix.tolist(),
    }
    with folder.writing():
        (out / "cka.json").write_text(json.dumps(record, indent=2) + "\n")
        try:
            save_heatmap(matrix, out / "cka.png", args.a, args.b)
        except ImportError:
            print(
                "matplotlib is not installed: writing cka.json only (pip install matplotlib for cka.png).",
                file=sys.stderr,
            )
    destination = folder.commit()  # written before anything is printed: a closed stdout (``| head``) loses only text
    kind = "debiased linear CKA" if args.debiased else "linear CKA"
    print(f"{kind} ({args.pooling}, {args.samples} samples of {args.size}^3): rows {args.a}, columns {args.b}")
    print("stage " + "".join(f"{j + 1:>8d}" for j in range(matrix.shape[1])))
    for i, row in enumerate(matrix):
        print(f"{i + 1:>5d} " + "".join(f"{value:8.3f}" for value in row))
    written = " and ".join(str(destination / name) for name in ("cka.json", "cka.png") if (destination / name).exists())
    print(f"wrote {written}")
    return 0


def run_command(args: argparse.Namespace) -> int:
    """The pipeline CLI's ``cka`` command: :func:`run`, with user errors as one-line ``InputError``."""
    from .errors import InputError

    try:
        return run(args)
    except (InputError, BrokenPipeError):  # a closed stdout is the command line's to handle, not a user error
        raise
    except (ValueError, OSError) as error:
        raise InputError(" ".join(str(error).split())) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point; returns the exit code (2 with a one-line message for user errors)."""
    from .cli import OneLineParser
    from .errors import TokenUNetError
    from .run_contract import ErrorEvent

    parser = add_arguments(OneLineParser(prog="cka", description=__doc__.split("\n")[0]))
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:  # --help, or an argument error already printed as one line
        return int(stop.code or 0)
    try:
        return run(args)
    except BrokenPipeError:  # the reader of the printed matrix went away; the files are written
        return ExitCode.OK
    except (ValueError, OSError, TokenUNetError) as error:
        message = error.message if isinstance(error, TokenUNetError) else str(error)
        hint = error.hint if isinstance(error, TokenUNetError) else None
        print(ErrorEvent(message, "user", hint).line().replace("error: ", "cka: error: ", 1), file=sys.stderr)
        return ExitCode.USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
