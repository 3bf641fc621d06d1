"""scaseg-serve: run the pip-installed Triton Inference Server (nvidia-pytriton's ``tritonserver``) on a repository.

The server binary, its python backend and the python backend's stubs come from the ``nvidia-pytriton`` wheel
(``pip install ".[serve]"``; only its files are used, not its Python API). What the python backend needs is
prepared here, for this interpreter, in a temporary folder removed when the server stops:

- a backend folder whose ``python/`` holds the backend library, its ``triton_python_backend_utils.py`` and the
  stub built for this Python version (the wheel keeps one stub per version apart; the backend looks beside itself);
- ``LD_LIBRARY_PATH`` starting with this interpreter's own lib folder: the stub loads the ``libpython`` it finds
  first, and another build of the same version (a pyenv Python beside the system's) fails inside the stub;
- ``PATH`` and ``PYTHONPATH`` such that the stub's interpreter imports what this one imports (numpy, ONNX Runtime,
  scaseg): runtime/triton_model.py then runs the project's own runtime.

The server is this process's child and dies with it: stopped on Ctrl-C, SIGTERM or SIGHUP (scaseg/signals.py),
and, should this process be killed outright, by the kernel (``PR_SET_PDEATHSIG``).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import re
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

import typer

from scaseg.cli import make_app, quiet_option
from scaseg.errors import ScasegError, run_cli, version_option

app = make_app(__doc__)

SERVE_EXTRA = "serve"
SERVE_PATH_VARIABLE = "SCASEG_SERVE_PATH"
PYTRITON_VERSION = "0.7.0"  # the wheel whose server (Triton 2.51) was tried; .ci/run installs it
READY_TIMEOUT_S = 60.0
#: Seconds the server may take to finish requests in flight when asked to stop (Triton's default is 30).
EXIT_TIMEOUT_S = 5


@dataclass(frozen=True)
class TritonInstall:
    """Where the pip-installed server lies: the binary, the python backend and this Python version's stub."""

    binary: Path
    python_backend: Path
    stub: Path


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002

    def endpoints(self, host: str = "localhost") -> dict[str, str]:
        return {"http": f"http://{host}:{self.http}", "grpc": f"grpc://{host}:{self.grpc}",
                "metrics": f"http://{host}:{self.metrics}/metrics"}


def free_ports(host: str = "127.0.0.1") -> Ports:
    """Three ports no program listens on now (the kernel's picks), for a server of one's own (tests, benchmarks)."""
    socks = [socket.socket() for _ in range(3)]
    try:
        for sock in socks:
            sock.bind((host, 0))
        return Ports(*(sock.getsockname()[1] for sock in socks))
    finally:
        for sock in socks:
            sock.close()


def find_triton() -> TritonInstall:
    """The server files of the installed nvidia-pytriton wheel; one sentence naming the extra where they are missing."""
    spec = importlib.util.find_spec("pytriton")  # found, never imported: its Python API needs packages we do not
    install = (f"pip install \".[{SERVE_EXTRA}]\" in the scaseg checkout, then pip install --no-deps "
               f"\"nvidia-pytriton=={PYTRITON_VERSION}\" (Linux x86_64 or aarch64), or run Triton's container (docs/triton.md)")
    if spec is None or not spec.submodule_search_locations:
        raise ScasegError(f"scaseg-serve needs the Triton server of the nvidia-pytriton package, which is not "
                          f"installed: {install}")
    root = Path(list(spec.submodule_search_locations)[0]) / "tritonserver"
    version = f"{sys.version_info[0]}.{sys.version_info[1]}"
    found = TritonInstall(root / "bin" / "tritonserver", root / "backends" / "python",
                          root / "python_backend_stubs" / version / "triton_python_backend_stub")
    if not os.access(found.binary, os.X_OK):
        raise ScasegError(f"the nvidia-pytriton package has no runnable server at {found.binary}: {install}")
    if not (found.python_backend / "libtriton_python.so").is_file():
        raise ScasegError(f"the nvidia-pytriton package has no python backend in {found.python_backend}: {install}")
    if not found.stub.is_file():
        raise ScasegError(f"the nvidia-pytriton package has no python backend stub for Python {version}; "
                          "run scaseg-serve with Python 3.8 to 3.13")
    return found


def prepare_backends(install: TritonInstall, folder: Path) -> Path:
    """``folder/backends/python/`` with the backend, its utilities and this Python's stub (links); the backends folder."""
    python = folder / "backends" / "python"
    python.mkdir(parents=True)
    for source in (install.python_backend / "libtriton_python.so",
                   install.python_backend / "triton_python_backend_utils.py", install.stub):
        (python / source.name).symlink_to(source)
    return folder / "backends"


