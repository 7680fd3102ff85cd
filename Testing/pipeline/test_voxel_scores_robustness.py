"""The one-pass scoring (``voxel_scores.softmax_labels``) under what a run meets besides clean inputs: the stitched
logits as a cropped view (a region padded up to the window), an error in a worker, a Ctrl-C in the middle of the pass
(the run's cancel handler raises ``KeyboardInterrupt`` in the main thread), and a caller's own torch thread count."""

import signal
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest
import torch
from TokenUNetSegmentLib.pipeline import voxel_scores
from TokenUNetSegmentLib.pipeline.cancel_signals import install_cancel_handlers, restore_handlers
from TokenUNetSegmentLib.pipeline.metadata import Inference, Label
from TokenUNetSegmentLib.pipeline.postprocess import label_certainty, labels_from_logits
from TokenUNetSegmentLib.pipeline.voxel_scores import softmax_labels

SOFTMAX = Inference(roi_size=(8, 8, 8))
TABLE = [Label(10 + c, f"l{c}", (0, 0, 0), channel=c) for c in range(1, 13)]


def cropped_logits(shape=(40, 36, 30), seed=3) -> np.ndarray:
    """Logits as stitching returns them for a region padded up to the window: a crop of the padded sums."""
    rng = np.random.default_rng(seed)
    padded = (rng.normal(size=(1, 13, shape[0] + 4, shape[1] + 6, shape[2] + 2)) * 3).astype(np.float32)
    logits = padded[0][:, 2 : 2 + shape[0], 3 : 3 + shape[1], 1 : 1 + shape[2]]
    assert not logits.flags.c_contiguous
    return logits


def test_cropped_logits_are_scored_without_a_copy_of_them(monkeypatch):
    """Before: ``np.ascontiguousarray`` copied the whole logits (4 x channels bytes a voxel: 66 GB for 105 channels on a
    512 x 512 x 600 grid) where the two passes it replaced read the view."""
    monkeypatch.setattr(voxel_scores, "SCORE_CHUNK", 256)
    logits = cropped_logits()
    voxels = int(np.prod(logits.shape[1:]))
    tracemalloc.start()
    try:
        labels, scores = softmax_labels(logits, TABLE, workers=2)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    outputs = 9 * voxels  # labels, probability and lead
    assert peak - outputs < logits.nbytes / 4, (peak - outputs, logits.nbytes)
    expected = labels_from_logits(np.ascontiguousarray(logits), SOFTMAX, TABLE)
    assert np.array_equal(labels, expected)
    box = (slice(None),) * 3
    probability, lead = label_certainty(np.ascontiguousarray(logits), expected, SOFTMAX)
    got = scores.take(box, labels > 0)
    assert np.array_equal(got[0].view(np.uint32), probability.view(np.uint32))
    assert np.array_equal(got[1].view(np.uint32), lead.view(np.uint32))


def slow_chunks(monkeypatch, seconds: float, fail_at: int | None = None) -> list:
    """Each chunk takes ``seconds``; the chunk numbered ``fail_at`` raises. Returns the chunks started."""
    started, real = [], voxel_scores._score_chunk

    def chunk(scores, *args):
        started.append(1)
        if fail_at is not None and len(started) == fail_at:
            raise RuntimeError("a worker failed")
        time.sleep(seconds)
        return real(scores, *args)

    monkeypatch.setattr(voxel_scores, "_score_chunk", chunk)
    monkeypatch.setattr(voxel_scores, "SCORE_CHUNK", 64)
    return started


def test_an_error_in_a_worker_reaches_the_caller_and_the_rest_of_the_pass_is_dropped(monkeypatch):
    started = slow_chunks(monkeypatch, 0.01, fail_at=3)
    logits = cropped_logits((16, 16, 16))  # 64 chunks
    threads = torch.get_num_threads()
    torch.set_num_threads(3)  # a user's script's own setting
    try:
        with pytest.raises(RuntimeError, match="a worker failed"):
            softmax_labels(logits, TABLE, workers=2)
        assert torch.get_num_threads() == 3
    finally:
        torch.set_num_threads(threads)
    assert len(started) < 16


def test_a_stop_during_the_pass_ends_it_promptly(monkeypatch):
    """The cancel handler raises KeyboardInterrupt in the main thread: the chunks not yet started are dropped, the
    call returns within a chunk's time, and torch's threads are put back."""
    started = slow_chunks(monkeypatch, 0.05)
    logits = cropped_logits((16, 16, 16))  # 64 chunks of 0.05 s on 2 workers: 1.6 s without the stop

    event = threading.Event()
    previous = install_cancel_handlers(event)  # the command line's handlers: the first stop raises
    threads = torch.get_num_threads()
    timer = threading.Timer(0.2, signal.raise_signal, (signal.SIGINT,))
    try:
        timer.start()
        began = time.monotonic()
        with pytest.raises(KeyboardInterrupt):
            softmax_labels(logits, TABLE, workers=2)
        took = time.monotonic() - began
    finally:
        timer.cancel()
        restore_handlers(previous)
    assert event.is_set()
    assert torch.get_num_threads() == threads
    assert took < 0.8 and len(started) < 30, (took, len(started))
    count = len(started)
    time.sleep(0.2)
    assert len(started) == count  # no worker goes on after the call has ended


