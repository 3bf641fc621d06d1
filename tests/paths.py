"""Where the tests find the repository: one home for paths, so a test module may live in any folder under tests/."""
from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