def server_environment(base: Optional[dict[str, str]] = None) -> dict[str, str]:
    """The environment the server and the python backend's stub run in (this interpreter's libpython and imports)."""
    env = dict(os.environ if base is None else base)
    libdir = sysconfig.get_config_var("LIBDIR")
    soname = sysconfig.get_config_var("INSTSONAME")
    libs = [str(Path(libdir))] if libdir and soname and (Path(libdir) / soname).is_file() else []
    # The wheel's own libraries (libtritonserver, libcudart) are found through the binaries' RPATH.
    env["LD_LIBRARY_PATH"] = os.pathsep.join(libs + [p for p in env.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p])
    # The stub's interpreter finds its prefix from the `python3` first on PATH: this one's, with its virtual env.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    # The stub ignores PYTHONPATH; the model.py scaseg-export writes puts SCASEG_SERVE_PATH first on sys.path,
    # so the stub imports this scaseg (a checkout on PYTHONPATH as much as an install).
    import scaseg

    env[SERVE_PATH_VARIABLE] = str(Path(scaseg.__file__).resolve().parent.parent)
    return env


def check_ports_free(ports: Ports) -> None:
    """One sentence for a port another program already listens on (before the server starts)."""
    if len({ports.http, ports.grpc, ports.metrics}) < 3:
        raise ScasegError(f"the HTTP, gRPC and metrics ports must differ, got {ports.http}, {ports.grpc}, {ports.metrics}")
    for label, port in (("HTTP", ports.http), ("gRPC", ports.grpc), ("metrics", ports.metrics)):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind(("0.0.0.0", port))
            except OSError:
                option = {"HTTP": "--http-port", "gRPC": "--grpc-port", "metrics": "--metrics-port"}[label]
                raise ScasegError(f"port {port} (the {label} endpoint) is already in use: stop what listens there "
                                  f"or pick another with {option}") from None


def _die_with_parent() -> None:
    """In the child before exec: the kernel sends SIGTERM when this process dies (Linux), so no server is orphaned."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    os.setpgrp()  # a terminal's Ctrl-C reaches this process only; it stops the server itself


def server_reason(log: str) -> str:
    """The server's own reason for failing, from its log: a model that did not load, a port it could not bind."""
    failed = re.findall(r"failed to load '([^']+)' version \d+: (.+?)\"?$", log, re.M)
    if failed:
        name, why = failed[0]
        why = why.split("\\n")[0]  # a Python traceback arrives as one line with escaped line breaks
        return f"the model {name!r} failed to load: {' '.join(why.split())}"
    for pattern in (r"(failed to start [A-Za-z]+ service.*?)\"?$", r"error: (creating server: .+)$",
                    r"(Unexpected argument.*|unrecognized option.*)$", r"E\d{4} [\d:.]+ +\d+ \S+\] \"?(.+?)\"?$"):
        found = re.findall(pattern, log, re.M)
        if found:
            return " ".join(found[0].split())
    lines = [line for line in log.splitlines() if line.strip()]
    return " ".join(lines[-1].split()) if lines else "it printed nothing"


def _ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "/v2/health/ready", timeout=1) as answer:
            return bool(answer.status == 200)
    except (urllib.error.URLError, OSError, ValueError):
        return False


@dataclass(frozen=True)
class RunningServer:
    """A started server: its process and its log (in the temporary folder that lives as long as it does)."""

    process: "subprocess.Popen[bytes]"
    log: Path

    def reason(self) -> str:
        return server_reason(self.log.read_text(errors="replace")) if self.log.is_file() else "no log"


#: tritonserver 2.51 sometimes aborts while starting with this line from its gRPC event engine: in 2 of about 7 full
#: parallel test-suite runs, never alone (about 60 starts: idle and loaded, two servers at once, restarts after a
#: SIGKILL). Its cause inside tritonserver was not found; a start that dies this way is tried once more.
TRANSIENT_START_CRASH = "encountered epoll_wait error: Bad file descriptor"
START_ATTEMPTS = 2


class _TransientStartCrash(ScasegError):
    """The server died while starting with TRANSIENT_START_CRASH in its log."""


