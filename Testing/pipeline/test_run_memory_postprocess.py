"""The run-memory estimate's postprocess term covers postprocess's measured peak on the worst label maps."""

from __future__ import annotations

import json

import pytest
from helpers.processes import run_python
from TokenUNetSegmentLib.pipeline.run_memory import postprocess_bytes

# In a fresh process on 2 threads: peak RSS of postprocess above the logits, bytes per voxel, with every label spread
# over the whole grid at random (the most runs per label ITK's components keep); a warm-up run first loads
# SimpleITK's and torch's pools so that only the run's own arrays are measured.
PEAK_CODE = """
import json, resource, types
import numpy as np, torch
torch.set_num_threads(2)
from TokenUNetSegmentLib.pipeline.geometry import Grid
from TokenUNetSegmentLib.pipeline.metadata import Inference, Label
from TokenUNetSegmentLib.pipeline.postprocess import postprocess
from TokenUNetSegmentLib.pipeline.preprocess import Prepared

def run(channels, side):
    shape = (side,) * 3
    logits = np.random.default_rng(0).standard_normal((channels, *shape), np.float32)
    table = tuple(Label(i, f"l{i}", (0, 0, 0), channel=i) for i in range(1, channels))
    config = types.SimpleNamespace(inference=Inference(roi_size=(8, 8, 8)), labels=table)
    grid = Grid(shape, np.eye(4))
    prepared = Prepared(np.empty((1, 1, 1, 1), np.float32), grid, np.zeros(3, int), grid)
    before = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
    postprocess(logits, None, prepared, config, [l.name for l in table], False)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return (peak - before) / logits[0].size

run(CHANNELS, 24)
print(json.dumps(run(CHANNELS, SIDE)))
"""


@pytest.mark.parametrize("channels", [3, 13])
def test_the_estimate_covers_postprocess_on_labels_spread_over_the_whole_grid(channels):
    measured = json.loads(run_python(PEAK_CODE.replace("CHANNELS", str(channels)).replace("SIDE", "112")))
    allowed = postprocess_bytes(channels, cpus=2)
    assert measured > 8  # before: the estimate allowed 8 B per voxel, under the 36-52 B measured
    assert measured <= allowed, f"postprocess peaks at {measured:.1f} B per voxel; the estimate allows {allowed}"
