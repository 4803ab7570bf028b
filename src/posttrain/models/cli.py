"""`posttrain models ACTION`: write the tiny model, prepare SmolLM2, list the built-in short names."""

from __future__ import annotations

import argparse
from pathlib import Path

from posttrain.errors import ModelError
from posttrain.models.tiny import SIZES


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="posttrain models", description=__doc__)
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    init = actions.add_parser("init-tiny", help="write the built-in tiny random-init model to a directory")
    init.add_argument("--out", "--output", "-o", dest="out", required=True, type=Path,
                      help="directory to create (must not exist or be empty)")
    init.add_argument("--size", choices=list(SIZES), default="tiny", help="width and depth (default: %(default)s)")
    init.add_argument("--seed", type=int, default=0, help="seed of the random init (default: %(default)s)")
    prepare = actions.add_parser("prepare", help="build or convert a model once into the cache; print its path")
    prepare.add_argument("name", help="a built-in name (see `posttrain models list`), a .gguf file or a hub id")
    actions.add_parser("list", help="print the built-in short names and whether each is ready (made already) or made on first use")
    return parser


def init_tiny(out: Path, size: str, seed: int) -> Path:
    """Write a tiny model to `out`, refusing to mix it into a non-empty directory."""
    from posttrain.files import write_dir_atomic
    from posttrain.models.load import quiet_transformers
    from posttrain.models.tiny import build_tiny

    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ModelError(
            f"--out {str(out)!r} already exists and is not an empty directory; choose another or remove it"
        )
    quiet_transformers()  # no "Writing model shards" bar for a one-file save
    return write_dir_atomic(out, lambda tmp: build_tiny(tmp, size, seed))


def prepare(name: str) -> tuple[Path, int]:
    """Resolve `name` into the cache and return (directory, parameter count)."""
    from posttrain.config import ModelConfig
    from posttrain.models.load import count_parameters, load_model, resolve_model_dir

    path = resolve_model_dir(name)
    model, _ = load_model(ModelConfig(name=str(path)))
    return path, count_parameters(model)[1]


def main(argv: list[str]) -> int:
    try:
        args = _parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error (2): argparse has already printed why
        return int(e.code or 0)
    if args.action == "init-tiny":
        path = init_tiny(args.out, args.size, args.seed)
        print(f"{path}\nuse it with --model.name {path}")
    elif args.action == "prepare":
        path, n_params = prepare(args.name)
        print(f"{path}\n{n_params:,} parameters; use it with --model.name {args.name}")
    else:
        from posttrain.models.load import known_models

        models = known_models()
        width = max(map(len, models))
        for name, (description, path) in models.items():
            cached = "ready" if (path / "config.json").is_file() else "first use"  # made on first use, offline
            print(f"{name:<{width}}  {cached:<9} {description}")
    return 0
