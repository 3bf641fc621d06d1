"""The pipeline behind scaseg-infer: decode -> preprocess -> infer -> render -> write, frames kept in order.

Stages and who runs them:
- decode: one thread reads the source (FFmpeg's decoder, through PyAV or OpenCV, releases the GIL and has threads of
  its own); a plain 4:2:0 video file's frames come as the decoder's I420 planes (sources.PlanesSource), so no
  camera-sized RGB picture is made for them unless a consumer asks for one;
- preprocess and render: a pool of worker threads (``workers``); their work is OpenCV and NumPy calls that release
  the GIL, so frames are prepared and rendered in parallel;
- infer: one thread hands each batch to the model: one backend call per batch, ``predictor.backend.streams`` calls
  at once (1 unless scaseg-infer --streams asked for more or --streams auto chose 2, ONNX Runtime on the CPU only;
  ONNX Runtime, OpenVINO and TensorRT release the GIL and have threads of their own); each frame's render follows
  its call's result;
- write: the calling thread, in frame order (so windows, Ctrl-C and the output's writer stay in one place; the
  encoder has threads of its own).
Python only schedules: it hands frames and futures between bounded queues, so memory stays bounded and every
per-pixel operation runs in library code.

OpenCV's own threads are off while a run lasts (``cv2.setNumThreads(1)``, restored after): the pool already works on
frames side by side, and OpenCV's per-call threads wait actively for one another, so with the other cores busy
(the model, the codecs) a 1080p colour conversion or blend took about twice the CPU for no less wall time
(benchmarks/bench_frame_ops.py; docs/performance.md, "The frame path's own operations").
"""
from __future__ import annotations

import concurrent.futures
import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Sequence, Tuple, cast

import cv2
import numpy as np

from scaseg.runtime.preprocess import Geometry
from scaseg.runtime.sources import Frame, Source

if TYPE_CHECKING:
    from scaseg.runtime.predictor import Predictor

_END = object()
#: The stages whose time PipelineStats.stage_seconds adds up (seconds of work, summed over that stage's threads).
STAGES = ("decode", "preprocess", "infer", "render", "write")
# (frame, future of its (network input, geometry)); the future is None for a frame that could not be decoded.
_Decoded = Tuple[Frame, Optional["concurrent.futures.Future[tuple[np.ndarray, Geometry]]"]]
# (frame, future of what render returned); None for a frame that could not be decoded.
_Rendered = Tuple[Frame, Optional["concurrent.futures.Future[Any]"]]
# What a render function gets: the frame, one row of the model's output, and how the frame was resized.
Render = Callable[[Frame, np.ndarray, Geometry], Any]


def default_workers() -> int:
    """Preprocess and render threads: one per core the process may use, at least 2 (so that rendering one frame
    overlaps preparing the next), at most 8 (beyond that the queues, not the workers, bound the pace)."""
    from scaseg.runtime.backends.threads import cpu_cores

    return max(2, min(8, cpu_cores()))


class StopPipeline(Exception):
    """Raised by a consumer to end the run early and cleanly (e.g. 'q' pressed in the preview window)."""


@dataclass
class PipelineStats:
    """What one run did and how fast: end-to-end FPS against the model's own FPS, and where the time went."""

    frames: int = 0
    skipped: int = 0
    seconds: float = 0.0
    infer_calls: int = 0
    interrupted: bool = False
    stopped: bool = False
    skipped_names: list[str] = field(default_factory=list)
    skip_reason: str = ""  # why the first skipped frame could not be read (the image reader's sentence)
    workers: int = 0
    streams: int = 1
    stage_seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def infer_seconds(self) -> float:
        """The model calls' time, summed over streams."""
        return self.stage_seconds["infer"]

    @property
    def model_fps(self) -> float:
        """Frames per second of one stream's model calls (with several streams they also run side by side)."""
        return self.frames / self.infer_seconds if self.infer_seconds > 0 else 0.0

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:  # the pool's threads add concurrently
            self.stage_seconds[stage] += seconds

    def add_call(self, seconds: float) -> None:
        """One model call's time (the streams' threads add concurrently)."""
        with self._lock:
            self.stage_seconds["infer"] += seconds
            self.infer_calls += 1

    def timed(self, stage: str, fn: Callable[..., Any], *args: Any) -> Any:
        start = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.add(stage, time.perf_counter() - start)


class _Stage(threading.Thread):
    """A worker that hands its exception to the consumer instead of dying silently."""

    def __init__(self, target: Callable[[], None], name: str) -> None:
        super().__init__(name=name, daemon=True)
        self._fn = target
        self.error: Optional[BaseException] = None

    def run(self) -> None:
        try:
            self._fn()
        except BaseException as exc:  # re-raised in the consumer thread
            self.error = exc


def _put(q: "queue.Queue[object]", item: object, stop: threading.Event) -> bool:
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def _get(q: "queue.Queue[object]", stop: threading.Event) -> object:
    while not stop.is_set():
        try:
            return q.get(timeout=0.1)
        except queue.Empty:
            continue
    return _END


