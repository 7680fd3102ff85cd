"""A run's host memory: the estimate's host part, and the check made from the input's header alone.

Torch-free: the command line refuses a run that cannot fit from the header (sizes, spacing, axes) and the package's
configuration (channels, labels, token count, model spacing) before any voxel is read or torch is imported. The
exact check (:func:`.device.check_memory`, with the loaded network's windows) follows once the network is loaded;
both count the host bytes with :func:`host_bytes`, so the first never refuses what the second would let run.
``segment()`` given files makes the same check (:func:`check_inputs_fit`) before it reads them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from ..model.variants import declared_token_count
from .errors import InputError, OutOfMemoryError
from .geometry import Grid, model_grid
from .memory import LIMIT_VARIABLE, format_size, memory_limit

INPUT_GRID_MAP_BYTES = 20
"""Host bytes per input voxel while token maps are written on the input grid: two writer threads, each with a float32
map and SimpleITK's copies (measured on a 512 x 512 x 100 CT: a peak RSS 17.5 B per voxel above the token grid's)."""
RUN_BYTES = 56
"""Host bytes per run of one label along a line in ITK's connected components (SimpleITK ``ConnectedComponent``): its
run record (8 B length, 24 B start index, 8 B label) and two 8 B union-find entries."""
BODY_EXTENT_MM = 2500.0
"""A scan longer than this along an axis is no scan of a body: a memory refusal then names the spacing instead."""


def host_bytes(
    input_voxels: int,
    model_voxels: int,
    in_channels: int,
    out_channels: int,
    tokens: int,
    probabilities: bool = False,
    maps_on_input_grid: bool = False,
) -> int:
    """Rough peak host bytes of a run's data: the inputs, the model-grid arrays, the stitched token maps, and the
    probabilities and input-grid maps when asked for (the network and its windows are counted apart)."""
    return int(
        input_voxels * (4 * in_channels + 1 + 4)  # inputs as float32, labels, scratch of a resampling
        + model_voxels * (4 * (in_channels + out_channels) + postprocess_bytes(out_channels))  # inputs, logits
        + (model_voxels // 512) * 4 * 4 * tokens  # stitched token maps (1/8 grid)
        + (model_voxels * 4 * out_channels + input_voxels * 4 * out_channels if probabilities else 0)
        + (input_voxels * INPUT_GRID_MAP_BYTES if maps_on_input_grid and tokens else 0)
    )


def augmentation_bytes(out_channels: int, in_channels: int, region_voxels: int) -> int:
    """Host bytes that test-time augmentation (:mod:`.test_time_augmentation`) adds to a run over ``region_voxels``
    (:func:`largest_region`), in float32: the running sum, one pass's stitched sums, scores and probabilities, the
    changed input, and 14 volumes of sampling grids, weights and one channel's warped copy (measured with a no-op
    network on 160 x 160 x 96: 215 MiB grown for 2 outputs, 603 MiB for 14; counted 216 and 666)."""
    return 4 * region_voxels * (4 * out_channels + in_channels + 14)


def largest_region(model_shape, roi_size, multiple: int = 1) -> int:
    """The most voxels of the network's input region on a model grid of ``model_shape``: each side rounded up to
    ``multiple`` and at least the window (:func:`.preprocess.prepare`; a foreground crop only shrinks it). A thin
    slab's region is the window's depth, many times its model grid."""
    sides = [max(int(r), -(-int(s) // multiple) * multiple) for s, r in zip(model_shape, roi_size, strict=True)]
    return int(np.prod(sides, dtype=np.float64))


COMPONENT_THREADS = 4
"""At most this many labels are examined at once by :func:`.postprocess.component_pieces`: each holds grid-sized
masks in the worst case, so the memory bound must not grow with a many-core machine's thread count."""


