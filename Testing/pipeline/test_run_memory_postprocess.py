"""The run-memory estimate's postprocess term covers postprocess's measured peak on the worst label maps."""

from __future__ import annotations

import json

import pytest
from helpers.processes import run_python
from TokenUNetSegmentLib.pipeline.run_memory import postprocess_bytes

# In a fresh process on 2 threads: peak RSS of postprocess above the logits, bytes per voxel, with every label spread
# over the whole grid at random (the most runs per label ITK's components keep); a warm-up run first loads
# SimpleITK's and torch's pools so that only the run's own arrays are measured. The peak is the kernel's VmHWM, reset
# just before the run (writing 5 to /proc/self/clear_refs): ru_maxrss would keep the parent's peak across the exec.
PEAK_CODE = """
import json, types
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
    with open("/proc/self/clear_refs", "w") as stream:
        stream.write("5")
    before = status("VmHWM")
    assert before <= status("VmRSS") + 2**20, "the peak RSS was not reset"
    postprocess(logits, None, prepared, config, [l.name for l in table], False)
    return (status("VmHWM") - before) / logits[0].size

def status(field):
    with open("/proc/self/status") as stream:
        return next(int(line.split()[1]) * 1024 for line in stream if line.startswith(field + ":"))

run(CHANNELS, 24)
print(json.dumps(run(CHANNELS, SIDE)))
"""


@pytest.mark.parametrize("channels", [3, 13])
def test_the_estimate_covers_postprocess_on_labels_spread_over_the_whole_grid(channels):
    measured = json.loads(run_python(PEAK_CODE.replace("CHANNELS", str(channels)).replace("SIDE", "112")))
    allowed = postprocess_bytes(channels, cpus=2)
    assert measured > 8  # before: the estimate allowed 8 B per voxel, under the 36-52 B measured
    assert measured <= allowed, f"postprocess peaks at {measured:.1f} B per voxel; the estimate allows {allowed}"


def test_labels_examined_at_once_and_the_estimate_stop_growing_with_many_threads(monkeypatch):
    """On a 16-core machine 13 labels were examined at once (13 grid-sized sets of masks in the worst case) and the
    estimate grew to 232 B a voxel, refusing large CTs that fit; now at most ``COMPONENT_THREADS`` labels at once, the
    same bound in the estimate whatever the CPU count."""
    import threading

    import numpy as np
    import torch
    from TokenUNetSegmentLib.pipeline import postprocess
    from TokenUNetSegmentLib.pipeline.run_memory import COMPONENT_THREADS

    assert (
        postprocess_bytes(13, cpus=16) == postprocess_bytes(13, cpus=COMPONENT_THREADS) < postprocess_bytes(13, 64) + 1
    )
    assert postprocess_bytes(13, cpus=2) < postprocess_bytes(13, cpus=16)
    running, most, lock = [0], [0], threading.Lock()
    pieces_of = postprocess._pieces_of

    def counted(labels, value, keep):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        try:
            threading.Event().wait(0.05)  # long enough for every worker to start
            return pieces_of(labels, value, keep)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(postprocess, "_pieces_of", counted)
    labels = np.arange(13 * 8, dtype=np.uint8).reshape(13, 2, 4) % 13 + 1
    threads = torch.get_num_threads()
    torch.set_num_threads(16)
    try:
        postprocess.component_pieces(labels, list(range(1, 14)))
    finally:
        torch.set_num_threads(threads)
    assert most[0] == COMPONENT_THREADS
