"""`posttrain <command>`: one entry point for every recipe and tool.

Each command parses its own typed config (`posttrain COMMAND --help` prints every
option's documentation) and calls one plain function. User mistakes (bad data,
bad config, missing model) print one line naming what to fix and exit with 2,
never a traceback.
"""

from __future__ import annotations

import os
import sys

from posttrain.errors import ConfigError, Terminated, UserError, sigterm_raises

USAGE_HEAD = "usage: posttrain COMMAND [OPTIONS]   (posttrain COMMAND --help for every option; posttrain --version)"


def _register_sources() -> None:
    """Sources that layers above data/ read (`feedback:DB_URL#CAMPAIGN`, `reasoning_gym:NAME`; see data/load.py's
    register_source)."""
    import posttrain.feedback.source  # noqa: F401  registers feedback:; imports no SQLAlchemy until one is read
    import posttrain.rewards.gym  # noqa: F401  registers reasoning_gym:; imports reasoning_gym only when one is read


def _sft(argv: list[str]) -> int:
    """supervised fine-tuning on demonstrations (chat, prompt-completion or text)"""
    from posttrain.config_parse import parse_config
    from posttrain.recipes.sft import SFTConfig, train

    _register_sources()
    train(parse_config(SFTConfig, argv, prog="posttrain sft"), given=given_options(SFTConfig, argv))
    return 0


def _dpo(argv: list[str]) -> int:
    """preference optimization (DPO, IPO, SimPO) on prompt/chosen/rejected pairs"""
    from posttrain.config_parse import parse_config
    from posttrain.recipes.dpo import DPOConfig, train

    _register_sources()
    train(parse_config(DPOConfig, argv, prog="posttrain dpo"), given=given_options(DPOConfig, argv))
    return 0


def _grpo(argv: list[str]) -> int:
    """online RL on a checkable reward (GRPO: group-normalised advantages, clipped updates, optional KL)"""
    from posttrain.config_parse import parse_config
    from posttrain.recipes.grpo import GRPOConfig, train

    _register_sources()
    train(parse_config(GRPOConfig, argv, prog="posttrain grpo"), given=given_options(GRPOConfig, argv))
    return 0


def _ppo(argv: list[str]) -> int:
    """RLHF with PPO against a reward model: value model, GAE, clipped updates, a fixed or adaptive KL"""
    from posttrain.config_parse import parse_config
    from posttrain.recipes.ppo import PPOConfig, train

    _register_sources()
    train(parse_config(PPOConfig, argv, prog="posttrain ppo"), given=given_options(PPOConfig, argv))
    return 0


def _rloo(argv: list[str]) -> int:
    """online RL with the leave-one-out baseline (RLOO)"""
    from posttrain.config_parse import parse_config
    from posttrain.recipes.rloo import RLOOConfig, train

    _register_sources()
    train(parse_config(RLOOConfig, argv, prog="posttrain rloo"), given=given_options(RLOOConfig, argv))
    return 0


def _rm(argv: list[str]) -> int:
    """reward model (Bradley-Terry) on preference pairs and rankings"""
    from posttrain.config_parse import parse_config
    from posttrain.recipes.reward_model import RewardModelConfig, train

    _register_sources()
    train(parse_config(RewardModelConfig, argv, prog="posttrain rm"), given=given_options(RewardModelConfig, argv))
    return 0


def given_options(cls: type, argv: list[str]) -> set[str]:
    """The dotted fields (`optim.lr`) that `argv` sets, on the command line or in its `--config` file: what a
    resume checks against the run's saved config (training/rundir.py::resume_config)."""
    import dataclasses
    import typing

    from posttrain.config_parse import load_config_file

    def leaves(c: type, prefix: str = "") -> list[str]:
        hints = typing.get_type_hints(c)
        return [name for f in dataclasses.fields(c)
                for name in (leaves(hints[f.name], f"{prefix}{f.name}.") if dataclasses.is_dataclass(hints[f.name])
                             else [prefix + f.name])]

    def flat(d: dict, prefix: str = "") -> list[str]:
        # a file may spell keys as the options are (max-steps) or as the fields are (max_steps)
        return [n for key, v in d.items() for k in [str(key).replace("-", "_")]
                for n in (flat(v, f"{prefix}{k}.") if isinstance(v, dict) else [prefix + k])]

    known, given = set(leaves(cls)), set()
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            given |= set(flat(load_config_file(argv[i + 1])))
        elif arg.startswith("--"):
            key = arg[2:].split("=", 1)[0].replace("-", "_")
            head, dot, last = key.rpartition(".")
            negated = head + dot + last[3:] if last.startswith("no_") else None  # --run.no-progress
            given |= {k for k in (key, negated) if k in known}
    return given


def _models(argv: list[str]) -> int:
    """make the built-in tiny model, prepare SmolLM2, list known short names"""
    from posttrain.models.cli import main as models_main

    return models_main(argv)


def _generate(argv: list[str]) -> int:
    """sample completions for prompts with the built-in batched sampler"""
    from posttrain.config_parse import parse_config
    from posttrain.generate import GenerateConfig, generate

    _register_sources()
    generate(parse_config(GenerateConfig, argv, prog="posttrain generate"))
    return 0


def _score(argv: list[str]) -> int:
    """score a file's completions with a reward spec (reward and reason per row, a summary table)"""
    from posttrain.rewards.cli import main as score_main

    _register_sources()
    return score_main(argv)


def _eval(argv: list[str]) -> int:
    """models x tasks: accuracy, pass@k, win rates, Bradley-Terry ratings, each with a 95% interval"""
    from posttrain.config_parse import parse_config
    from posttrain.eval.suite import SuiteConfig, run_suite
    from posttrain.eval.tables import print_results

    _register_sources()
    print_results(run_suite(parse_config(SuiteConfig, argv, prog="posttrain eval")))
    return 0


