"""scaseg-infer's frame path at camera resolution: end-to-end FPS against the model's own, and the pipeline's ceiling.

For each video size (720p, 1080p, 2160p by default), on H.264 clips of street scenes:
- model-only: the backend alone on one prepared frame (ONNX Runtime, --threads), median of --runs calls, timed in
  each repeat between the scaseg-infer runs (the ratio is the median of each repeat's own ratio);
- end-to-end: the wall time of the real `scaseg-infer CLIP -o out.mp4 --threads T` (its other options at their
  defaults, --streams auto included where the checkout has it) on an N-frame clip minus its wall time on a
  1-frame clip (start-up, model load and the first frame cancel), as frames per second; then end-to-end / model-only;
- ceiling: the same scaseg-infer run with a near-zero-cost model (a 1x1 convolution with the shipped model's
  input, output and metadata): what decode, preprocess, postprocess, overlay and encode alone allow;
- work per stage: milliseconds per frame, summed over each stage's threads, as scaseg-infer reports them;
- CPU per frame: scaseg-infer's user + system time (every thread) on the N-frame clip minus the 1-frame clip's, per
  frame, for every kind of run below (the compare runs included);
- memory: the peak RSS of each kind of scaseg-infer run on the N-frame clip, and its page faults per frame (the
  1-frame run's subtracted: fresh pages the kernel had to zero);
- with --compare CHECKOUT: the same runs with another checkout's scaseg-infer (a previous version), interleaved
  (with --streams N also its --streams N runs);
- with --spin: scaseg-infer's pipeline with ONNX Runtime's idle threads spinning against sleeping (what it uses);
- with --streams N: the same scaseg-infer runs with --streams N (N model calls side by side, the threads split
  between them), and the model alone the same way (N threads each calling it: frames per second of all together);
- with --video-codec ENCODER: this checkout's scaseg-infer runs write with that encoder (e.g. mpeg4) instead of libx264;
- with --streams N, where the CPU of a frame goes: the --streams run's CPU per frame split into the model alone
  (N calls at once on --threads / N threads each, idle threads sleeping as in scaseg-infer, in this process), the
  codecs alone (the clip read by scaseg-infer's own source, open_source, and written by VideoFile as the source gives
  it: the decoder's I420 planes as they are, or RGB converted to I420; nothing else, in this process) and
  the rest (by difference: colour conversions, resizes, overlay, argmax, Python); the frame rate the cores reach when every cycle does that work (cores / CPU per frame),
  as a share of model-only, which bounds the ratio, and the same bound were the rest free;
- bytes host -> device and back per frame for this model (float input, float logits out) and for a raw-frame
  model (uint8 frame in, uint8 labels at the frame's size out), computed from the shapes.
Runs are interleaved (model, ceiling, ..., then the reverse order in the next repeat, so that no kind always runs
first) so a change of load hits all alike; figures are medians (use an even --repeats).

    python benchmarks/bench_pipeline.py                                # the shipped int8 model, 2 threads
    python benchmarks/bench_pipeline.py model.onnx --sizes 1080p --frames 121 --repeats 3
    python benchmarks/bench_pipeline.py --sizes 1080p --streams 2              # + scaseg-infer --streams 2
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from perf_machine import machine_line
from perf_measure import cpu_seconds

REPO = Path(__file__).resolve().parent.parent
SIZES = {"480p": (480, 854), "720p": (720, 1280), "1080p": (1080, 1920), "1440p": (1440, 2560), "2160p": (2160, 3840)}
STAGE_LINE = re.compile(r"work per frame, ms summed over threads: (.*) \((\d+) preprocess/render workers\)")


def make_clip(path: Path, frames: int, hw: tuple[int, int], fps: float = 30.0) -> Path:
    """An H.264 clip of a drive down a synthetic street (scaseg-synth's video renderer)."""
    from scaseg.data.synth import render_video
    from scaseg.data.video import VideoFile

    video = VideoFile(path, fps)
    for image, _ in render_video(0, frames, hw):
        video.write(image, rgb=True)
    video.close()
    return path


def tiny_model(model: Path, dest: Path) -> Path:
    """A model of near-zero cost with ``model``'s input, output shape and metadata: one 1x1 convolution."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    src = onnx.load(str(model), load_external_data=False)
    inp, out = src.graph.input[0], src.graph.output[0]
    classes = out.type.tensor_type.shape.dim[1].dim_value
    weight = numpy_helper.from_array(np.random.default_rng(0).standard_normal((classes, 3, 1, 1)).astype(np.float32), "w")
    graph = helper.make_graph([helper.make_node("Conv", [inp.name, "w"], [out.name])], "tiny", [inp],
                              [helper.make_tensor_value_info(out.name, TensorProto.FLOAT,
                                                             [d.dim_value or d.dim_param for d in
                                                              out.type.tensor_type.shape.dim])], [weight])
    tiny = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    for prop in src.metadata_props:
        tiny.metadata_props.add(key=prop.key, value=prop.value)
    onnx.save(tiny, str(dest))
    return dest


def model_only(model: Path, hw: tuple[int, int], threads: int,
               streams: int = 1) -> Callable[[int], tuple[float, float]]:
    """A function timing the backend alone on one prepared frame of size ``hw``: frames per second, median of n calls;
    with ``streams`` > 1, that many threads each make n calls at once (RunSettings.streams): all frames / wall time.
    It also answers the CPU milliseconds per frame of those calls (this process's user + system time, every thread;
    with one call at a time ONNX Runtime's idle threads spin, so that figure counts their waiting too)."""
    from concurrent.futures import ThreadPoolExecutor

    from scaseg.runtime.backends import RunSettings, open_backend
    from scaseg.runtime.predictor import Predictor

    settings = RunSettings.parse("cpu", str(threads), "fast", streams)
    if streams > 1:  # as scaseg-infer runs its streams: idle threads sleep (RunSettings.spin)
        settings = dataclasses.replace(settings, spin=False)
    predictor = Predictor(open_backend(str(model), settings=settings))
    frame = np.random.default_rng(0).integers(0, 256, (*hw, 3), dtype=np.uint8)
    batch = predictor.prepare(frame)[0][None]
    for _ in range(3):
        predictor.backend.infer(batch)

    def calls(runs: int) -> list[float]:
        laps = []
        for _ in range(runs):
            start = time.perf_counter()
            predictor.backend.infer(batch)
            laps.append(time.perf_counter() - start)
        return laps

    def fps(runs: int) -> tuple[float, float]:
        cpu = cpu_seconds()
        if streams == 1:
            rate = 1.0 / statistics.median(calls(runs))
        else:
            with ThreadPoolExecutor(streams) as pool:
                start = time.perf_counter()
                list(pool.map(calls, [runs] * streams))
                rate = streams * runs / (time.perf_counter() - start)
        return rate, 1000 * (cpu_seconds() - cpu) / (streams * runs)
    return fps


def codecs_cpu(clip: Path, out: Path, codec: Optional[str]) -> float:
    """CPU seconds (this process, every thread) to read ``clip`` with scaseg-infer's own source (open_source: PyAV's
    I420 planes for an H.264 clip, else OpenCV and RGB) and write every frame with VideoFile, its writer (``codec``,
    or the container's own), as the source gives it: the codecs alone, with OpenCV on one thread per call as in
    scaseg-infer's pipeline."""
    import cv2

    from scaseg.data.video import VideoFile
    from scaseg.runtime.sources import open_source

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)
    start = cpu_seconds()
    try:
        source = open_source(str(clip))
        video = VideoFile(out, 30.0, codec=codec)
        try:
            for frame in source:
                if frame.planes is not None:
                    video.write(frame.planes)
                elif frame.image is not None:
                    video.write(frame.image, rgb=True)
        finally:
            source.close()
        video.close()
    finally:
        cv2.setNumThreads(threads)
    return cpu_seconds() - start


def cpu_bound(cores: int, cpu_ms: float, model_fps: float) -> tuple[float, float]:
    """The most frames per second ``cores`` can finish when each frame costs ``cpu_ms`` of CPU, and that as a share
    of ``model_fps``: the ceiling of end-to-end / model-only when all the work shares those cores."""
    fps = 1000.0 * cores / cpu_ms
    return fps, fps / model_fps


@dataclass
class InferRun:
    """One scaseg-infer run: wall and CPU seconds (user + system, every thread), page faults, peak RSS (MB), and the
    work per stage (ms per frame) and workers it reported."""

    wall: float
    cpu: float
    faults: int
    peak_mb: float
    stages: dict[str, float]
    workers: int


def infer_wall(clip: Path, model: Path, out: Path, threads: int, checkout: Optional[Path] = None, streams: int = 1,
               codec: Optional[str] = None) -> InferRun:
    """Run scaseg-infer once on ``clip`` and measure it (InferRun).

    ``checkout``: run the scaseg-infer of that checkout instead (PYTHONPATH), e.g. a previous release.
    ``streams``, ``codec``: its --streams and --video-codec."""
    command = [sys.executable, "-c", "import atexit, resource, sys, scaseg; sys.argv[0] = 'scaseg-infer'; "
               "atexit.register(lambda: print('peak rss kb', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "
               "'scaseg from', scaseg.__file__, file=sys.stderr)); from scaseg.runtime.infer import main; main()",
               str(clip), "-m", str(model), "-o", str(out), "--threads", str(threads)]
    command += ["--streams", str(streams)] if streams > 1 else []
    command += ["--video-codec", codec] if codec else []
    # The checkout that runs is the one on PYTHONPATH, and the child starts in the clip's folder: `python -c` puts its
    # working directory first on sys.path, so a child started in a checkout would import that checkout whatever
    # PYTHONPATH said (it did: --compare run from this checkout's root timed this checkout twice). Checked below.
    source = (checkout or REPO).resolve()
    env = dict(os.environ, PYTHONPATH=str(source))
    start, cpu = time.perf_counter(), cpu_seconds(children=True)
    faults = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt
    proc = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(clip.parent))
    wall, cpu = time.perf_counter() - start, cpu_seconds(children=True) - cpu
    faults = resource.getrusage(resource.RUSAGE_CHILDREN).ru_minflt - faults
    if proc.returncode != 0:
        raise SystemExit(f"scaseg-infer failed: {proc.stderr.strip()}")
    found = STAGE_LINE.search(proc.stderr)
    stages = {k: float(v) for k, v in (part.rsplit(" ", 1) for part in found.group(1).split(", "))} if found else {}
    peak = re.search(r"peak rss kb (\d+) scaseg from (.*)", proc.stderr)
    if peak is None or not Path(peak.group(2)).resolve().is_relative_to(source):
        raise SystemExit(f"scaseg-infer ran scaseg from {peak.group(2) if peak else '?'}, not from {source}")
    return InferRun(wall, cpu, faults, int(peak.group(1)) / 1024, stages, int(found.group(2)) if found else 0)


