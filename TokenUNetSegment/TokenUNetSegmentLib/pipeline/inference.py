"""Sliding-window inference: logits and token maps stitched with the same blending (:mod:`.stitching`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .device import CpuSample, autocast, inference_threads, run_with_oom_fallback
from .errors import InputError
from .metadata import Inference
from .network import SegmentationNetwork
from .progress import Progress
from .stitching import stitch_windows, window_starts


@dataclass(frozen=True)
class WindowPlan:
    """How the network runs over the image: window size (a multiple of the network's), overlap, blending and
    windows per forward pass."""

    roi_size: tuple[int, int, int]
    overlap: float
    blending: str
    batch_size: int
    size_multiple: int
    step_multiple: int = 1
    """Window steps are multiples of this (:func:`step_multiple`: 1 for a network without tokens)."""


def plan_windows(
    network: SegmentationNetwork, inference: Inference, device: torch.device, overlap=None, batch_size=None
) -> WindowPlan:
    """The package's sliding-window settings, with the caller's overrides, fitted to the network.

    Raises:
        InputError: an overlap outside [0, 1).
    """
    chosen = float(inference.overlap if overlap is None else overlap)
    if not 0 <= chosen < 1:
        raise InputError(f"overlap must be in [0, 1), got {chosen}")
    multiple = int(network.size_multiple)
    roi = tuple(max(multiple, -(-int(r) // multiple) * multiple) for r in inference.roi_size)
    batch = int(batch_size or inference.sw_batch_size or (2 if device.type == "cuda" else 1))
    return WindowPlan(roi, chosen, inference.blending, batch, multiple, step_multiple(network))


def run_windows(network, image: np.ndarray, plan: WindowPlan, device, progress, with_tokens: bool, warn, since=None):
    """:func:`sliding_window` with the CUDA out-of-memory fallbacks; the network is back on the CPU afterwards
    (also after a cancel or an error). ``since``: the run's first :func:`~.device.cpu_sample`, for the number of
    CPU threads. Returns (logits, token maps or None, the device used, the windows per batch it ran with: a further
    pass over the same grid starts from these)."""
    used = {"device": device, "batch_size": plan.batch_size}

    def run(dev, size):
        used["device"], used["batch_size"] = dev, size
        return sliding_window(
            network, image, plan.roi_size, plan.overlap, plan.blending, size, dev, progress, with_tokens, since=since
        )

    try:
        logits, maps = run_with_oom_fallback(run, device, plan.batch_size, warn=warn)
    finally:
        network.to("cpu")
    return logits, maps, used["device"], used["batch_size"]


def step_multiple(network) -> int:
    """The multiple of the window steps: the network's size multiple when it has token maps (on a grid
    1/size_multiple of the window, which must stay aligned), whether or not a run keeps them, so the labels are
    the same with and without maps; 1 (any step, as MONAI's) for a network without tokens."""
    return int(network.size_multiple) if bool(getattr(network, "has_tokens", False)) else 1


def overlap_cost(shape, plan: WindowPlan, default_overlap: float) -> str | None:
    """A warning when ``plan``'s overlap runs many more windows over a volume of ``shape`` (on the model grid)
    than the package's own overlap, or when the steps' rounding lowers it; None otherwise.

    The window count grows about as 1 / (1 - overlap)^3, and so the time; steps are whole multiples of the
    network's token cell (:func:`step_multiple`), so an overlap above ``1 - multiple / roi`` acts as that bound.
    """
    overlaps, windows = scan_plan(shape, plan.roi_size, plan.overlap, plan.step_multiple)
    _, usual = scan_plan(shape, plan.roi_size, default_overlap, plan.step_multiple)
    effective = min(1.0 - max(1, int(r * (1 - o))) / r for r, o in zip(plan.roi_size, overlaps, strict=True))
    rounded = abs(plan.overlap - effective) > 0.05
    if windows < 2 * usual and not rounded:
        return None
    message = f"overlap {plan.overlap:g} runs {windows} windows"
    if windows != usual:
        message += f", {windows / usual:.1f} times the {usual} of the model's overlap {default_overlap:g}"
        message += " (the network's time grows as much)"
    if rounded:
        message += (
            f"; window steps are whole {plan.step_multiple}-voxel token cells, so it acts as overlap "
            f"{effective:.2f} for {'x'.join(map(str, plan.roi_size))} windows"
        )
    return message


def scan_plan(shape, roi_size, overlap: float, multiple: int) -> tuple[list[float], int]:
    """Per-axis overlaps whose window steps are multiples of ``multiple``, and the number of windows.

    Steps that are multiples of the network's downsampling factor keep the token maps (1/``multiple``
    of the window) aligned with the logits when both are stitched.
    """
    overlaps, count = [], 1
    for size, roi in zip(shape, roi_size, strict=True):
        step = max(multiple, int(roi * (1.0 - overlap)) // multiple * multiple)
        step = min(step, roi)
        overlaps.append(0.0 if step == roi else 1.0 - (step + 0.5) / roi)  # the stitcher's step: int(roi * (1 - o))
        count *= len(window_starts(max(size, roi), roi, overlaps[-1]))
    return overlaps, count


def sliding_window(
    network: SegmentationNetwork,
    image: np.ndarray,
    roi_size,
    overlap: float = 0.25,
    blending: str = "gaussian",
    batch_size: int = 1,
    device: torch.device | None = None,
    progress: Progress | None = None,
    with_tokens: bool = True,
    precision: str = "auto",
    since: CpuSample | None = None,
):
    """Run ``network`` over ``image`` (C, X, Y, Z), every size a multiple of the network's size multiple.

    ``precision`` "auto" runs the device's mixed precision (:func:`~.device.autocast`), "float32" none.
    ``since``: a :func:`~.device.cpu_sample` from the run's start: the CPU threads are those that other processes
    have left free since then (:func:`~.device.threads_for_load`).

    Returns:
        (logits as a float32 array (out, X, Y, Z), token maps {"gather", "broadcast"} each (N, X/m, Y/m, Z/m)
        float32, or None). Stitching happens on the CPU; windows run on ``device``.
    """
    device = device or torch.device("cpu")
    with_tokens = with_tokens and bool(network.has_tokens)
    overlaps, total = scan_plan(image.shape[1:], roi_size, overlap, step_multiple(network))
    done = [0]
    network = network.to(device).eval()

    def predictor(window: torch.Tensor):
        if progress is not None:
            progress.check()
        with autocast(device, network, precision):
            out = network(window, return_attention=True) if with_tokens else network(window)
        done[0] += window.shape[0]
        if progress is not None:
            progress.update("inference", done[0] / total)
        if with_tokens:
            logits, maps = out
            return logits.float(), maps["gather"].float(), maps["broadcast"].float()
        return out.float()

    tensor = torch.from_numpy(image)[None]
    with torch.inference_mode(), inference_threads(device, since):
        out = stitch_windows(tensor, roi_size, overlaps, batch_size, predictor, blending, device)
    if with_tokens:
        logits, gather, broadcast = (o[0].numpy() for o in out)
        return logits, {"gather": gather, "broadcast": broadcast}
    return out[0][0].numpy(), None