def _result(future: "concurrent.futures.Future[Any]", stop: threading.Event) -> Any:
    """The future's result (its exception raised here), or _END once ``stop`` is set."""
    while not stop.is_set():
        try:
            return future.result(timeout=0.1)
        except concurrent.futures.TimeoutError:
            continue
    return _END


@dataclass
class _Run:
    """What the stage threads share for one run."""

    source: Source
    predictor: "Predictor"
    render: Render
    pool: concurrent.futures.ThreadPoolExecutor
    decoded: "queue.Queue[object]"
    rendered: "queue.Queue[object]"
    stop: threading.Event
    stats: PipelineStats
    max_frames: Optional[int]
    calls: list[threading.Thread] = field(default_factory=list)  # model calls not yet seen finished


def run_pipeline(
    source: Source,
    predictor: "Predictor",
    consume: Callable[[Frame, Any], None],
    *,
    render: Optional[Render] = None,
    workers: Optional[int] = None,
    queue_size: int = 4,
    max_frames: Optional[int] = None,
    progress: bool = True,
) -> PipelineStats:
    """Run every frame of ``source`` through ``predictor``, ``render`` and ``consume``; see the module docstring.

    ``render(frame, output, geometry)`` runs in the worker pool on one row of the model's output (default: the label
    map at the frame's size, ``predictor.finish``); ``consume(frame, rendered)`` runs in the calling thread, in
    frame order. Memory stays bounded by the queues (``queue_size`` frames between stages). Ctrl-C stops every
    stage (frames in flight are dropped) and returns with ``interrupted=True``: the caller finalises its outputs,
    then re-raises. An exception in a stage or a render stops the others and is re-raised here.
    """
    from scaseg.progress import progress as progress_bar

    stats = PipelineStats(workers=workers or default_workers(), streams=predictor.backend.streams)
    run = _Run(source, predictor, render or (lambda frame, output, geom: predictor.finish(output, geom)),
               concurrent.futures.ThreadPoolExecutor(stats.workers, thread_name_prefix="scaseg-work"),
               queue.Queue(maxsize=queue_size), queue.Queue(maxsize=queue_size), threading.Event(), stats,
               max_frames)
    stages = [_Stage(lambda: _read_frames(run), "scaseg-decode"), _Stage(lambda: _infer_batches(run), "scaseg-infer")]
    total = [x for x in (source.frame_count, max_frames) if x is not None]
    bar = progress_bar(total=min(total) if total else None, unit="frame", file=sys.stderr, disable=not progress,
                       dynamic_ncols=True, smoothing=0.1)
    start = time.perf_counter()
    opencv_threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # see the module docstring
    for stage in stages:
        stage.start()
    try:
        _write_frames(run, consume, bar)
    except KeyboardInterrupt:
        stats.interrupted = True
    except StopPipeline:
        stats.stopped = True
    finally:
        run.stop.set()
        _join_stages(stages, (run.decoded, run.rendered))
        _join_stages(list(run.calls), (run.decoded, run.rendered))  # a model call must not outlive the run
        run.pool.shutdown(wait=not any(stage.is_alive() for stage in stages), cancel_futures=True)
        cv2.setNumThreads(opencv_threads)
        stats.seconds = time.perf_counter() - start
        bar.close()
    for stage in stages:
        if stage.error is not None and not isinstance(stage.error, KeyboardInterrupt):
            raise stage.error
    # Gaps inside a video are only known once a later frame decodes; add them here.
    stats.skipped = max(stats.skipped, source.skipped)
    return stats


def _read_frames(run: _Run) -> None:
    """Decode stage: each frame with the future of its network input (None for a frame that did not decode)."""
    try:
        frames = iter(run.source)
        for n in range(sys.maxsize):
            if run.stop.is_set() or (run.max_frames is not None and n >= run.max_frames):
                break
            frame = run.stats.timed("decode", next, frames, None)
            if frame is None:
                break
            future = None
            if frame.readable:
                future = run.pool.submit(run.stats.timed, "preprocess", run.predictor.prepare_frame, frame)
            if not _put(run.decoded, (frame, future), run.stop):
                break
    finally:
        _put(run.decoded, _END, run.stop)


def _next_batch(run: _Run, batch_size: int) -> tuple[list[_Decoded], bool]:
    """The next items (at least one wait, then what is already decoded, up to one batch) and whether _END came."""
    got = [_get(run.decoded, run.stop)]
    while len(got) < batch_size and got[-1] is not _END:
        try:
            got.append(run.decoded.get_nowait())
        except queue.Empty:
            break
    done = got[-1] is _END
    if done:
        got.pop()
    return [cast(_Decoded, it) for it in got], done


