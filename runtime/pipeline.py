"""The threaded decode -> infer -> encode pipeline behind scaseg-infer: three stages joined by bounded queues."""
from __future__ import annotations

import queue
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Optional, Tuple, cast

import numpy as np

from scaseg.runtime.preprocess import Geometry
from scaseg.runtime.sources import Frame, Source

if TYPE_CHECKING:
    from scaseg.runtime.predictor import Predictor

_END = object()
# (frame, network input or model output, geometry); the array is None for a frame that could not be decoded.
_Item = Tuple[Frame, Optional[np.ndarray], Optional[Geometry]]


class StopPipeline(Exception):
    """Raised by a consumer to end the run early and cleanly (e.g. 'q' pressed in the preview window)."""


@dataclass
class PipelineStats:
    """What one run did and how fast: end-to-end FPS against the model's own FPS."""

    frames: int = 0
    skipped: int = 0
    seconds: float = 0.0
    infer_seconds: float = 0.0
    infer_calls: int = 0
    interrupted: bool = False
    stopped: bool = False
    skipped_names: list[str] = field(default_factory=list)
    skip_reason: str = ""  # why the first skipped frame could not be read (the image reader's sentence)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def model_fps(self) -> float:
        return self.frames / self.infer_seconds if self.infer_seconds > 0 else 0.0


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


def run_pipeline(
    source: Source,
    predictor: "Predictor",
    consume: Callable[[Frame, np.ndarray], None],
    *,
    queue_size: int = 4,
    max_frames: Optional[int] = None,
    progress: bool = True,
) -> PipelineStats:
    """Decode+preprocess, inference and postprocess+``consume`` run in three threads joined by bounded queues.

    ``predictor`` is a scaseg.runtime.predictor.Predictor. ``consume(frame, labels)`` runs in the calling thread
    (so windows and Ctrl-C behave); labels are at the frame's own size. Memory stays bounded by the queues.
    Ctrl-C stops every stage (frames in flight are dropped) and returns with ``interrupted=True``: the caller
    finalises its outputs, then re-raises. An exception in a stage stops the others and is re-raised here.
    """
    from scaseg.progress import progress as progress_bar

    stop = threading.Event()
    decoded: "queue.Queue[object]" = queue.Queue(maxsize=queue_size)
    inferred: "queue.Queue[object]" = queue.Queue(maxsize=queue_size)
    stats = PipelineStats()
    batch_size = predictor.batch
    stages = [_Stage(lambda: _read_frames(source, predictor, decoded, stop, max_frames), "scaseg-decode"),
              _Stage(lambda: _infer_batches(predictor, batch_size, decoded, inferred, stop, stats), "scaseg-infer")]
    bar = progress_bar(total=min(x for x in (source.frame_count, max_frames) if x is not None)
               if (source.frame_count or max_frames) else None,
               unit="frame", file=sys.stderr, disable=not progress, dynamic_ncols=True, smoothing=0.1)
    start = time.perf_counter()
    for stage in stages:
        stage.start()
    try:
        _finish_frames(inferred, predictor, consume, stats, bar)
    except KeyboardInterrupt:
        stats.interrupted = True
    except StopPipeline:
        stats.stopped = True
    finally:
        stop.set()
        _join_stages(stages, (decoded, inferred))
        stats.seconds = time.perf_counter() - start
        bar.close()
    for stage in stages:
        if stage.error is not None and not isinstance(stage.error, KeyboardInterrupt):
            raise stage.error
    # Gaps inside a video are only known once a later frame decodes; add them here.
    stats.skipped = max(stats.skipped, source.skipped)
    return stats


def _read_frames(source: Source, predictor: "Predictor", decoded: "queue.Queue[object]", stop: threading.Event,
                 max_frames: Optional[int]) -> None:
    """Decode stage: each frame with its network input (None for a frame that did not decode), then _END."""
    try:
        for n, frame in enumerate(source):
            if stop.is_set() or (max_frames is not None and n >= max_frames):
                break
            item: _Item = (frame, None, None)
            if frame.image is not None:
                tensor, geom = predictor.prepare(frame.image)
                item = (frame, tensor, geom)
            if not _put(decoded, item, stop):
                break
    finally:
        _put(decoded, _END, stop)


def _next_batch(decoded: "queue.Queue[object]", stop: threading.Event, batch_size: int) -> tuple[list[_Item], bool]:
    """The next items (at least one wait, then what is already decoded, up to one batch) and whether _END came."""
    got = [_get(decoded, stop)]
    # Take what is already decoded, up to one batch, without waiting for more.
    while len(got) < batch_size and got[-1] is not _END:
        try:
            got.append(decoded.get_nowait())
        except queue.Empty:
            break
    done = got[-1] is _END
    if done:
        got.pop()
    return [cast(_Item, it) for it in got], done


def _infer_batches(predictor: "Predictor", batch_size: int, decoded: "queue.Queue[object]",
                   inferred: "queue.Queue[object]", stop: threading.Event, stats: PipelineStats) -> None:
    """Inference stage: one model call per batch of decoded frames; each frame passed on with its output."""
    try:
        done = False
        while not done and not stop.is_set():
            items, done = _next_batch(decoded, stop, batch_size)
            tensors = [t for _, t, _ in items if t is not None]
            outputs: list[np.ndarray] = []
            if tensors:
                t0 = time.perf_counter()
                outputs = list(predictor.run(tensors))
                stats.infer_seconds += time.perf_counter() - t0
                stats.infer_calls += 1
            it_out = iter(outputs)
            for frame, tensor, geom in items:
                if not _put(inferred, (frame, None if tensor is None else next(it_out), geom), stop):
                    return
    finally:
        _put(inferred, _END, stop)


def _finish_frames(inferred: "queue.Queue[object]", predictor: "Predictor",
                   consume: Callable[[Frame, np.ndarray], None], stats: PipelineStats, bar: Any) -> None:
    """The calling thread's stage: postprocess and ``consume`` each inferred frame, count skipped ones, until _END."""
    while True:
        got = inferred.get()
        if got is _END:
            break
        frame, output, geom = cast(_Item, got)
        if output is None or geom is None:
            stats.skipped += 1
            stats.skipped_names.append(frame.name)
            stats.skip_reason = stats.skip_reason or frame.error
        else:
            consume(frame, predictor.finish(output, geom))
            stats.frames += 1
            if stats.infer_seconds > 0:
                bar.set_postfix_str(f"model {stats.model_fps:.1f} FPS", refresh=False)
        bar.update(1)


def _join_stages(stages: list[_Stage], queues: tuple["queue.Queue[object]", ...]) -> None:
    """Wait for every stage to end (``stop`` is set), emptying the queues so that none stays blocked on a full one."""
    for stage in stages:
        while stage.is_alive():  # unblock a stage waiting on a full queue
            for q in queues:
                try:
                    q.get_nowait()
                except queue.Empty:
                    pass
            stage.join(timeout=0.05)