def _report(argv: list[str]) -> int:
    """one self-contained HTML file: training curves, evaluation tables, responses side by side"""
    from posttrain.config_parse import parse_config
    from posttrain.eval.report import ReportConfig, report_command

    report_command(parse_config(ReportConfig, argv, prog="posttrain report"))
    return 0


def _demo(argv: list[str]) -> int:
    """run the whole loop on the built-in tiny model and arithmetic task"""
    from posttrain.config_parse import parse_config
    from posttrain.demo import DemoConfig, run_demo

    run_demo(parse_config(DemoConfig, argv, prog="posttrain demo"))
    return 0


def _data(argv: list[str]) -> int:
    """data tools: `data pairs` samples a policy and lets a simulated rater make preference pairs"""
    from posttrain import pairs

    _register_sources()
    actions = {"pairs": pairs.main}  # posttrain data ACTION [OPTIONS]
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: posttrain data {{{','.join(actions)}}} [OPTIONS]   (posttrain data ACTION --help for every option)")
        return 0
    if not argv or argv[0] not in actions:
        got = f"got {argv[0]!r}" if argv else "none given"
        raise UserError(f"expected an action, one of: {', '.join(actions)} ({got}); e.g. posttrain data pairs --help")
    return actions[argv[0]](argv[1:])


def _feedback(argv: list[str]) -> int:
    """the human-feedback web app: `feedback init|serve|import|generate|export|stats`"""
    from posttrain.feedback.cli import main as feedback_main

    return feedback_main(argv)


def config_classes() -> dict[str, type]:
    """The config each command parses (its sub-configs nested in it), in the order docs/config.md lists them."""
    from posttrain.demo import DemoConfig
    from posttrain.eval.report import ReportConfig
    from posttrain.eval.suite import SuiteConfig
    from posttrain.feedback.cli import ACTIONS as FEEDBACK
    from posttrain.generate import GenerateConfig
    from posttrain.pairs import PairsConfig
    from posttrain.recipes.dpo import DPOConfig
    from posttrain.recipes.grpo import GRPOConfig
    from posttrain.recipes.ppo import PPOConfig
    from posttrain.recipes.reward_model import RewardModelConfig
    from posttrain.recipes.rloo import RLOOConfig
    from posttrain.recipes.sft import SFTConfig
    from posttrain.rewards.cli import ScoreConfig

    return {"posttrain sft": SFTConfig, "posttrain rm": RewardModelConfig, "posttrain dpo": DPOConfig,
            "posttrain grpo": GRPOConfig, "posttrain rloo": RLOOConfig, "posttrain ppo": PPOConfig,
            "posttrain generate": GenerateConfig, "posttrain eval": SuiteConfig, "posttrain data pairs": PairsConfig,
            "posttrain score": ScoreConfig, "posttrain report": ReportConfig, "posttrain demo": DemoConfig,
            **{f"posttrain feedback {action}": cls for action, (cls, _) in FEEDBACK.items()}}


def config_reference() -> str:
    """docs/config.md (`make docs` writes it): every option of every command, with that command's defaults, from
    the field docstrings."""
    from posttrain.config_parse import reference_markdown

    return reference_markdown(config_classes())


COMMANDS = {  # posttrain --help lists them in this order, each with its function's docstring
    "demo": _demo,
    "sft": _sft,
    "dpo": _dpo,
    "grpo": _grpo,
    "rloo": _rloo,
    "ppo": _ppo,
    "rm": _rm,
    "eval": _eval,
    "report": _report,
    "generate": _generate,
    "score": _score,
    "models": _models,
    "data": _data,
    "feedback": _feedback,
}


def usage() -> str:
    """posttrain --help: every command of COMMANDS with the first line of its function's docstring."""
    width = max(map(len, COMMANDS)) + 2
    rows = [f"  {name:<{width}} {(run.__doc__ or '').strip()}" for name, run in COMMANDS.items()]
    return "\n".join([USAGE_HEAD, "", "commands:", *rows]) + "\n"


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # the reader went away (`posttrain sft --help | head`): stop quietly, as `cat` does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # and no second error at exit's flush
        return 141  # 128 + SIGPIPE, a shell's status for a writer whose pipe closed


def _main(argv: list[str] | None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage())
        return 0
    if "--version" in argv:
        from posttrain import __version__

        print(f"posttrain {__version__}")
        return 0
    cmd, rest = argv[0], argv[1:]
    if cmd not in COMMANDS:
        print(f"posttrain: unknown command {cmd!r}\n\n{usage()}", file=sys.stderr)
        return 2
    try:
        with sigterm_raises():  # `kill`, a scheduler's preemption: answered as a Ctrl-C is, exit status 143
            return COMMANDS[cmd](rest)
    except UserError as e:
        rank = os.environ.get("RANK", "0") if int(os.environ.get("WORLD_SIZE", "1")) > 1 else "0"
        if rank == "0":
            print(f"posttrain {cmd}: error: {e}", file=sys.stderr)
        elif not isinstance(e, ConfigError):  # an option's check fails alike on every process: rank 0 says it
            print(f"posttrain {cmd} (rank {rank}): error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:  # under torchrun, Ctrl-C (and a job's SIGTERM) reaches every process: rank 0 says it
        if os.environ.get("RANK", "0") == "0" or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
            print(f"posttrain {cmd}: {'terminated (SIGTERM)' if isinstance(e, Terminated) else 'interrupted'}",
                  file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130  # 128 + the signal's number, as a shell reports it


if __name__ == "__main__":
    sys.exit(main())