def _infer_batches(run: _Run) -> None:
    """Inference stage: one model call per batch of prepared frames, up to ``streams`` calls at once in threads of
    their own; each frame goes on in order with the future of its render, which starts when its call answers."""
    slots = threading.BoundedSemaphore(run.stats.streams)
    try:
        done = False
        while not done and not run.stop.is_set():
            items, done = _next_batch(run, run.predictor.batch)
            prepared = [(frame, None if fut is None else _result(fut, run.stop)) for frame, fut in items]
            if any(p is _END for _, p in prepared):
                return
            inputs = [p for _, p in prepared if p is not None]
            call = None
            if inputs:
                while not slots.acquire(timeout=0.1):  # at most ``streams`` calls in flight
                    if run.stop.is_set():
                        return
                call = _start_call(run, [tensor for tensor, _ in inputs])
                call.add_done_callback(lambda _: slots.release())
            row = 0
            for frame, p in prepared:
                future = None
                if p is not None:
                    assert call is not None
                    future = _render_after(run, call, row, frame, p[1])
                    row += 1
                if not _put(run.rendered, (frame, future), run.stop):
                    return
    finally:
        _put(run.rendered, _END, run.stop)


def _start_call(run: _Run, tensors: list[np.ndarray]) -> "concurrent.futures.Future[list[np.ndarray]]":
    """One model call in a daemon thread of its own (a call that never returns must not keep the process alive
    after Ctrl-C, JOIN_TIMEOUT_S), its time added to the infer stage (summed over streams)."""
    call: "concurrent.futures.Future[list[np.ndarray]]" = concurrent.futures.Future()

    def work() -> None:
        call.set_running_or_notify_cancel()
        start = time.perf_counter()
        try:
            outputs = list(run.predictor.run(tensors))
        except BaseException as exc:  # handed to the frames' render futures, so to the writer
            call.set_exception(exc)
            return
        run.stats.add_call(time.perf_counter() - start)
        call.set_result(outputs)

    thread = threading.Thread(target=work, name="scaseg-model", daemon=True)
    run.calls[:] = [t for t in run.calls if t.is_alive()] + [thread]
    thread.start()
    return call


def _render_after(run: _Run, call: "concurrent.futures.Future[list[np.ndarray]]", row: int, frame: Frame,
                  geom: Geometry) -> "concurrent.futures.Future[Any]":
    """The future of ``render(frame, row of the call's outputs, geom)``, submitted to the pool once the call answers;
    the call's exception (or a pool already shut down by a stopping run) becomes this future's.

    No callback refers back to the future it is attached to (a Future keeps its callbacks after running them), so a
    frame, its row of the outputs and its rendering are freed by reference counting as soon as the frame is written:
    a cycle would leave them to Python's cyclic garbage collector, which ran only every few dozen frames (dozens of
    1080p frames were held at once: peak memory before and after in docs/performance.md), and memory would no
    longer be bounded by the queues."""
    rendered: "concurrent.futures.Future[Any]" = concurrent.futures.Future()

    def answered(done: "concurrent.futures.Future[list[np.ndarray]]") -> None:  # the model call
        if done.cancelled():
            rendered.cancel()
        elif done.exception() is not None:
            rendered.set_exception(done.exception())
        else:
            try:
                run.pool.submit(run.stats.timed, "render", run.render, frame, done.result()[row],
                                geom).add_done_callback(drawn)
            except BaseException as exc:  # the pool is shut down (the run is stopping), or fewer rows than frames
                rendered.set_exception(exc)  # the writer waits on this future: it must settle

    def drawn(done: "concurrent.futures.Future[Any]") -> None:  # the render
        if done.cancelled():
            rendered.cancel()
        elif done.exception() is not None:
            rendered.set_exception(done.exception())
        else:
            rendered.set_result(done.result())

    call.add_done_callback(answered)
    return rendered


def _write_frames(run: _Run, consume: Callable[[Frame, Any], None], bar: Any) -> None:
    """The calling thread's stage: ``consume`` each rendered frame in order, count skipped ones, until _END."""
    stats = run.stats
    while True:
        got = run.rendered.get()
        if got is _END:
            break
        frame, future = cast(_Rendered, got)
        if future is None:
            stats.skipped += 1
            stats.skipped_names.append(frame.name)
            stats.skip_reason = stats.skip_reason or frame.error
        else:
            stats.timed("write", consume, frame, future.result())
            stats.frames += 1
            if stats.infer_seconds > 0:
                bar.set_postfix_str(f"model {stats.model_fps:.1f} FPS", refresh=False)
        bar.update(1)


#: How long a stopped run waits for a stage stuck in a call it cannot leave (a server that does not answer, a long
#: model call) before it goes on without it: the stage is a daemon thread and its result is dropped.
JOIN_TIMEOUT_S = 5.0


def _join_stages(stages: "Sequence[threading.Thread]", queues: tuple["queue.Queue[object]", ...]) -> None:
    """Wait for every stage to end (``stop`` is set), emptying the queues so that none stays blocked on a full one;
    a stage still busy after JOIN_TIMEOUT_S is left behind."""
    deadline = time.monotonic() + JOIN_TIMEOUT_S
    for stage in stages:
        while stage.is_alive() and time.monotonic() < deadline:  # unblock a stage waiting on a full queue
            for q in queues:
                try:
                    q.get_nowait()
                except queue.Empty:
                    pass
            stage.join(timeout=0.05)
