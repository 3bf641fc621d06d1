"""The frame pipeline: parallel preprocess and render workers, frames kept in order, errors and Ctrl-C."""
from __future__ import annotations

import threading
import time

import cv2
import numpy as np
import pytest
from runtime_models import make_onnx, make_video

from scaseg.runtime.backends import RunSettings, open_backend
from scaseg.runtime.pipeline import STAGES, default_workers, run_pipeline
from scaseg.runtime.predictor import Predictor
from scaseg.runtime.sources import open_source


@pytest.fixture()
def predictor(tmp_path):
    return Predictor(open_backend(make_onnx(tmp_path / "m.onnx", size=(32, 48))))


def test_frames_come_out_in_order_whatever_order_the_workers_finish(tmp_path, predictor):
    src = open_source(str(make_video(tmp_path / "v.mp4", frames=24, size=(40, 56))))
    delays = np.random.default_rng(0).uniform(0, 0.02, 24)
    threads = set()

    def render(frame, output, geom):
        threads.add(threading.current_thread().name)
        time.sleep(delays[frame.index])  # later frames often finish first
        return frame.index, predictor.finish(output, geom).shape

    seen = []
    stats = run_pipeline(src, predictor, lambda f, r: seen.append((f.index, r)), render=render, workers=4,
                         queue_size=3, progress=False)
    assert [i for i, _ in seen] == list(range(24)) and all(r == (i, (40, 56)) for i, r in seen)
    assert len(threads) > 1 and all(t.startswith("scaseg-work") for t in threads)  # rendered in the pool
    assert stats.workers == 4 and stats.frames == 24 and set(stats.stage_seconds) == set(STAGES)
    assert all(stats.stage_seconds[s] > 0 for s in STAGES)


def test_the_default_worker_count_is_bounded():
    assert 2 <= default_workers() <= 8


def test_an_error_in_a_render_worker_reaches_the_caller(tmp_path, predictor):
    src = open_source(str(make_video(tmp_path / "v.mp4", frames=12)))

    def render(frame, output, geom):
        if frame.index == 5:
            raise ValueError("render broke")
        return None

    seen = []
    with pytest.raises(ValueError, match="render broke"):
        run_pipeline(src, predictor, lambda f, r: seen.append(f.index), render=render, progress=False)
    assert seen == list(range(5))  # every frame before the broken one was written, none after


@pytest.mark.parametrize("fail", [False, True])
def test_opencv_runs_one_thread_per_call_during_a_run_and_its_setting_comes_back(tmp_path, predictor, fail):
    src = open_source(str(make_video(tmp_path / "v.mp4", frames=6)))
    seen = []

    def render(frame, output, geom):
        seen.append(cv2.getNumThreads())
        if fail:
            raise ValueError("render broke")

    before = cv2.getNumThreads()
    cv2.setNumThreads(3)
    try:
        if fail:
            with pytest.raises(ValueError, match="render broke"):
                run_pipeline(src, predictor, lambda f, r: None, render=render, progress=False)
        else:
            run_pipeline(src, predictor, lambda f, r: seen.append(cv2.getNumThreads()), render=render,
                         progress=False)
        assert seen and set(seen) == {1}  # in the pool's renders and in the writer
        assert cv2.getNumThreads() == 3
    finally:
        cv2.setNumThreads(before)


def _failing_on_call(fn, n, error):
    """``fn`` whose ``n``-th call raises ``error`` instead."""
    calls = []

    def broken(*args):
        calls.append(1)
        if len(calls) == n:
            raise error
        return fn(*args)
    return broken


@pytest.mark.parametrize("stage,call", [("prepare_frame", 4), ("run", 5)])
def test_an_error_in_preprocessing_or_a_model_call_reaches_the_caller(tmp_path, predictor, monkeypatch, stage, call):
    src = open_source(str(make_video(tmp_path / "v.mp4", frames=12)))
    monkeypatch.setattr(predictor, stage, _failing_on_call(getattr(predictor, stage), call, MemoryError("no memory")))
    seen = []
    with pytest.raises(MemoryError, match="no memory"):
        run_pipeline(src, predictor, lambda f, r: seen.append(f.index), progress=False)
    if stage == "run":  # one frame per call: every frame before the failed call was written, none after
        assert seen == list(range(call - 1))
    assert not [t for t in threading.enumerate() if t.name.startswith(("scaseg-decode", "scaseg-infer"))]


def test_ctrl_c_in_the_writer_stops_every_stage(tmp_path, predictor):
    src = open_source(str(make_video(tmp_path / "v.mp4", frames=40)))

    def consume(frame, labels):
        if frame.index == 6:
            raise KeyboardInterrupt

    stats = run_pipeline(src, predictor, consume, workers=3, progress=False)
    assert stats.interrupted and stats.frames == 6
    assert not [t for t in threading.enumerate() if t.name.startswith(("scaseg-decode", "scaseg-infer", "scaseg-work"))]