def spin_fps(model: Path, clip: Path, out: Path, threads: int, spin: bool) -> float:
    """scaseg-infer's own run (in this process) with ONNX Runtime's idle threads spinning or sleeping."""
    from scaseg.runtime.backends import RunSettings, open_backend
    from scaseg.runtime.infer import InferRequest, _run
    from scaseg.runtime.predictor import Predictor
    from scaseg.runtime.sources import open_source

    settings = RunSettings("cpu", threads, spin=spin)
    request = InferRequest(settings, None, None, "letterbox", "overlay", 0.5, False, False, None, 4, True)
    predictor = Predictor(open_backend(str(model), settings=settings), resize="letterbox")
    src = open_source(str(clip))
    start = time.perf_counter()
    try:
        _run(src, predictor, out, "video", request, model.name)
    finally:
        src.close()
    return src.frame_count / (time.perf_counter() - start) if src.frame_count else 0.0


def frame_bytes(model: Path, hw: tuple[int, int]) -> tuple[int, int]:
    """Bytes in and out per frame: (float32 input + float32 logits at the network size, uint8 frame + uint8 labels),
    by bench_raw_input.transfer_bytes (the one formula)."""
    from bench_raw_input import transfer_bytes

    from scaseg.runtime.backends import open_backend
    from scaseg.runtime.predictor import Predictor

    predictor = Predictor(open_backend(str(model)))
    b = transfer_bytes(hw, predictor.info.network_size or predictor.size or hw, predictor.info.num_classes)
    return b["float_in"] + b["float_logits_out"], b["raw_in"] + b["raw_labels_out"]