def postprocess_bytes(out_channels: int, cpus: int | None = None) -> int:
    """Host bytes per model-grid voxel that :func:`.postprocess.postprocess` holds beyond the logits, for the worst
    label map (every label spread over the whole grid; a real organ's box is far smaller), read off its code:

    - 4 B: the labels of the region and of the whole grid, the labelled mask and the labelled voxels' labels;
    - 16 B: the one pass's top probability and lead (float32), and their copies for the labelled voxels;
    - 12 B per label examined at once by ``component_pieces`` (one per thread, at most ``min(labels, threads,``
      :data:`COMPONENT_THREADS` ``)``; counted here with ``cpus``, the CPU count, which bounds torch's default threads):
      its mask, SimpleITK's copy, the components and their relabelling (uint32) and the clean-up's two masks;
    - ITK's run lengths (:data:`RUN_BYTES` each): one label has at most one run per two voxels of a line, and all
      the labels together at most one per voxel, so at most ``RUN_BYTES / 2`` per label at once and ``RUN_BYTES``
      in all. (It exceeds the stitching's weights and argmax, 8 B, which are freed before.)
    """
    cpus = cpus or os.cpu_count() or 1
    at_once = max(1, min(out_channels, cpus, COMPONENT_THREADS))
    return 4 + 16 + 12 * at_once + min(at_once * RUN_BYTES // 2, RUN_BYTES)


def host_shortfall(need: int, free: int) -> OutOfMemoryError:
    """The refusal of a run that needs ``need`` host bytes where ``free`` are free (or the user's limit allows)."""
    limit, what = memory_limit()
    if LIMIT_VARIABLE in what and limit == free:
        return OutOfMemoryError(
            f"this run needs about {format_size(need)} of memory, over {what} ({format_size(limit)})",
            f"raise {LIMIT_VARIABLE}, use a coarser model spacing or crop the volume",
        )
    return OutOfMemoryError(
        f"this run needs about {need / 2**30:.1f} GiB of memory but only {free / 2**30:.1f} GiB is free",
        "use a coarser model spacing, crop the volume, or close other programs",
    )


def wrong_spacing(grid: Grid, name: str) -> InputError | None:
    """For a run refused for its memory: the error that names ``grid``'s spacing when the scan spans more than a
    body (:data:`BODY_EXTENT_MM`: its spacing or units are wrong, not the user's memory), else None."""
    extent = np.asarray(grid.shape) * grid.spacing
    if extent.max() <= BODY_EXTENT_MM:
        return None
    metres = " x ".join(f"{e / 1000:.1f}" for e in extent)
    voxels = " x ".join(f"{s:g}" for s in np.round(grid.spacing, 3))
    return InputError(
        f"{name} spans {metres} m ({voxels} mm voxels): its voxel spacing or units are wrong",
        "fix the spacing (in a NIfTI also xyzt_units) in its header",
    )


def check_header_fits(
    voxels: int,
    grid: Grid | None,
    config,
    tokens: int,
    name: str,
    probabilities: bool = False,
    maps_on_input_grid: bool = False,
    test_time_augmentation: bool = False,
) -> int:
    """Refuse a run whose host data (:func:`host_bytes`, and :func:`augmentation_bytes` with
    ``test_time_augmentation``) cannot fit, from the first input's header: ``voxels`` it declares, its ``grid`` (None
    when the header gives none: the model grid is then left out), the package's ``config`` and ``tokens`` (the
    network's learned tokens; 0 when unknown). Returns the estimate in bytes.

    Raises:
        OutOfMemoryError: over free memory or ``TOKENUNET_MEMORY_LIMIT``.
        InputError: over it because the header's spacing makes the scan longer than a body.
    """
    model_voxels = region = 0
    if grid is not None:
        pre = config.preprocessing
        shape = model_grid(grid, pre.orientation, pre.spacing).shape
        model_voxels = int(np.prod(shape, dtype=np.float64))
        region = largest_region(shape, config.inference.roi_size)  # the window not yet rounded: at most the exact one
    architecture = config.architecture
    need = host_bytes(
        voxels,
        model_voxels,
        architecture.in_channels,
        architecture.out_channels,
        tokens,
        probabilities,
        maps_on_input_grid,
    )
    if test_time_augmentation:
        need += augmentation_bytes(architecture.out_channels, architecture.in_channels, region)
    free, _ = memory_limit()
    if need > free:
        raise (wrong_spacing(grid, name) if grid is not None else None) or host_shortfall(need, free)
    return need


def check_inputs_fit(
    opened: Sequence,
    config,
    name: str,
    with_token_maps: bool = True,
    probabilities: bool = False,
    maps_on_input_grid: bool = False,
    test_time_augmentation: bool = False,
) -> int:
    """:func:`check_header_fits` for a run of the package ``config`` on its ``opened`` inputs (one
    :class:`.volumes.OpenedVolume` per channel, in order; ``name``: the first's), before any is read: the command
    line's check and ``segment()``'s on files. The token maps counted are those ``config``'s architecture declares
    (none without ``with_token_maps``, or for a network registered by others). Returns the estimate in bytes."""
    architecture = config.architecture
    learned = declared_token_count(architecture.name, architecture.build_arguments()) if with_token_maps else 0
    first = opened[0]
    return check_header_fits(
        first.values, first.grid, config, learned or 0, name, probabilities, maps_on_input_grid, test_time_augmentation
    )