def test_ctrl_c_does_not_wait_for_a_model_call_that_never_returns(tmp_path, predictor, monkeypatch):
    import scaseg.runtime.pipeline as pipeline

    monkeypatch.setattr(pipeline, "JOIN_TIMEOUT_S", 0.5)
    src = open_source(str(make_video(tmp_path / "v.mp4", frames=20)))
    release = threading.Event()
    run = predictor.run

    def stuck(tensors):  # a server that stops answering after the first batches
        if stuck.calls >= 3:
            release.wait(30)
        stuck.calls += 1
        return run(tensors)
    stuck.calls = 0
    monkeypatch.setattr(predictor, "run", stuck)

    def consume(frame, labels):
        if frame.index == 2:
            raise KeyboardInterrupt

    start = time.perf_counter()
    stats = run_pipeline(src, predictor, consume, progress=False)
    assert stats.interrupted and stats.frames == 2 and time.perf_counter() - start < 10
    release.set()


def test_with_two_streams_model_calls_overlap_and_frames_stay_in_order(tmp_path):
    predictor = Predictor(open_backend(make_onnx(tmp_path / "m.onnx", size=(32, 48)),
                                       settings=RunSettings.parse("cpu", 2, streams=2)))
    assert predictor.backend.streams == 2
    assert predictor.backend.session.get_session_options().intra_op_num_threads == 1  # the 2 threads split
    src = open_source(str(make_video(tmp_path / "v.mp4", frames=16, size=(40, 56))))
    run, lock, busy, peak = predictor.run, threading.Lock(), [0], [0]
    delays = np.random.default_rng(1).uniform(0.005, 0.03, 16)

    def slow(tensors):  # calls of uneven length: later frames' calls often answer first
        with lock:
            busy[0] += 1
            peak[0] = max(peak[0], busy[0])
        time.sleep(delays[slow.calls % 16])
        slow.calls += 1
        try:
            return run(tensors)
        finally:
            with lock:
                busy[0] -= 1
    slow.calls = 0
    predictor.run = slow
    seen = []
    stats = run_pipeline(src, predictor, lambda f, r: seen.append((f.index, r.shape)), progress=False)
    assert seen == [(i, (40, 56)) for i in range(16)]
    assert peak[0] == 2 and stats.streams == 2 and stats.infer_calls == 16  # two at once, never three


@pytest.mark.parametrize("streams", [1, 2])
def test_frames_are_freed_as_they_are_written_not_left_to_the_garbage_collector(tmp_path, streams):
    """Memory is bounded by the queues: a frame, its model output and its rendering are gone once written, by
    reference counting alone. With Python's cyclic collector off, a reference cycle through a frame's futures kept
    every frame of the run alive (it did: 40 of 40, and about 60 camera frames at once in a real 1080p run)."""
    import gc
    import weakref

    predictor = Predictor(open_backend(make_onnx(tmp_path / "m.onnx", size=(32, 48)),
                                       settings=RunSettings.parse("cpu", 2, streams=streams)))
    src = open_source(str(make_video(tmp_path / "v.mp4", frames=40, size=(40, 56))))
    alive, peak = [0], [0]

    def gone() -> None:
        alive[0] -= 1

    def track(obj):
        alive[0] += 1
        peak[0] = max(peak[0], alive[0])
        weakref.finalize(obj, gone)
        return obj

    run = predictor.run

    def call(tensors):  # each call's outputs: the array that owns them (run answers a view, rows refer to the owner)
        out = run(tensors)
        track(out.base if out.base is not None else out)
        return out

    predictor.run = call

    class Picture:  # what a render returns
        pass

    def render(frame, output, geom):
        track(frame.image)
        return track(Picture())

    seen = []
    enabled = gc.isenabled()
    gc.disable()
    try:
        stats = run_pipeline(src, predictor, lambda f, r: seen.append(f.index),
                             render=render,
                             workers=2, queue_size=2, progress=False)
    finally:
        if enabled:
            gc.enable()
    assert seen == list(range(40)) and stats.frames == 40
    # in flight at most: 2 queues of 2, a frame in each stage, one per worker and per stream (3 objects each)
    assert peak[0] <= 3 * (2 * 2 + 3 + 2 + streams), peak[0]


def test_a_model_answering_fewer_rows_than_frames_fails_the_run_instead_of_hanging(tmp_path, predictor):
    src = open_source(str(make_video(tmp_path / "v.mp4", frames=6)))
    run = predictor.run
    predictor.run = lambda tensors: run(tensors)[:0]  # a backend that drops its rows
    outcome = []

    def go():
        try:
            run_pipeline(src, predictor, lambda f, r: None, progress=False)
        except BaseException as exc:
            outcome.append(exc)

    worker = threading.Thread(target=go, daemon=True)
    worker.start()
    worker.join(timeout=30)
    assert not worker.is_alive(), "the writer waited forever on a frame whose render could not start"
    assert len(outcome) == 1 and isinstance(outcome[0], IndexError)
