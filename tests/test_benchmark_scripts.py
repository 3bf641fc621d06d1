"""Every script in benchmarks/ imports, and each one with a command line answers ``--help``: a figure in the docs can only be remade by a script that runs.

One child process runs them all (runpy, as ``python benchmarks/X.py --help`` would), so the shared imports are paid
once; each script's exit code and the start of its usage text come back as JSON.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

_RUN_ALL = r"""
import contextlib, io, json, os, runpy, sys
results = {}
sys.path.insert(0, os.path.dirname(os.path.abspath(sys.argv[1])))  # as `python benchmarks/X.py` does
for path in sys.argv[1:]:
    sys.argv = [path, "--help"]
    out, err = io.StringIO(), io.StringIO()
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            runpy.run_path(path, run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException as exc:
        code, err = 1, io.StringIO(f"{type(exc).__name__}: {exc}")
    results[path] = {"code": code, "out": out.getvalue()[:200], "err": err.getvalue()[-400:]}
print(json.dumps(results))
"""


def test_every_benchmark_script_answers_help() -> None:
    scripts = sorted(str(p) for p in BENCHMARKS.glob("*.py"))
    assert len(scripts) >= 10, scripts
    proc = subprocess.run([sys.executable, "-c", _RUN_ALL, *scripts], capture_output=True, text=True, timeout=600,
                          cwd=BENCHMARKS.parent)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    # Shared modules (perf_machine, perf_measure...) have no command line: they only have to import.
    is_script = {k: "__main__" in Path(k).read_text() for k in results}
    broken = {Path(k).name: v["err"] or v["out"] for k, v in results.items()
              if v["code"] != 0 or (is_script[k] and "usage" not in v["out"].lower())}
    assert not broken, broken