def measure_size(model: Path, tiny: Path, name: str, args: argparse.Namespace, tmp: Path) -> dict[str, object]:
    hw = SIZES[name]
    clips = {n: make_clip(tmp / f"{name}_{n}.mp4", n, hw) for n in (1, args.frames)}
    runs = [("model", model, None, 1), ("ceiling", tiny, None, 1)]
    if args.streams > 1:
        runs += [("streams", model, None, args.streams)]
    if args.compare:
        runs += [("compare", model, args.compare, 1), ("compare ceiling", tiny, args.compare, 1)]
        if args.streams > 1:
            runs += [("compare streams", model, args.compare, args.streams)]
    rows: dict[str, list[float]] = {kind: [] for kind, _, _, _ in runs}
    cpu_ms: dict[str, list[float]] = {kind: [] for kind, _, _, _ in runs}  # CPU per frame, start-up cancelled
    memory: dict[str, list[tuple[float, float]]] = {kind: [] for kind, _, _, _ in runs}  # peak MB, faults per frame
    stages: dict[str, list[dict[str, float]]] = {"model": [], "ceiling": [], "streams": []}
    workers = 0
    time_model = model_only(model, hw, args.threads)
    time_streams = model_only(model, hw, args.threads, args.streams) if args.streams > 1 else None
    alone: list[float] = []
    alone_streams: list[float] = []
    model_cpu: list[float] = []  # CPU ms per frame of the model alone, --streams calls at once
    codecs: list[float] = []  # CPU ms per frame of decode + encode alone
    for repeat in range(args.repeats):  # interleaved: a change of load hits every kind alike
        alone.append(time_model(args.runs)[0])
        if time_streams is not None:
            rate, cpu = time_streams(args.runs)
            alone_streams.append(rate)
            model_cpu.append(cpu)
            one, many = (codecs_cpu(clips[n], tmp / "codecs.mp4", args.video_codec) for n in (1, args.frames))
            codecs.append(1000 * (many - one) / (args.frames - 1))
        # every other repeat in the reverse order (A B C, C B A, ...): on this host the same run timed first or last
        # in a round came out slower by more than the changes compared (the checkout timed first in each round)
        for kind, m, checkout, streams in (runs if repeat % 2 == 0 else runs[::-1]):
            codec = None if checkout else args.video_codec
            one = infer_wall(clips[1], m, tmp / "one.mp4", args.threads, checkout, streams, codec)
            many = infer_wall(clips[args.frames], m, tmp / "many.mp4", args.threads, checkout, streams, codec)
            rows[kind].append((args.frames - 1) / max(many.wall - one.wall, 1e-9))
            cpu_ms[kind].append(1000 * (many.cpu - one.cpu) / (args.frames - 1))
            memory[kind].append((many.peak_mb, (many.faults - one.faults) / (args.frames - 1)))
            if kind in stages:
                stages[kind].append(many.stages)
                workers = many.workers
    median_stages = {kind: {k: statistics.median(s[k] for s in stages[kind]) for k in stages[kind][0]}
                     for kind in stages if stages[kind] and stages[kind][0]}
    spin = {}
    if args.spin:
        runs: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for on in (True, False):
                runs[on].append(spin_fps(model, clips[args.frames], tmp / "spin.mp4", args.threads, on))
        spin = {on: statistics.median(v) for on, v in runs.items()}
    streams_row = {}
    if alone_streams:
        streams_row = {"e2e": statistics.median(rows["streams"]), "model_only": statistics.median(alone_streams),
                       "ratio": statistics.median(e / m for e, m in zip(rows["streams"], alone)),
                       "model_cpu": statistics.median(model_cpu), "codecs_cpu": statistics.median(codecs)}
    return {"size": name, "hw": hw, "model_only": statistics.median(alone), "streams": streams_row,
            "ratio": statistics.median(e / m for e, m in zip(rows["model"], alone)), "spin": spin, "e2e": statistics.median(rows["model"]),
            "ceiling": statistics.median(rows["ceiling"]), "stages": median_stages,
            "compare": {k: statistics.median(v) for k, v in rows.items() if k.startswith("compare")}, "workers": workers,
            "cpu_ms": {k: statistics.median(v) for k, v in cpu_ms.items()},
            "memory": {k: (statistics.median(p for p, _ in v), statistics.median(f for _, f in v)) for k, v in memory.items()},
            # this checkout against the other, repeat by repeat (both ran back to back): FPS ratio, CPU-per-frame ratio
            "paired": {ours: (statistics.median(a / b for a, b in zip(rows[ours], rows[theirs])),
                              statistics.median(a / b for a, b in zip(cpu_ms[ours], cpu_ms[theirs])))
                       for ours, theirs in (("model", "compare"), ("ceiling", "compare ceiling"),
                                            ("streams", "compare streams")) if theirs in rows},
            "bytes": frame_bytes(model, hw)}


