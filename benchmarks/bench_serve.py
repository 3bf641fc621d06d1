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

perf_analyzer is not used: the only wheel that ships it for this machine (tritonclient 2.51.0) needs libb64 and a
CUDA runtime library beside it and an older tritonclient than the project installs (docs/triton.md). Machine and
versions are printed first. Run it on an idle machine: the server and the client threads share its cores.
"""
from __future__ import annotations

import argparse
import json
import socket
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
from scaseg.runtime.serve import Ports, triton_server
from scaseg.runtime.serve_bench import load_test

sys.path.insert(0, str(Path(__file__).resolve().parent))
from perf_machine import machine_line  # noqa: E402


def free_ports() -> Ports:
    socks = [socket.socket() for _ in range(3)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return Ports(*ports)


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
    if args.output:
        args.output.write_text(json.dumps({"machine": machine_line(), "settings": vars(args) | {"output": str(args.output)},
                                           "in_process": local, "server": rows}, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
