"""The generated config reference is the same text `--help` prints, and it is up to date."""

from pathlib import Path

from posttrain.config import _all_config_classes, reference_markdown

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_regenerated():
    expected = reference_markdown(_all_config_classes()) + "\n"
    assert (ROOT / "docs" / "config.md").read_text() == expected, "run `make docs` to regenerate docs/config.md"


def test_every_algorithm_page_has_the_standard_sections():
    for page in (ROOT / "docs" / "algorithms").glob("*.md"):
        text = page.read_text()
        for section in ("## Overview", "## Usage", "## Math", "## Logged metrics", "## Implementation details",
                        "## Expected results"):
            assert section in text, f"{page.name} lacks {section}"
        assert "PLACEHOLDER" not in text, f"{page.name} still has a placeholder"