def report(results: list[dict[str, object]], model: Path, args: argparse.Namespace) -> None:
    print(f"model {model.name}; {args.frames}-frame H.264 clips, written as {args.video_codec or 'libx264'}; "
          f"ONNX Runtime CPU, {args.threads} threads; "
          f"medians of {args.repeats} interleaved runs (ratio: median of each repeat's end-to-end / model-only)")
    print(f"{'video':>7s} {'model-only':>11s} {'end-to-end':>11s} {'ratio':>6s} {'ceiling':>8s}   "
          "work per frame with the model, ms (decode/preprocess/infer/render/write)   ceiling's")
    for r in results:
        st = r["stages"]
        cells = ["/".join(f"{v:.1f}" for v in st.get(kind, {}).values()) for kind in ("model", "ceiling")]  # type: ignore[union-attr]
        print(f"{r['size']:>7s} {r['model_only']:9.1f}   {r['e2e']:9.1f}   {r['ratio']:5.2f} "  # type: ignore[operator]
              f"{r['ceiling']:7.1f}    {cells[0]:<40s} {cells[1]}   ({r['workers']} workers)")
    if args.compare:
        print(f"the same scaseg-infer runs with the checkout {args.compare}, interleaved with the above:")
        for r in results:
            c = r["compare"]
            pair = r["paired"]
            print(f"{r['size']:>7s}  end-to-end {c['compare']:6.1f} FPS = {c['compare'] / r['model_only']:.2f} of "  # type: ignore[index,operator]
                  f"model-only (this checkout: {pair['model'][0]:.2f}x the FPS, {pair['model'][1]:.2f}x the CPU per "  # type: ignore[index]
                  f"frame)   ceiling {c['compare ceiling']:6.1f} FPS (this checkout: {pair['ceiling'][0]:.2f}x, "  # type: ignore[index]
                  f"{pair['ceiling'][1]:.2f}x)")  # type: ignore[index]
            if "streams" in pair:  # type: ignore[operator]
                print(f"{'':>7s}  with --streams {args.streams}: end-to-end {c['compare streams']:6.1f} FPS = "  # type: ignore[index]
                      f"{c['compare streams'] / r['model_only']:.2f} of model-only (this checkout: "  # type: ignore[index,operator]
                      f"{pair['streams'][0]:.2f}x the FPS, {pair['streams'][1]:.2f}x the CPU per frame)")  # type: ignore[index]
        print("  (this checkout against the other: the median over repeats of each repeat's ratio, the two runs back to "
              "back)")
    if args.streams > 1:
        print(f"the same scaseg-infer runs with --streams {args.streams} ({args.streams} model calls side by side, "
              f"{args.threads} threads split between them), interleaved with the above; model-only with "
              f"{args.streams} streams: {args.streams} threads calling the model at once, all frames / wall time:")
        for r in results:
            s, st = r["streams"], r["stages"].get("streams", {})  # type: ignore[union-attr,attr-defined]
            print(f"{r['size']:>7s}  end-to-end {s['e2e']:6.1f} FPS = {s['ratio']:.2f} of model-only ({args.threads} threads, one "  # type: ignore[index]
                  f"call at a time)   model-only with {args.streams} streams {s['model_only']:6.1f} FPS   work per frame "  # type: ignore[index]
                  + "/".join(f"{v:.1f}" for v in st.values()))
    print("CPU per frame, ms (scaseg-infer's user + system time, every thread, the 1-frame run's subtracted; medians; "
          "less moved by other guests of a shared host than wall time):")
    for r in results:
        cells = "   ".join(f"{kind} {ms:6.1f}" for kind, ms in r["cpu_ms"].items())  # type: ignore[attr-defined]
        print(f"{r['size']:>7s}  {cells}")
    print(f"memory: peak RSS of each scaseg-infer run on the {args.frames}-frame clip, MB / page faults per frame (the "
          "1-frame run's subtracted); medians:")
    for r in results:
        cells = "   ".join(f"{kind} {mb:5.0f} / {faults:5.0f}" for kind, (mb, faults) in r["memory"].items())  # type: ignore[attr-defined]
        print(f"{r['size']:>7s}  {cells}")
    if args.streams > 1:
        cores = len(os.sched_getaffinity(0))
        print(f"where the CPU of a --streams {args.streams} frame goes, ms: the model alone ({args.streams} calls at once, "
              f"{max(1, args.threads // args.streams)} thread(s) each) + the codecs alone (decode + encode of the clip, nothing else) + the rest (by difference); "
              f"{cores} cores at full use finish at most cores / CPU per frame, shown as a share of model-only:")
        for r in results:
            s, total = r["streams"], r["cpu_ms"]["streams"]  # type: ignore[index]
            rest = total - s["model_cpu"] - s["codecs_cpu"]  # type: ignore[index]
            bound = cpu_bound(cores, total, r["model_only"])  # type: ignore[arg-type]
            bare = cpu_bound(cores, s["model_cpu"] + s["codecs_cpu"], r["model_only"])  # type: ignore[index,arg-type]
            print(f"{r['size']:>7s}  {total:5.1f} = model {s['model_cpu']:5.1f} + codecs {s['codecs_cpu']:5.1f} + rest "  # type: ignore[index]
                  f"{rest:5.1f}   at most {bound[0]:5.1f} FPS = {bound[1]:.2f} (end-to-end ran {s['e2e'] / bound[0]:.2f} "  # type: ignore[index]
                  f"of that)   with the rest free {bare[0]:5.1f} FPS = {bare[1]:.2f}")
    if any(r["spin"] for r in results):
        print("ONNX Runtime's idle threads spinning (its default) or sleeping (scaseg-infer's choice), in-process "
              "scaseg-infer FPS including start-up of the pipeline:")
        for r in results:
            spin = r["spin"]
            print(f"{r['size']:>7s}  spinning {spin[True]:6.1f}   sleeping {spin[False]:6.1f}   "  # type: ignore[index]
                  f"ratio {spin[False] / spin[True]:.2f}")  # type: ignore[index]
    print("bytes moved per frame, host -> device and back (in + out):")
    for r in results:
        float_b, raw_b = r["bytes"]  # type: ignore[misc]
        print(f"{r['size']:>7s}  float path {float_b / 1e6:6.2f} MB   raw-frame path {raw_b / 1e6:6.2f} MB   "
              f"ratio {float_b / raw_b:.2f}")


