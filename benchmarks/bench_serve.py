"""What serving costs: a real Triton server (scaseg-serve, python backend) at 1..16 streams beside in-process runs.

    python benchmarks/bench_serve.py scaseg/weights/scaseg-t-synth.int8.onnx \
        [--concurrency 1 2 4 8 16] [--frames 50] [--warmup 5] [--protocol grpc|http] [--max-batch 16] \
        [--queue-delay-us 2000] [--instances 1] [-o serve.json]

The model is written into a temporary repository with ``write_triton_repository(..., backend="python")`` (frames
in, labels out), served by the pip-installed Triton (runtime/serve.py, free local ports), and timed with the
project's own client (runtime/serve_bench.py, what ``scaseg-bench --server URL --streams N`` runs): N threads, a
connection each, one decoded 720p frame per request, ``--frames`` timed requests per stream after ``--warmup``.
Each row gives throughput, p50/p99 latency and the server's own statistics (executions, average batch, queue and
compute time per execution). Beside them, in the same process and on the same model and frame: scaseg-bench's
model-only and end-to-end timings (``time_model``; end-to-end also decodes the JPEG), and the in-process
equivalent of one server request (prepare + run + finish on the decoded frame, one stream).

``--perf-analyzer PATH`` also runs Triton's perf_analyzer at each concurrency (gRPC, the same frame size, random
uint8 frames): the tritonclient 2.51.0 wheel ships it; it needs libb64.so.0d and libcudart.so.12 on
LD_LIBRARY_PATH (docs/triton.md says how to lay them out without touching the environment). It gives up on a
busy machine ("Failed to obtain stable measurement"); then its row says so. Machine and versions are printed
first. Run it on an idle machine: the server and the client threads share its cores.
"""
from __future__ import annotations

import argparse
import json
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from scaseg.data.images import decode_image
from scaseg.export.triton import write_triton_repository
from scaseg.runtime.backends import open_backend
from scaseg.runtime.bench import sample_jpeg, time_model
from scaseg.runtime.predictor import Predictor
from scaseg.runtime.remote import open_server
from scaseg.runtime.serve import free_ports, triton_server
from scaseg.runtime.serve_bench import load_test

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_machine import machine_line  # noqa: E402


def in_process(model: str, frame: np.ndarray, frames: int, warmup: int) -> dict:
    """scaseg-bench's timings, and one stream of prepare + run + finish on the decoded frame (a server request's work)."""
    predictor = Predictor(open_backend(model), resize="letterbox")
    bench = time_model(predictor, sample_jpeg(), warmup, frames, progress=False)
    for _ in range(warmup):
        predictor(frame)
    seconds = []
    for _ in range(frames):
        t0 = time.perf_counter()
        predictor(frame)
        seconds.append(time.perf_counter() - t0)
    ms = np.asarray(seconds) * 1e3
    same_work = {"fps": 1e3 / ms.mean(), "p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99))}
    return {"scaseg_bench": bench, "same_work": same_work, "threads": predictor.backend.threads}


def perf_analyzer(binary: str, url: str, streams: int, hw: tuple[int, int], frames: int) -> str:
    """One perf_analyzer run at ``streams`` concurrent requests: its table row, or why it gave none."""
    with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as tmp:
        out = Path(tmp) / "pa.csv"
        done = subprocess.run([binary, "-m", "model", "-u", url, "-i", "grpc", "--shape", f"FRAMES:{hw[0]},{hw[1]},3",
                               f"--concurrency-range={streams}:{streams}", "--measurement-mode", "count_windows",
                               "--measurement-request-count", str(frames), "-f", str(out)],
                              capture_output=True, text=True, timeout=600)
        if done.returncode != 0 or not out.is_file():
            why = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()][-1:] or ["no output"]
            return f"| perf_analyzer (grpc) | {streams} | failed: {why[0].strip()} | | | | | | |"
        row = next(csv.DictReader(out.read_text().splitlines()))
    us = {key: float(value) / 1e3 for key, value in row.items() if key.endswith("latency") and value}
    return (f"| perf_analyzer (grpc) | {streams} | {float(row['Inferences/Second']):.1f} | "
            f"{us.get('p50 latency', float('nan')):.1f} | {us.get('p99 latency', float('nan')):.1f} | | | | |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="an .onnx model (scaseg-export)")
    ap.add_argument("--concurrency", nargs="+", type=int, default=[1, 2, 4, 8, 16])
    ap.add_argument("--frames", type=int, default=50, help="timed requests per stream")
    ap.add_argument("--warmup", type=int, default=5, help="untimed requests per stream first")
    ap.add_argument("--protocol", choices=["grpc", "http"], default="grpc")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--queue-delay-us", type=int, default=2000)
    ap.add_argument("--instances", type=int, default=1)
    ap.add_argument("--perf-analyzer", metavar="PATH", help="also run this perf_analyzer at each concurrency")
    ap.add_argument("-o", "--output", type=Path, help="also write every figure as JSON")
    args = ap.parse_args()
    frame = decode_image(sample_jpeg())
    print(f"# {machine_line()}")
    print(f"# {Path(args.model).name}, {frame.shape[0]}x{frame.shape[1]} frames, {args.frames} timed requests per "
          f"stream after {args.warmup}; server: python backend, max_batch {args.max_batch}, queue delay "
          f"{args.queue_delay_us} us, {args.instances} instance(s), {args.protocol}")
    local = in_process(args.model, frame, args.frames, args.warmup)
    bench, same = local["scaseg_bench"], local["same_work"]
    print("| where | streams | FPS | p50 ms | p99 ms | executions | avg batch | queue ms | compute ms/exec |")
    print("|---|---|---|---|---|---|---|---|---|")
    print(f"| in-process scaseg-bench, model only | 1 | {bench['fps']:.1f} | {bench['latency_ms']['p50']:.1f} | "
          f"{bench['latency_ms']['p99']:.1f} | | | | |")
    e2e = bench["end_to_end"]
    print(f"| in-process scaseg-bench, end-to-end (decode too) | 1 | {e2e['fps']:.1f} | {e2e['latency_ms']['p50']:.1f} | "
          f"{e2e['latency_ms']['p99']:.1f} | | | | |")
    print(f"| in-process, a request's work | 1 | {same['fps']:.1f} | {same['p50_ms']:.1f} | {same['p99_ms']:.1f} "
          "| | | | |", flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-serve-") as tmp:
        write_triton_repository(args.model, tmp, name="model", backend="python", max_batch_size=args.max_batch,
                                max_queue_delay_us=args.queue_delay_us, instances=args.instances)
        ports = free_ports()
        with triton_server(Path(tmp), ports):
            url = ports.endpoints()[args.protocol]
            backend = open_server(url, "model")
            for streams in args.concurrency:
                record = load_test(backend, url, streams, [frame] * args.frames, args.warmup)
                s = record["server_stats"]
                rows.append(record)
                print(f"| server ({args.protocol}) | {streams} | {record['fps']:.1f} | {record['p50_ms']:.1f} | "
                      f"{record['p99_ms']:.1f} | {s['executions']} | {s['average_batch']:.2f} | {s['queue_ms']:.2f} "
                      f"| {s['compute_ms']:.1f} |", flush=True)
                if args.perf_analyzer:
                    print(perf_analyzer(args.perf_analyzer, f"localhost:{ports.grpc}", streams, frame.shape[:2],
                                        args.frames), flush=True)
    if args.output:
        args.output.write_text(json.dumps({"machine": machine_line(), "settings": vars(args) | {"output": str(args.output)},
                                           "in_process": local, "server": rows}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
