"""A real Triton Inference Server (nvidia-pytriton's tritonserver, python backend) serving a scaseg python model.

One server per module (free local ports) carries the HTTP/gRPC/load tests; the fault tests start their own.
Labels are compared with the in-process runtime (ONNX Runtime through the project's Predictor) on the same model.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from badinput import command, env, interrupt, refused, run, session_processes
from runtime_models import make_onnx, run_main

from scaseg.errors import ScasegError
from scaseg.export.triton import write_triton_repository
from scaseg.runtime import infer as infer_cli
from scaseg.runtime.backends import open_backend
from scaseg.runtime.predictor import Predictor
from scaseg.runtime.remote import ServerBackend, open_server
from scaseg.runtime.serve import find_triton, free_ports, triton_server
from scaseg.runtime.serve_bench import load_test

try:
    find_triton()
    SKIP = ""
except ScasegError as exc:
    SKIP = f"no Triton server binary here ({exc})"
pytestmark = pytest.mark.skipif(bool(SKIP) or not sys.platform.startswith("linux"), reason=SKIP or "Linux only")

CLASSES = 5


def tiny_model(path: Path) -> Path:
    """A dynamic-batch 1x1-conv model with random weights: every class shows up on noise frames."""
    make_onnx(path, num_classes=CLASSES, size=(24, 32), batch=None)
    model = onnx.load(str(path))
    weights = np.random.default_rng(1).standard_normal((CLASSES, 3, 1, 1)).astype(np.float32)
    model.graph.initializer[0].CopyFrom(numpy_helper.from_array(weights, "W"))
    onnx.save(model, str(path))
    return path


def frames(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (20 + 3 * (i % 4), 30 + 5 * (i % 3), 3), dtype=np.uint8) for i in range(n)]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Ports, Path]]:
    root = tmp_path_factory.mktemp("served")
    model = tiny_model(root / "tiny.onnx")
    write_triton_repository(str(model), str(root / "repo"), backend="python", max_batch_size=16, max_queue_delay_us=5000)
    ports = free_ports()
    with triton_server(root / "repo", ports):
        yield ports, model


def local_labels(model: Path, images: list[np.ndarray]) -> list[np.ndarray]:
    predictor = Predictor(open_backend(str(model)), resize="letterbox")
    return [predictor(image) for image in images]


def make_video(path: Path, count: int, hw: tuple[int, int] = (36, 52)) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (hw[1], hw[0]))
    for image in frames(count, seed=7):
        writer.write(cv2.resize(image, (hw[1], hw[0]), interpolation=cv2.INTER_NEAREST))
    writer.release()
    return path


def read_labels(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: cv2.imread(str(p), cv2.IMREAD_UNCHANGED) for p in sorted(folder.glob("*.png"))}


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_images_and_video_match_the_in_process_runtime(served, tmp_path: Path, scheme: str, capsys, monkeypatch) -> None:
    ports, model = served
    url = ports.endpoints()[scheme].replace("localhost", "127.0.0.1")
    images = tmp_path / "images"
    images.mkdir()
    for i, image in enumerate(frames(5, seed=3)):
        cv2.imwrite(str(images / f"im{i}.png"), image)
    video = make_video(tmp_path / "clip.avi", 12)
    for source in (images, video):
        remote, local = tmp_path / f"{source.stem}_remote", tmp_path / f"{source.stem}_local"
        code, _, err = run_main(infer_cli.main, [source, "--server", url, "--save-labels", "-o", remote, "-q"],
                                capsys, monkeypatch)
        assert code == 0, err
        code, _, err = run_main(infer_cli.main, [source, "-m", model, "--save-labels", "-o", local, "-q"], capsys,
                                monkeypatch)
        assert code == 0, err
        got, want = read_labels(remote), read_labels(local)
        assert len(got) == (5 if source == images else 12) and got.keys() == want.keys()
        for name in want:
            assert np.array_equal(got[name], want[name]), name
        assert len({int(v) for labels in got.values() for v in np.unique(labels)}) >= 3  # not a constant answer


def test_an_h264_video_read_as_planes_reaches_the_server_as_its_rgb_frames(served, tmp_path: Path, capsys,
                                                                           monkeypatch) -> None:
    from scaseg.data.video import VideoFile
    from scaseg.runtime.sources import PlanesSource, open_source

    ports, model = served
    video = tmp_path / "clip.mp4"
    writer = VideoFile(video, 10.0)
    for image in frames(6, seed=5):
        writer.write(cv2.resize(image, (52, 36), interpolation=cv2.INTER_NEAREST), rgb=True)
    writer.close()
    source = open_source(str(video))
    try:
        assert isinstance(source, PlanesSource)  # the frames come as planes: RemotePredictor converts them
        want = local_labels(model, [frame.image for frame in source])
    finally:
        source.close()
    out = tmp_path / "remote"
    code, _, err = run_main(infer_cli.main, [video, "--server", ports.endpoints()["grpc"], "--save-labels", "-o", out,
                                             "-q"], capsys, monkeypatch)
    assert code == 0, err
    got = read_labels(out)
    assert len(got) == 6 and all(np.array_equal(g, w) for g, w in zip(got.values(), want))


def test_sixteen_streams_nothing_lost_and_batched(served) -> None:
    ports, model = served
    url = ports.endpoints()["grpc"]
    images = frames(30, seed=11)
    want = local_labels(model, images)
    record = load_test(open_server(url), url, streams=16, frames=images, warmup=0, keep=True)
    assert record["frames"] == 16 * 30
    for stream in record["labels"]:
        assert len(stream) == 30 and all(np.array_equal(g, w) for g, w in zip(stream, want))
    stats = record["server_stats"]
    assert stats["requests"] == 16 * 30 and stats["failed"] == 0 and stats["frames"] == 16 * 30
    assert stats["executions"] < stats["frames"] and stats["average_batch"] > 1.0, stats  # the batcher merged streams
    assert record["p99_ms"] >= record["p50_ms"] > 0


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_resize_policy_travels_with_the_request(served, scheme: str) -> None:
    ports, model = served
    image = frames(1, seed=5)[0][:, :25]  # another aspect ratio than the model's 24x32: the policies differ
    for resize in ("stretch", "letterbox"):
        got = open_server(ports.endpoints()[scheme], resize=resize).infer(image[None])[0]
        want = Predictor(open_backend(str(model)), resize=resize)(image)
        assert np.array_equal(got, want), resize
    stretch = open_server(ports.endpoints()[scheme], resize="stretch").infer(image[None])[0]
    assert not np.array_equal(stretch, got)


def test_bench_cli_prints_the_servers_statistics(served, tmp_path: Path) -> None:
    ports, _ = served
    proc = run("scaseg-bench", ["--server", ports.endpoints()["http"], "--streams", "2", "--runs", "2", "--warmup", "0",
                                "-o", tmp_path / "b.json"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    head, row = proc.stdout.strip().splitlines()[-2:]
    assert head.split()[:3] == ["Streams", "Frames", "Frame"] and "Avg" in head
    assert row.split()[:3] == ["2", "4", "720x1280"]
    assert '"executions"' in (tmp_path / "b.json").read_text()


def test_bad_requests_are_one_sentence(served, tmp_path: Path) -> None:
    ports, _ = served
    for scheme in ("http", "grpc"):
        backend = open_server(ports.endpoints()[scheme])
        with pytest.raises(ScasegError, match="refused the request") as shape:
            backend.transport.infer(backend.model_name, np.zeros((1, 8, 8, 4), np.uint8), "letterbox")
        with pytest.raises(ScasegError, match="refused the request") as dtype:
            backend.transport.infer(backend.model_name, np.zeros((1, 8, 8, 3), np.float32), "letterbox")
        for err in (shape, dtype):
            assert "\n" not in str(err.value)
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), frames(1)[0])
    refused("scaseg-infer", [image, "--server", ports.endpoints()["http"], "--model-name", "nope"], tmp_path,
            expect="no ready model 'nope'")
    refused("scaseg-infer", [image, "--server", ports.endpoints()["grpc"], "--resize", "stretch", "--imgsz", "64"],
            tmp_path, expect="--imgsz cannot be combined with --server")


def test_ctrl_c_through_the_server_keeps_a_playable_video(served, tmp_path: Path) -> None:
    ports, _ = served
    make_video(tmp_path / "long.avi", 400)

    def writing() -> bool:
        return any(p.stat().st_size for p in tmp_path.glob(".long_seg.mp4.*"))

    _, line = interrupt("scaseg-infer", ["long.avi", "--server", ports.endpoints()["grpc"], "-q"], tmp_path, writing,
                        settle=0.05)
    assert "saved in" in line and "long_seg.mp4" in line
    cap = cv2.VideoCapture(str(tmp_path / "long_seg.mp4"))
    assert 0 < int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) < 400
    cap.release()
    assert not list(tmp_path.glob(".long_seg*"))


@pytest.mark.parametrize("scheme", ["http", "grpc"])
def test_server_not_running_is_one_sentence(tmp_path: Path, scheme: str) -> None:
    image = tmp_path / "a.png"
    cv2.imwrite(str(image), frames(1)[0])
    url = free_ports().endpoints()[scheme]
    refused("scaseg-infer", [image, "--server", url], tmp_path, expect="cannot reach the Triton server")
    refused("scaseg-bench", ["--server", url, "--streams", "2"], tmp_path, expect="cannot reach the Triton server")


@pytest.mark.slow
def test_server_killed_mid_video_then_restarted(tmp_path: Path, capsys, monkeypatch) -> None:
    model = tiny_model(tmp_path / "tiny.onnx")
    write_triton_repository(str(model), str(tmp_path / "repo"), backend="python")
    video = make_video(tmp_path / "clip.avi", 40)
    ports = free_ports()
    url = ports.endpoints()["http"]
    out = tmp_path / "out.mp4"
    with triton_server(tmp_path / "repo", ports) as server:
        real_infer, calls = ServerBackend.infer, []

        def infer_then_kill(self: ServerBackend, batch: np.ndarray) -> np.ndarray:
            calls.append(1)
            if len(calls) == 5:  # the server dies in the middle of the video
                server.process.kill()
                server.process.wait()
            return real_infer(self, batch)

        monkeypatch.setattr(ServerBackend, "infer", infer_then_kill)
        code, _, err = run_main(infer_cli.main, [video, "--server", url, "-o", out, "-q"], capsys, monkeypatch)
        monkeypatch.setattr(ServerBackend, "infer", real_infer)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("scaseg-infer: error: cannot reach the Triton server")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.avi", "repo", "tiny.onnx"]  # no half-written video
    with triton_server(tmp_path / "repo", ports):  # restarted on the same ports: a new client run works
        code, _, err = run_main(infer_cli.main, [video, "--server", url, "-o", out, "-q"], capsys, monkeypatch)
    assert code == 0, err
    assert cv2.VideoCapture(str(out)).get(cv2.CAP_PROP_FRAME_COUNT) == 40


def test_serve_refuses_a_model_that_fails_to_load_and_a_busy_port(tmp_path: Path) -> None:
    model = tiny_model(tmp_path / "tiny.onnx")
    write_triton_repository(str(model), str(tmp_path / "repo"), backend="python")
    (tmp_path / "repo" / "tiny" / "1" / "model.onnx").write_bytes(b"not an onnx model")
    ports = free_ports()
    args = ["--http-port", ports.http, "--grpc-port", ports.grpc, "--metrics-port", ports.metrics]
    cache = ["repo/tiny/1/__pycache__", f"repo/tiny/1/__pycache__/model.cpython-{sys.version_info[0]}{sys.version_info[1]}.pyc"]
    line = refused("scaseg-serve", [tmp_path / "repo", *args], tmp_path, timeout=60, allowed=cache)  # the stub's
    assert line.startswith("scaseg-serve: error: the Triton server stopped before it was ready: the model 'tiny' "
                           "failed to load: "), line
    assert "model.onnx" in line and "\\n" not in line, line  # the runtime's own reason, its first line
    with socket.socket() as busy:
        busy.bind(("0.0.0.0", ports.grpc))
        busy.listen()
        refused("scaseg-serve", [tmp_path / "repo", *args], tmp_path, expect=f"port {ports.grpc}", allowed=cache)
    refused("scaseg-serve", [tmp_path / "nothing"], tmp_path, expect="is not a folder")


def test_serve_without_the_server_names_the_extra(tmp_path: Path, capsys, monkeypatch) -> None:
    import importlib.util

    from scaseg.runtime import serve

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytriton" else real(name, *a))
    (tmp_path / "repo" / "m").mkdir(parents=True)
    (tmp_path / "repo" / "m" / "config.pbtxt").write_text("")
    code, _, err = run_main(serve.main, [tmp_path / "repo"], capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1 and "nvidia-pytriton" in err and ".[serve]" in err, err


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_serve_leaves_no_server_behind(tmp_path: Path, sig: int) -> None:
    model = tiny_model(tmp_path / "tiny.onnx")
    write_triton_repository(str(model), str(tmp_path / "repo"), backend="python")
    ports = free_ports()
    proc = subprocess.Popen(command("scaseg-serve", [tmp_path / "repo", "--http-port", ports.http, "--grpc-port",
                                                     ports.grpc, "--metrics-port", ports.metrics]),
                            cwd=tmp_path, stderr=subprocess.PIPE, text=True, env=env(), start_new_session=True)
    assert proc.stderr is not None
    first = proc.stderr.readline()
    assert first.startswith("scaseg-serve: ready: tiny"), first + proc.stderr.read()
    assert f"grpc://localhost:{ports.grpc}" in proc.stderr.readline()
    assert any("tritonserver" in p for p in session_processes(proc.pid))
    os.kill(proc.pid, sig)
    rest = proc.communicate(timeout=30)[1]
    assert proc.returncode == (143 if sig == signal.SIGTERM else -9)
    if sig == signal.SIGTERM:
        assert rest.strip() == "scaseg-serve: interrupted by SIGTERM; the server was stopped"
    assert session_processes(proc.pid, wait=15) == []  # the server (and its stubs) went with it
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # and its ports are free again
        try:
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as servers bind (TIME_WAIT is no owner)
                s.bind(("0.0.0.0", ports.http))
            break
        except OSError:
            time.sleep(0.2)
    else:
        pytest.fail(f"port {ports.http} still taken after the server stopped")
