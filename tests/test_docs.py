"""The generated config reference is the same text `--help` prints, and it is up to date."""

import re
from pathlib import Path

from posttrain.cli import config_reference

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_regenerated():
    expected = config_reference() + "\n"
    assert (ROOT / "docs" / "config.md").read_text() == expected, (
        "run `make docs` to regenerate docs/config.md (in an environment of your own: PYTHONPATH=src python -c "
        "'from posttrain.cli import config_reference; print(config_reference())' > docs/config.md)")


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
    missing = sorted(i for i in cited if f"[{i}]" not in papers)
    assert cited and not missing, (f"add a row for arXiv {', '.join(missing)} to docs/papers.md (the paper, and "
                                   "where the code uses it), as the other rows are written")


def test_every_built_in_reward_is_in_the_table_of_rewards_md():
    """A reward registered in REWARDS or FACTORIES (rewards/functions.py) has its row in docs/rewards.md."""
    from posttrain.rewards.functions import FACTORIES, REWARDS

    table = (ROOT / "docs" / "rewards.md").read_text()
    rows = set(re.findall(r"^\| `([a-z_]+)", table, flags=re.M))
    missing = sorted((set(REWARDS) | set(FACTORIES)) - rows)
    assert not missing, f"docs/rewards.md's table of built-in rewards has no row for {', '.join(missing)}; add one"


def test_every_trainer_has_a_model_card_row_and_every_command_its_options_in_config_md():
    """What a new command must be registered in besides COMMANDS (cli.py, whose docstrings make posttrain
    --help's list), checked here so that none is found missing after a run: a command that parses a config of
    its own is in config_classes (its options in docs/config.md); a trainer (its config has `run: RunConfig`)
    has its model card's row in ALGORITHMS."""
    import typing

    from posttrain.cli import COMMANDS, config_classes
    from posttrain.config import RunConfig
    from posttrain.eval.document import ALGORITHMS

    configs = config_classes()
    trainers = {key.removeprefix("posttrain ") for key, cls in configs.items()
                if typing.get_type_hints(cls).get("run") is RunConfig}
    assert trainers >= {"sft", "rm", "dpo", "grpo", "rloo", "ppo"}, trainers
    missing = sorted(trainers - set(ALGORITHMS))
    assert not missing, f"add {', '.join(missing)} to ALGORITHMS in src/posttrain/eval/document.py (its model card)"
    with_actions = {"data", "models", "feedback"}  # their actions' configs are listed by action
    for name in set(COMMANDS) - with_actions:
        assert f"posttrain {name}" in configs, f"add posttrain {name}'s config to config_classes in cli.py"