def waits_for_the_pass_end(monkeypatch) -> None:
    """The first chunk fails; the second, started beside it, raises SIGINT once the caller's thread waits for it in
    the pool's shutdown (the pass's clean-up), and ends."""
    real, started = voxel_scores._score_chunk, []

    def in_shutdown() -> bool:
        frame = sys._current_frames().get(threading.main_thread().ident)
        while frame is not None and frame.f_code.co_name != "shutdown":
            frame = frame.f_back
        return frame is not None

    def chunk(scores, *args):
        started.append(1)
        if len(started) == 1:
            raise RuntimeError("a worker failed")
        if len(started) == 2:
            deadline = time.monotonic() + 30
            while not in_shutdown() and time.monotonic() < deadline:
                time.sleep(0.001)
            signal.raise_signal(signal.SIGINT)
        return real(scores, *args)

    monkeypatch.setattr(voxel_scores, "_score_chunk", chunk)
    monkeypatch.setattr(voxel_scores, "SCORE_CHUNK", 64)


def test_a_stop_while_the_pass_ends_leaves_torch_threads_as_they_were(monkeypatch):
    """A stop (Ctrl-C, SIGTERM: ``KeyboardInterrupt`` in the main thread) that comes while the pass waits for its
    running chunks to end. Before, it left this thread and every thread started later on 1 torch thread: the process's
    next runs (a script's or a notebook's next ``segment()``, ``cli.main``) ran their network on 1 thread."""
    waits_for_the_pass_end(monkeypatch)
    event = threading.Event()
    previous = install_cancel_handlers(event)
    threads = torch.get_num_threads()
    try:
        with pytest.raises(KeyboardInterrupt):
            softmax_labels(cropped_logits((16, 16, 16)), TABLE, workers=2)
    finally:
        restore_handlers(previous)
    seen = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    after = torch.get_num_threads()
    torch.set_num_threads(threads)  # the tests after this one on the usual threads either way
    assert event.is_set()
    assert (after, seen) == (threads, [threads])


def test_postprocess_of_cropped_logits_in_a_padded_region_is_that_of_their_copy():
    """The whole stage as a run calls it: a region padded past the model grid (negative start), a field of view, a
    label of value 255, the largest-piece clean-up, logits as stitching's crop."""
    import types

    from TokenUNetSegmentLib.pipeline.geometry import Grid
    from TokenUNetSegmentLib.pipeline.postprocess import postprocess
    from TokenUNetSegmentLib.pipeline.preprocess import Prepared

    logits = cropped_logits((20, 18, 16))
    table = tuple(Label(255 if c == 1 else 10 + c, f"l{c}", (0, 0, 0), channel=c) for c in range(1, 13))
    config = types.SimpleNamespace(inference=SOFTMAX, labels=table)
    grid = Grid((17, 18, 14), np.diag([1.0, 1.0, 2.0, 1.0]))
    region = Grid((20, 18, 16), np.diag([1.0, 1.0, 2.0, 1.0]))
    view = np.ones(grid.shape, bool)
    view[:, :, :2] = False
    prepared = Prepared(np.zeros((1, 1, 1, 1), np.float32), grid, np.array([-2, 0, -1]), region, field_of_view=view)
    got = postprocess(logits, None, prepared, config, ["l1", "l4"], False)
    expected = postprocess(np.ascontiguousarray(logits), None, prepared, config, ["l1", "l4"], False)
    assert np.array_equal(got.labels, expected.labels) and 255 in got.labels
    assert got.measures == expected.measures and 255 in got.measures


def test_the_chunk_buffers_of_many_channels_stay_those_of_13(monkeypatch):
    """A chunk's (channels, voxels) temporaries grow with the channels: 105 channels (TotalSegmentator's count) in
    chunks of :data:`SCORE_CHUNK` voxels took 28-41 MB per worker, one worker per torch thread (0.5-0.7 GB on 16
    cores, whatever the grid's size; the two passes before took 0.2 GB at most). The chunk's voxels shrink so that
    its buffers stay those of 13 channels."""
    monkeypatch.setattr(voxel_scores, "SCORE_CHUNK", 4096)
    rng = np.random.default_rng(0)
    logits = rng.standard_normal((105, 32, 32, 32), np.float32)
    table = [Label(c, f"l{c}", (0, 0, 0), channel=c) for c in range(1, 105)]
    workers = 4
    tracemalloc.start()
    try:
        labels, scores = softmax_labels(logits, table, workers=workers)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    per_worker = 13 * 4096 * 4  # a 13-channel chunk of float32
    assert peak - 9 * labels.size < workers * 3 * per_worker, (peak - 9 * labels.size, workers * per_worker)
    assert np.array_equal(labels, labels_from_logits(logits, SOFTMAX, table))


def test_a_run_in_a_thread_leaves_the_callers_torch_threads_as_they_were():
    """As in Slicer's process (an in-process run's worker thread) under a script that set its own thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(3)
    try:
        worker = threading.Thread(target=softmax_labels, args=(cropped_logits((8, 8, 8)), TABLE, 2))
        worker.start()
        worker.join()
        seen = []
        later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
        later.start()
        later.join()
        assert torch.get_num_threads() == 3 and seen == [3]
    finally:
        torch.set_num_threads(threads)


def test_a_cancel_of_an_in_process_run_ends_the_pass_promptly(monkeypatch):
    """Slicer's in-process run is cancelled through its event alone (no signal): the pass looks at it between chunks
    (before, postreview: only the progress report after the pass and the clean-up did)."""
    from TokenUNetSegmentLib.pipeline.errors import CancelledError
    from TokenUNetSegmentLib.pipeline.progress import Progress

    started = slow_chunks(monkeypatch, 0.05)
    event = threading.Event()
    timer = threading.Timer(0.2, event.set)
    timer.start()
    began = time.monotonic()
    try:
        with pytest.raises(CancelledError):
            softmax_labels(cropped_logits((16, 16, 16)), TABLE, workers=2, check=Progress(cancel=event).check)
    finally:
        timer.cancel()
    assert time.monotonic() - began < 0.8 and len(started) < 30, len(started)
