"""scaseg.readme: the generated sections of README.md and docs/."""
from __future__ import annotations

import pytest

from scaseg.errors import ScasegError
from scaseg.readme import replace_section


def test_replace_section_swaps_only_the_marked_text(tmp_path):
    doc = tmp_path / "README.md"
    doc.write_text("head\n<!-- t:start -->\nold\n<!-- t:end -->\ntail\n")
    replace_section(doc, "t", "new 1\nnew 2\n")
    assert doc.read_text() == "head\n<!-- t:start -->\nnew 1\nnew 2\n<!-- t:end -->\ntail\n"
    with pytest.raises(ScasegError, match="no '<!-- other:start -->'"):
        replace_section(doc, "other", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["README.md"]
