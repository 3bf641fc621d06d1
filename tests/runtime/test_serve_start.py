"""triton_server's start: a start that dies with tritonserver's transient gRPC crash is tried once more, any other
failure is not. A stand-in binary plays the server (no Triton needed): it crashes as tritonserver 2.51 did, or
answers /v2/health/ready."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

from scaseg.errors import ScasegError
from scaseg.runtime.serve import TRANSIENT_START_CRASH, TritonInstall, free_ports, triton_server

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")

FAKE = '''#!{python}
import os, sys
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

starts = Path(os.environ["FAKE_TRITON_STARTS"])
n = int(starts.read_text() or 0) + 1 if starts.exists() else 1
starts.write_text(str(n))
if n <= int(os.environ["FAKE_TRITON_CRASHES"]):
    print(os.environ["FAKE_TRITON_LINE"], flush=True)
    os.abort()
port = int(next(a for a in sys.argv if a.startswith("--http-port=")).split("=")[1])


class Ready(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


HTTPServer(("127.0.0.1", port), Ready).serve_forever()
'''


def _fake(tmp_path: Path, monkeypatch, crashes: int, line: str) -> TritonInstall:
    binary = tmp_path / "tritonserver"
    binary.write_text(FAKE.format(python=sys.executable))
    binary.chmod(0o755)
    monkeypatch.setenv("FAKE_TRITON_STARTS", str(tmp_path / "starts"))
    monkeypatch.setenv("FAKE_TRITON_CRASHES", str(crashes))
    monkeypatch.setenv("FAKE_TRITON_LINE", line)
    return TritonInstall(binary, tmp_path / "python_backend", tmp_path / "stub")


GRPC_CRASH = f"E1207 18:02:11.000 123 ev_epoll1_linux.cc:125] (event_engine) Epoll1Poller:0x55 {TRANSIENT_START_CRASH}"


def test_a_start_that_dies_with_the_grpc_crash_is_tried_once_more(tmp_path: Path, monkeypatch) -> None:
    install = _fake(tmp_path, monkeypatch, crashes=1, line=GRPC_CRASH)
    with triton_server(tmp_path, free_ports(), timeout_s=20, install=install) as server:
        assert server.process.poll() is None
    assert (tmp_path / "starts").read_text() == "2"


def test_the_grpc_crash_twice_in_a_row_is_one_sentence(tmp_path: Path, monkeypatch) -> None:
    install = _fake(tmp_path, monkeypatch, crashes=2, line=GRPC_CRASH)
    with pytest.raises(ScasegError, match="stopped before it was ready: .*epoll_wait error"):
        with triton_server(tmp_path, free_ports(), timeout_s=20, install=install):
            pass
    assert (tmp_path / "starts").read_text() == "2"


def test_any_other_crash_while_starting_is_not_retried(tmp_path: Path, monkeypatch) -> None:
    install = _fake(tmp_path, monkeypatch, crashes=1, line="error: creating server: Internal - failed to load all models")
    with pytest.raises(ScasegError, match="stopped before it was ready: creating server"):
        with triton_server(tmp_path, free_ports(), timeout_s=20, install=install):
            pass
    assert (tmp_path / "starts").read_text() == "1"


def test_a_server_that_exited_is_not_ready_whatever_answers_on_its_port(tmp_path: Path, monkeypatch) -> None:
    # A port picked by free_ports can be picked again by another program (another test worker's server): what
    # answers there must not make a dead server "ready" (a start that crashed was once taken for a running one).
    import subprocess

    from scaseg.runtime.serve import _ready, _wait_ready, stop_server

    ports = free_ports()
    binary = _fake(tmp_path, monkeypatch, crashes=0, line="").binary  # the stand-in, answering ready on ports.http
    foreign = subprocess.Popen([str(binary), f"--http-port={ports.http}"])
    try:
        while not _ready(ports.endpoints()["http"]):
            assert foreign.poll() is None
        log = tmp_path / "log"
        log.write_text("error: creating server: Internal - failed to load all models\n")
        exited = subprocess.Popen([sys.executable, "-c", "pass"])
        exited.wait()
        with pytest.raises(ScasegError, match="stopped before it was ready: creating server"):
            _wait_ready(exited, ports, log, timeout_s=5)
    finally:
        stop_server(foreign)
