"""reasoning-gym (the `gym` extra): its generators as a data source and their own scorers as a reward.

    --data.train 'reasoning_gym:gsm_symbolic?size=2000&seed=0'     # rows made by the generator, deterministic
    --reward reasoning_gym                                         # scored by that generator's score_answer

A source `reasoning_gym:NAME?key=value&...` makes `reasoning_gym.create_dataset(NAME, **options)` (`size`,
`seed` and the generator's own options; values read as JSON when they parse, else as strings; `seed` is 0 unless
given, so a run is reproducible) and turns each entry into a Prompt record: the question as the prompt, plus the
reference fields `answer`, `metadata` (the entry's own) and `gym_config` (the name and options, so the reward
rebuilds the same generator: a few scorers read the generator's config).

The reward passes the completion's last `<answer>...</answer>` text (the whole stripped completion when it has
none) to `score_answer(answer, entry)`; scores lie in [0, 1] (partial credit where the generator gives it).

Registered with `data.load.register_source` on import, as `feedback:` is (data/ sits below rewards/); the
`posttrain` command imports this module before running any command. reasoning_gym itself (~2 s to import) is
imported only when a source is read or the reward is resolved.
"""

from __future__ import annotations

import difflib
import functools
import json
from typing import Any

from posttrain.data.load import Rows, SourceReader, parse_source_options, register_source
from posttrain.data.records import Prompt
from posttrain.errors import ConfigError, DataError
from posttrain.extras import require
from posttrain.rewards.functions import Verifier, reference_field
from posttrain.rewards.verifiers import answer_tag

PREFIX = "reasoning_gym:"
EXTRA = "gym"


def _gym(needed_for: str) -> Any:
    return require("reasoning_gym", EXTRA, needed_for)


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse(source: str) -> tuple[str, dict[str, Any]]:
    """`reasoning_gym:NAME?size=10&seed=3` -> ("NAME", {"size": 10, "seed": 3}), seed 0 unless given."""
    name, split, options = parse_source_options(source, PREFIX)
    if not name or split != "train":
        raise ConfigError(f"{source}: write a reasoning-gym source as reasoning_gym:NAME?size=N&seed=S, "
                          "e.g. reasoning_gym:gsm_symbolic?size=2000&seed=0 (a held-out set: another seed)")
    config = {key: _value(value) for key, value in options.items()}
    config.setdefault("seed", 0)
    return name, config


@functools.lru_cache(maxsize=64)
def _dataset(name: str, config_json: str, where: str) -> Any:
    gym = _gym(f"reading {where}")
    if name not in gym.factory.DATASETS:
        close = difflib.get_close_matches(name, gym.factory.DATASETS, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise ConfigError(f"{where}: reasoning-gym has no generator {name!r} ({hint}{len(gym.factory.DATASETS)} "
                          "known: python -c 'import reasoning_gym; print(sorted(reasoning_gym.factory.DATASETS))')")
    try:
        return gym.create_dataset(name, **json.loads(config_json))
    except (TypeError, ValueError, AssertionError) as e:  # an unknown option, or one the generator refuses
        raise ConfigError(f"{where}: reasoning-gym's {name} refuses these options: {e or type(e).__name__}") from None


def dataset(name: str, config: dict[str, Any], where: str) -> Any:
    """The generator `name` made with `config` (cached: the reward rebuilds it for every row it scores)."""
    return _dataset(name, json.dumps(config, sort_keys=True), where)


def _rows(source: str) -> Rows:
    name, config = parse(source)
    ds = dataset(name, config, source)
    for i in range(len(ds)):
        yield f"{source} row {i + 1}", functools.partial(_row, ds, i, name, config)  # counted from 1


def _row(ds: Any, i: int, name: str, config: dict[str, Any]) -> dict[str, Any]:
    entry = ds[i]
    return {"prompt": entry["question"], "answer": entry["answer"], "metadata": entry["metadata"],
            "gym_config": {"name": name, "options": config}}


def describe(source: str) -> dict[str, Any]:
    """The lineage entry: the generator, its options and reasoning-gym's version (the rows follow from them)."""
    name, config = parse(source)
    gym = _gym(f"reading {source}")
    return {"source": source, "sha256": None, "rows": len(dataset(name, config, source)),
            "reasoning_gym": {"name": name, "options": config, "version": getattr(gym, "__version__", None)}}


def explain_gym(prompt: Prompt, completion: str) -> tuple[float, str]:
    """The generator's `score_answer` on the completion's `<answer>` text (else the whole completion)."""
    metadata = reference_field(prompt, "metadata", "reasoning_gym")
    gym_config = prompt.reference.get("gym_config") or {}
    name = gym_config.get("name") or (metadata.get("source_dataset") if isinstance(metadata, dict) else None)
    if not name:
        raise DataError(f'prompt {prompt.text[:40]!r}: names no reasoning-gym generator (no "gym_config" field and '
                        'no metadata.source_dataset); read the rows from a reasoning_gym:NAME source')
    ds = dataset(name, gym_config.get("options") or {"seed": 0}, f"{PREFIX}{name}")
    entry = {"question": prompt.text, "answer": reference_field(prompt, "answer", "reasoning_gym"),
             "metadata": metadata}
    tagged = answer_tag(completion)
    answer = completion.strip() if tagged is None else tagged
    score = float(ds.score_answer(answer, entry))
    return score, f"{name}.score_answer({answer[:40]!r}) = {score:g}, expected {str(entry['answer'])[:40]!r}"


GYM_REWARD = Verifier("reasoning_gym", explain_gym, frozenset({"answer", "metadata"}))


def gym_reward() -> Verifier:
    """The `reasoning_gym` reward; MissingExtra (naming the `gym` extra) when reasoning-gym is not installed."""
    _gym("the reasoning_gym reward")
    return GYM_REWARD


register_source(PREFIX, SourceReader(_rows, describe))