def main(argv: Optional[list[str]] = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", nargs="?", help="ONNX model with scaseg metadata (default: the shipped int8 model)")
    ap.add_argument("--sizes", nargs="+", default=["720p", "1080p", "2160p"], choices=list(SIZES), help="video sizes")
    ap.add_argument("--frames", type=int, default=61, help="frames in each timed clip (a 1-frame clip is subtracted)")
    ap.add_argument("--threads", type=int, default=2, help="ONNX Runtime intra-op threads")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved scaseg-infer runs per size (median)")
    ap.add_argument("--runs", type=int, default=30, help="model-only timed calls (median)")
    ap.add_argument("--compare", type=Path, metavar="CHECKOUT", help="also time the scaseg-infer of another checkout "
                    "(e.g. git worktree add ../old v0.4) on the same clips, interleaved")
    ap.add_argument("--streams", type=int, default=1, help="also time scaseg-infer --streams N and the model alone "
                    "with N calls side by side")
    ap.add_argument("--video-codec", metavar="ENCODER", help="scaseg-infer --video-codec of this checkout's runs "
                    "(default: its own, libx264)")
    ap.add_argument("--spin", action="store_true", help="also compare ONNX Runtime's idle threads spinning vs "
                    "sleeping inside scaseg-infer's pipeline (RunSettings.spin)")
    args = ap.parse_args(argv)
    from scaseg import default_model

    model = Path(args.model or default_model()).resolve()  # the scaseg-infer children run in the clips' folder
    print(machine_line())
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        tiny = tiny_model(model, tmp / "tiny.onnx")
        results = []
        for size in args.sizes:
            print(f"measuring {size} ...", file=sys.stderr, flush=True)
            results.append(measure_size(model, tiny, size, args, tmp))
    report(results, model, args)


if __name__ == "__main__":
    main()
