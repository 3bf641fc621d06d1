"""The quick tier: a plain `pytest` leaves the tests marked slow out (pyproject's addopts); `-m ""` runs them too."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _collected(folder: Path, *args: str) -> list[str]:
    """Test ids pytest collects in ``folder`` under the project's configuration, plus ``args``."""
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ROOT / "pyproject.toml"), "--rootdir", str(folder), "-n", "0",
         "-p", "no:cacheprovider", "--collect-only", "-q", *args, str(folder)],
        cwd=folder, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return sorted(line.split("::")[-1] for line in done.stdout.splitlines() if "::" in line)


def test_a_plain_run_leaves_the_slow_tests_out_and_an_empty_mark_expression_runs_them(tmp_path: Path) -> None:
    (tmp_path / "test_tiers.py").write_text(
        "import pytest\n\n"
        "def test_quick():\n    pass\n\n"
        "@pytest.mark.slow\ndef test_long():\n    pass\n\n"
        "@pytest.mark.slow\ndef test_longer():\n    pass\n\n"
        "@pytest.mark.gpu\ndef test_on_a_gpu():\n    pass\n")
    assert _collected(tmp_path) == ["test_on_a_gpu", "test_quick"]
    assert _collected(tmp_path, "-m", "") == ["test_long", "test_longer", "test_on_a_gpu", "test_quick"]
    assert _collected(tmp_path, "-m", "slow") == ["test_long", "test_longer"]
