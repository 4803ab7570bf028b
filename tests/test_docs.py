"""The generated config reference is the same text `--help` prints, and it is up to date."""

import re
from pathlib import Path

from posttrain.cli import config_reference

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_regenerated():
    expected = config_reference() + "\n"
    assert (ROOT / "docs" / "config.md").read_text() == expected, "run `make docs` to regenerate docs/config.md"


def test_every_algorithm_page_has_the_standard_sections():
    for page in (ROOT / "docs" / "algorithms").glob("*.md"):
        text = page.read_text()
        for section in ("## Overview", "## Usage", "## Math", "## Logged metrics", "## Implementation details",
                        "## Expected results"):
            assert section in text, f"{page.name} lacks {section}"
        assert "PLACEHOLDER" not in text, f"{page.name} still has a placeholder"


def test_every_arxiv_id_cited_in_src_is_listed_in_papers_md():
    """docs/papers.md promises every arXiv id cited in src/, with where the code uses it."""
    root = Path(__file__).resolve().parents[1]
    cited = set()
    for path in (root / "src").rglob("*.py"):
        cited |= set(re.findall(r"arXiv:(\d{4}\.\d{4,5})", path.read_text()))
    papers = (root / "docs" / "papers.md").read_text()
    assert cited and not sorted(i for i in cited if f"[{i}]" not in papers)