@contextlib.contextmanager
def triton_server(repository: Path, ports: Ports, timeout_s: float = READY_TIMEOUT_S,
                  install: Optional[TritonInstall] = None) -> Iterator[RunningServer]:
    """Start the server on ``repository``, wait until it is ready, yield it; stop it when the block ends.

    One sentence (ScasegError) when it cannot start: a busy port, a model that failed to load (the server's
    reason), or no answer within ``timeout_s``. A start that dies with TRANSIENT_START_CRASH is tried once more.
    """
    install = install or find_triton()
    for attempt in range(1, START_ATTEMPTS + 1):
        check_ports_free(ports)
        with tempfile.TemporaryDirectory(prefix="scaseg-serve-") as tmp:
            log_path = Path(tmp) / "tritonserver.log"
            command = [str(install.binary), f"--model-repository={repository}",
                       f"--backend-directory={prepare_backends(install, Path(tmp))}",
                       f"--http-port={ports.http}", f"--grpc-port={ports.grpc}", f"--metrics-port={ports.metrics}",
                       f"--exit-timeout-secs={EXIT_TIMEOUT_S}", "--strict-readiness=true"]
            with open(log_path, "wb") as log:
                process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           env=server_environment(), preexec_fn=_die_with_parent)
            try:
                _wait_ready(process, ports, log_path, timeout_s)
            except BaseException as exc:
                stop_server(process)
                if isinstance(exc, _TransientStartCrash) and attempt < START_ATTEMPTS:
                    continue
                raise
            try:
                yield RunningServer(process, log_path)
            finally:
                stop_server(process)
            return


def _wait_ready(process: "subprocess.Popen[bytes]", ports: Ports, log_path: Path, timeout_s: float) -> None:
    """Until the server answers ready. A server that has exited is never ready, whatever answers on its port (a port
    picked by free_ports can be picked again by another program, e.g. a test's server in another worker), so the
    process is checked before and after each readiness question."""
    url = ports.endpoints()["http"]
    deadline = time.monotonic() + timeout_s
    while True:
        ready = process.poll() is None and _ready(url)
        if process.poll() is not None:
            log = log_path.read_text(errors="replace")
            error = _TransientStartCrash if TRANSIENT_START_CRASH in log else ScasegError
            raise error(f"the Triton server stopped before it was ready: {server_reason(log)}")
        if ready:
            return
        if time.monotonic() > deadline:
            raise ScasegError(f"the Triton server was not ready after {timeout_s:.0f} s: "
                              f"{server_reason(log_path.read_text(errors='replace'))}")
        time.sleep(0.1)


def stop_server(process: "subprocess.Popen[bytes]") -> None:
    """SIGTERM (Triton finishes the requests in flight), then SIGKILL if it is still there after the exit timeout."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=EXIT_TIMEOUT_S + 5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()



@dataclass(frozen=True)
class ServeRequest:
    """What scaseg-serve was asked, checked once at its edge."""

    repository: Path
    models: tuple[str, ...]
    ports: Ports
    timeout_s: float
    quiet: bool


def _check_repository(repository: Path) -> tuple[str, ...]:
    """The model names of a Triton repository (folders holding config.pbtxt); one sentence when it has none."""
    if not repository.is_dir():
        raise ScasegError(f"the model repository {repository} is not a folder (write one with scaseg-export "
                          "--format triton)")
    models = tuple(sorted(p.name for p in repository.iterdir() if (p / "config.pbtxt").is_file()))
    if not models:
        raise ScasegError(f"{repository} holds no model (no <name>/config.pbtxt): write one with scaseg-export "
                          "--format triton --triton-backend python")
    return models


def _port(option: str, default: int) -> int:
    return typer.Option(default, option, min=1, max=65535, help=f"Port of the server's {option[2:-5]} endpoint.")


@app.command()
def serve(
    repository: Path = typer.Argument(..., metavar="REPO", help="A Triton model repository (as scaseg-export writes one)."),
    http_port: int = _port("--http-port", 8000),
    grpc_port: int = _port("--grpc-port", 8001),
    metrics_port: int = _port("--metrics-port", 8002),
    timeout: float = typer.Option(READY_TIMEOUT_S, "--timeout", min=1.0, help="Seconds to wait for the server (and its models) to be ready."),
    quiet: bool = quiet_option(),
    version: bool = version_option("scaseg-serve"),
) -> None:
    """Serve REPO with the pip-installed Triton Inference Server until Ctrl-C; prints the endpoints once ready."""
    repo = repository.expanduser().resolve()
    request = ServeRequest(repo, _check_repository(repo), Ports(http_port, grpc_port, metrics_port), timeout, quiet)
    with triton_server(request.repository, request.ports, request.timeout_s) as server:
        ends = request.ports.endpoints()
        print(f"scaseg-serve: ready: {', '.join(request.models)} from {request.repository}", file=sys.stderr)
        print(f"scaseg-serve: HTTP {ends['http']}  gRPC {ends['grpc']}  metrics {ends['metrics']}  (Ctrl-C stops)",
              file=sys.stderr, flush=True)
        code = server.process.wait()
        raise ScasegError(f"the Triton server stopped on its own (exit code {code}): {server.reason()}")


def main() -> None:
    """Console entry point ``scaseg-serve``."""
    run_cli(app, prog="scaseg-serve", interrupted="; the server was stopped")


if __name__ == "__main__":
    main()
