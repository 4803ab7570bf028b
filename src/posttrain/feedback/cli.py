"""`posttrain feedback ACTION`: init (schema + first admin), serve, import, generate, export, stats, user, token."""

from __future__ import annotations

import getpass
import json
import os
import re
import sys
from dataclasses import dataclass, field
from typing import Annotated

import tyro

from posttrain.config import ModelConfig, SamplingParams, check
from posttrain.config_parse import parse_config
from posttrain.errors import ConfigError, DataError, UserError
from posttrain.extras import require


@dataclass
class InitConfig:
    """Create or upgrade the database schema, and create the first admin if the user does not exist."""

    db: str = "sqlite:///feedback.db"
    """Database URL: `sqlite:///feedback.db` (default, WAL mode) or `postgresql://user@host/dbname` (psycopg 3)."""
    admin: str = "admin"
    """User name of the admin to create (skipped when it exists)."""
    password_env: str = "POSTTRAIN_ADMIN_PASSWORD"
    """Environment variable holding the admin's password; unset: asked for on the terminal."""


@dataclass
class ServeConfig:
    """Serve the feedback app (pages and JSON API) on a database `init` made; upgrades its schema first."""

    db: str = "sqlite:///feedback.db"
    """Database URL: `sqlite:///feedback.db` (default, WAL mode) or `postgresql://user@host/dbname` (psycopg 3)."""
    host: str = "127.0.0.1"
    """Address to listen on; behind a reverse proxy keep 127.0.0.1."""
    port: int = 8000
    """Port to listen on."""
    public_url: str | None = None
    """The address users open (e.g. `https://feedback.example.org`) when a reverse proxy sits in front: requests
    that change state must come from this origin. Unset: the address the request was sent to."""
    login_limit: int = 5
    """Failed logins allowed a minute per user name from one client address before 429; 4x that per user name
    from all addresses, 10x per address over all names (so one rater's typos do not lock out the others behind
    the same office address)."""
    upload_limit_mb: float = 20.0
    """The largest item file (MB) a manager may upload on the campaign upload page (`/manage/upload`)."""
    workers: int = 1
    """Server processes. Each has its own connections and caches; on SQLite they take turns at the write lock in
    the database (busy waits) instead of one process's queue, and the login limit counts per process. Try 2 on a
    2-core machine or with PostgreSQL; measure with bench/feedback.py --workers."""

    def __post_init__(self) -> None:
        check(1 <= self.port <= 65535, "port", "must be 1..65535", self.port)
        check(self.upload_limit_mb > 0, "upload_limit_mb", "must be > 0", self.upload_limit_mb)
        check(self.workers >= 1, "workers", "must be >= 1", self.workers)
        check(self.public_url is None or self.public_url.startswith(("http://", "https://")), "public_url",
              "must start with http:// or https://", self.public_url)


@dataclass
class ImportConfig:
    """Make a campaign from an item file (JSONL: prompt + responses, chosen/rejected, or completion + model)."""

    campaign: str
    """Name of the new campaign."""
    items: str
    """JSONL item file (see docs/feedback.md)."""
    db: str = "sqlite:///feedback.db"
    """Database URL: `sqlite:///feedback.db` (default, WAL mode) or `postgresql://user@host/dbname` (psycopg 3)."""
    task: str = "pairwise"
    """Task type: pairwise, ranking, rubric or correction."""
    overlap: int = 1
    """Independent judgments each item needs (k)."""
    guidelines: str | None = None
    """Markdown file shown to raters beside the task."""
    rubric: str | None = None
    """Rubric scales as JSON, e.g. `[{"name": "helpful", "min": 1, "max": 5}]` (rubric campaigns)."""
    lease_seconds: int = 900
    """How long a rater holds an item before it returns to the queue."""


@dataclass
class GenerateItemsConfig:
    """Sample one response per prompt from each model with the built-in sampler, and make a campaign of them."""

    campaign: str
    """Name of the new campaign."""
    model: tuple[str, ...]
    """Two or more models (run directories' `final/`, local HF directories, `tiny`, `smollm2`): `--model A
    --model B`, or `--model A B`."""
    prompts: str = "builtin:arithmetic/heldout"
    """Prompt source (anything `posttrain generate --prompts` reads)."""
    db: str = "sqlite:///feedback.db"
    """Database URL: `sqlite:///feedback.db` (default, WAL mode) or `postgresql://user@host/dbname` (psycopg 3)."""
    task: str = "pairwise"
    """Task type: pairwise, ranking, rubric or correction. Pairwise items show two models' answers; with more
    than two models each prompt compares the next pair of models in turn, every pair alike. The other types show
    every model's answer in each item."""
    overlap: int = 1
    """Independent judgments each item needs (k)."""
    limit: int | None = 50
    """Use only the first N prompts."""
    guidelines: str | None = None
    """Markdown file shown to raters beside the task."""
    rubric: str | None = None
    """Rubric scales as JSON, e.g. `[{"name": "helpful", "min": 1, "max": 5}]` (rubric campaigns)."""
    lease_seconds: int = 900
    """How long a rater holds an item before it returns to the queue."""
    labels: tuple[str, ...] = ()
    """The model versions' names in the campaign, its leaderboard and its exports, one per --model in order.
    Unset: a run's `final/` by its run's name (`runs/dpo/final` -> `dpo`), as `posttrain eval` labels them."""
    sampling: SamplingParams = field(default_factory=SamplingParams)
    device: str = "auto"
    """`auto`, `cpu`, `cuda` or `cuda:N`."""

    def model_labels(self) -> list[str]:
        from posttrain.eval.suite import model_label

        return list(self.labels) or [model_label(m) for m in dict.fromkeys(self.model)]

    def __post_init__(self) -> None:
        check(len(set(self.model)) >= 2 or self.task in ("rubric", "correction"), "model",
              "needs two or more different models to compare", self.model)
        check(not self.labels or len(self.labels) == len(set(self.model)), "labels",
              f"needs one label per model ({len(set(self.model))})", self.labels)
        labels = self.model_labels()
        check(len(set(labels)) == len(labels), "labels", "two models would have the same name; name them with "
              "--labels", tuple(labels))
        check(self.task != "rubric" or bool(self.rubric), "rubric",  # before the models sample, not after
              "a rubric campaign needs scales, e.g. '[{\"name\": \"helpful\", \"min\": 1, \"max\": 5}]'",
              self.rubric)


@dataclass
class ExportConfig:
    """Write a campaign's judgments as training records to JSONL: pairwise -> preference pairs (ties left out),
    ranking -> rankings, rubric -> ratings, correction -> prompt-completion records for SFT. Each row names its
    rater, the model versions, the campaign and the export id; raters excluded from exports are left out."""

    campaign: str
    """Campaign to export."""
    output: Annotated[str, tyro.conf.arg(aliases=("-o",))] = ""
    """JSONL file to write (`-o` for short; unset: CAMPAIGN.jsonl); `posttrain rm` / `posttrain dpo` (pairs,
    rankings) or `posttrain sft` (corrections) read it with --data.train."""
    db: str = "sqlite:///feedback.db"
    """Database URL: `sqlite:///feedback.db` (default, WAL mode) or `postgresql://user@host/dbname` (psycopg 3)."""
    ties: str | None = None
    """Also write a pairwise campaign's ties and "both bad" answers to this JSONL file (prompt, both responses,
    choice), for a Bradley-Terry fit; the trainers read no ties, so the pairs never hold them."""
    correction_pairs: str | None = None
    """Also write a correction campaign's corrected text > the response it corrects as preference pairs to this
    JSONL file (for `posttrain rm` / `posttrain dpo`); unchanged corrections give no pair."""

    def __post_init__(self) -> None:
        from posttrain.files import output_file_problem

        for name, path in (("output", self.output), ("ties", self.ties), ("correction_pairs", self.correction_pairs)):
            problem = output_file_problem(path) if path else None
            check(problem is None, name, problem or "", path)


@dataclass
class StatsConfig:
    """Agreement between raters, position bias and a leaderboard of the model versions in a campaign."""

    campaign: str
    """Campaign to analyse."""
    db: str = "sqlite:///feedback.db"
    """Database URL: `sqlite:///feedback.db` (default, WAL mode) or `postgresql://user@host/dbname` (psycopg 3)."""
    json: str | None = None
    """Also write the figures to this JSON file."""
    resamples: int = 1000
    """Bootstrap resamples (of items) for the leaderboard's intervals."""
    seed: int = 0
    """Seed of the bootstrap."""
    without_excluded: bool = False
    """Leave the raters an admin excluded from the campaign's exports out of every figure (the leaderboard of the
    judgments the exports train on); by default they are counted, and a note names them."""

    def __post_init__(self) -> None:
        check(self.resamples >= 10, "resamples", "must be >= 10", self.resamples)


@dataclass
class UserConfig:
    """Add user accounts from the command line, as an admin does on the /admin/users page: raters for a campaign,
    or a manager. All or nothing: a name that breaks a rule or is taken adds no one."""

    name: tuple[str, ...]
    """User names: `--name alice`, or several, `--name t1 t2 t3` (each then gets a new random password)."""
    role: str = "rater"
    """rater, manager or admin (docs/feedback.md, Roles)."""
    db: str = "sqlite:///feedback.db"
    """Database URL: `sqlite:///feedback.db` (default, WAL mode) or `postgresql://user@host/dbname` (psycopg 3)."""
    password_env: str = "POSTTRAIN_USER_PASSWORD"
    """Environment variable holding the password of a single user; unset (or several names): each user gets a
    random password, printed once on stdout as `NAME<tab>PASSWORD`."""
    reset_password: bool = False
    """Give existing users (of any role, the admin too) a new password instead of adding them, as above; their
    login sessions end. For a forgotten password: only whoever runs the server can do this."""


@dataclass
class TokenConfig:
    """Make an API token for a user (as the /tokens page does), for scripts and curl: printed once on stdout,
    stored only as its hash. Needs the database itself, so only whoever runs the server can make one this way."""

    user: str
    """The user the token acts as (an existing, active account)."""
    db: str = "sqlite:///feedback.db"
    """Database URL: `sqlite:///feedback.db` (default, WAL mode) or `postgresql://user@host/dbname` (psycopg 3)."""
    name: str = "cli"
    """A name for the token, shown on the user's /tokens page (where it can be revoked)."""


@dataclass
class CloseConfig:
    """Close a campaign: raters get no new task from it and it leaves their list; a task a rater holds can still
    be answered, and its judgments stay, export and count. `--reopen` opens it again. Audited."""

    campaign: str
    """Campaign to close (or reopen)."""
    db: str = "sqlite:///feedback.db"
    """Database URL: `sqlite:///feedback.db` (default, WAL mode) or `postgresql://user@host/dbname` (psycopg 3)."""
    reopen: bool = False
    """Reopen the campaign instead."""


def _need_extra() -> None:
    for module in ("fastapi", "sqlalchemy", "alembic", "argon2", "nh3"):
        require(module, "feedback", "posttrain feedback")


def _engine(url: str, *, must_exist: bool = False):  # noqa: ANN202
    from posttrain.feedback.source import open_database

    return open_database(url, must_exist=must_exist)


def _admin_password(cfg: InitConfig) -> str:
    password = os.environ.get(cfg.password_env)
    if password is None:
        if not sys.stdin.isatty():
            raise ConfigError(f"set {cfg.password_env} to the admin's password (no terminal to ask on)")
        password = getpass.getpass(f"password for {cfg.admin}: ")
    if len(password) < 8:
        raise ConfigError("the admin's password needs 8 characters or more")
    return password


def init(cfg: InitConfig) -> None:
    from sqlalchemy.orm import Session

    from posttrain.feedback import migrate
    from posttrain.feedback.accounts import add_user, check_username
    from posttrain.feedback.db import User
    from posttrain.feedback.source import sqlite_file

    path = sqlite_file(cfg.db)
    # a new SQLite file has no admin yet: check the name and the password first, so that a refused one leaves no
    # file behind
    password = _admin_password(cfg) if path is not None and not path.exists() else None
    check_username(cfg.admin)
    engine = _engine(cfg.db)
    was = engine.schema_was
    schema = ("created the schema" if was is None else "schema is up to date" if was == migrate.head()
              else f"upgraded the schema from revision {was}")
    with Session(engine) as s, s.begin():
        if s.query(User).filter_by(username=cfg.admin).first() is not None:
            print(f"{schema}; user {cfg.admin!r} exists, its password unchanged (a new one: posttrain feedback "
                  f"user --name {cfg.admin} --reset-password)", file=sys.stderr)
            return
        add_user(s, cfg.admin, password or _admin_password(cfg), "admin", None, "init")
    print(f"{schema}; created admin {cfg.admin!r}", file=sys.stderr)


def add_users(cfg: UserConfig) -> None:
    import secrets

    from sqlalchemy.orm import Session

    from posttrain.feedback.accounts import add_user, reset_password

    names = list(cfg.name)
    if len(set(names)) < len(names):
        raise ConfigError(f"--name: {', '.join(sorted({n for n in names if names.count(n) > 1}))} given twice")
    given = os.environ.get(cfg.password_env) if len(names) == 1 else None
    passwords = {n: given or secrets.token_urlsafe(12) for n in names}
    with Session(_engine(cfg.db, must_exist=True)) as s, s.begin():  # one transaction: all or no one
        for n in names:
            if cfg.reset_password:
                reset_password(s, n, passwords[n], "cli")
            else:
                add_user(s, n, passwords[n], cfg.role, None, "cli")
    if given is None:
        for n in names:
            print(f"{n}\t{passwords[n]}")
    handed = "" if given else "; hand each their password (printed once, above)"
    if cfg.reset_password:
        print(f"new password for {', '.join(names)} in {cfg.db}{handed}; their sessions ended", file=sys.stderr)
        return
    made = f"{len(names)} {cfg.role}{'s' if len(names) > 1 else ''}"
    print(f"added {made} to {cfg.db}{handed}; they log in at the app's /login", file=sys.stderr)


def _port_is_free(host: str, port: int) -> None:
    """A port another server holds is one line before anything starts (uvicorn would exit 3 with its own log)."""
    import socket

    try:
        with socket.create_server((host, port)):
            pass
    except OSError as e:
        why = os.strerror(e.errno) if e.errno else str(e)
        raise ConfigError(f"cannot listen on {host}:{port} ({why}); stop what holds it or pick another with --port") \
            from None


def serve(cfg: ServeConfig) -> None:
    import dataclasses

    import uvicorn

    from posttrain.feedback.app import SETTINGS_ENV, Settings, create_app
    from posttrain.feedback.source import public_url

    _port_is_free(cfg.host, cfg.port)
    _engine(cfg.db, must_exist=True).dispose()  # a typo in the path must not serve a new, empty app
    shown = cfg.public_url or f"http://{cfg.host}:{cfg.port}"
    print(f"posttrain feedback: serving {public_url(cfg.db)} at {shown} ({cfg.workers} worker"
          f"{'s' if cfg.workers > 1 else ''}); Ctrl-C stops", file=sys.stderr, flush=True)
    settings = Settings(db=cfg.db, public_url=cfg.public_url, login_limit=cfg.login_limit,
                        upload_limit_mb=cfg.upload_limit_mb, migrate=False)
    if cfg.workers == 1:
        uvicorn.run(create_app(settings), host=cfg.host, port=cfg.port, proxy_headers=True, log_level="warning")
        return
    os.environ[SETTINGS_ENV] = json.dumps(dataclasses.asdict(settings))  # the workers are new processes
    uvicorn.run("posttrain.feedback.app:app_from_env", factory=True, workers=cfg.workers, host=cfg.host,
                port=cfg.port, proxy_headers=True, log_level="warning")


def close_campaign(cfg: CloseConfig) -> None:
    from sqlalchemy.orm import Session

    from posttrain.feedback.campaigns import set_closed
    from posttrain.feedback.export import find_campaign

    with Session(_engine(cfg.db, must_exist=True)) as s, s.begin():
        campaign = find_campaign(s, cfg.campaign)
        set_closed(s, campaign, not cfg.reopen, None)
    print(f"campaign {cfg.campaign!r}: {'reopened' if cfg.reopen else 'closed: raters get no new task from it'}",
          file=sys.stderr)


def make_token(cfg: TokenConfig) -> None:
    from sqlalchemy.orm import Session

    from posttrain.feedback.db import ApiToken, Audit, User
    from posttrain.feedback.security import new_token, token_hash

    raw = new_token("pt_")
    with Session(_engine(cfg.db, must_exist=True)) as s, s.begin():
        user = s.query(User).filter_by(username=cfg.user).first()
        if user is None or not user.active:
            raise ConfigError(f"user {cfg.user!r}: {'no such user' if user is None else 'deactivated'} in "
                              f"{cfg.db}; an admin adds users on /admin/users")
        role = user.role
        s.add(ApiToken(user_id=user.id, name=cfg.name[:80], token_hash=token_hash(raw)))
        s.add(Audit(user_id=user.id, action="token.create", target=f"token:{cfg.name[:80]}", detail={"by": "cli"}))
    print(raw)
    print(f"API token {cfg.name!r} for {cfg.user!r} ({role}): send it as 'Authorization: Bearer TOKEN'; shown "
          "once, revoke it on /tokens", file=sys.stderr)


def _store(db: str, name: str, task: str, items: list[dict], overlap: int, guidelines: str, rubric: list,
           lease_seconds: int = 900) -> None:
    from sqlalchemy.orm import Session

    from posttrain.feedback.campaigns import create_campaign
    from posttrain.feedback.db import User
    from posttrain.feedback.source import public_url

    engine = _engine(db)
    with Session(engine) as s, s.begin():
        campaign_id = create_campaign(s, name, task, items, overlap=overlap, guidelines=guidelines, rubric=rubric,
                                      lease_seconds=lease_seconds).id
        users = s.query(User).count()
    # the id is what the API's routes take (/api/campaigns/ID/next)
    print(f"campaign {name!r} (id {campaign_id}): {len(items)} items, {task}, overlap {overlap}", file=sys.stderr)
    if engine.schema_was is None and not users:  # a new database: say so, in case the path was a typo
        print(f"created the database {public_url(db)}; it has no users yet: posttrain feedback init --db {db} "
              "makes the first admin", file=sys.stderr)


def parse_rubric(text: str | None) -> list:
    """`--rubric` of `import` and `generate`: the scales as a JSON list (checked with the campaign: tasks.py)."""
    try:
        rubric = json.loads(text) if text else []
    except json.JSONDecodeError as e:
        raise ConfigError(f"--rubric is not JSON ({e.msg})") from None
    if not isinstance(rubric, list) or not all(isinstance(s, dict) for s in rubric):
        raise ConfigError('--rubric must be a JSON list of scales, e.g. [{"name": "helpful", "min": 1, "max": 5}]')
    return rubric


def import_items(cfg: ImportConfig) -> None:
    from posttrain.feedback.campaigns import read_items, repeated_items, unnamed_items

    rubric = parse_rubric(cfg.rubric)
    guidelines = read_guidelines(cfg.guidelines)
    items = read_items(cfg.items)
    _store(cfg.db, cfg.campaign, cfg.task, items, cfg.overlap, guidelines, rubric, cfg.lease_seconds)
    unnamed = unnamed_items(items)
    if unnamed and cfg.task in ("pairwise", "ranking"):
        print(f"note: {unnamed} of {len(items)} items name no model for a response (models, chosen_model/"
              "rejected_model or model): they are judged and exported, but left out of the leaderboard",
              file=sys.stderr)
    repeats = repeated_items(items)
    if repeats:
        where, before = repeats[0]
        print(f"note: {len(repeats)} of {len(items)} items repeat an earlier one's prompt and responses ({where} = "
              f"{before}{', ...' if len(repeats) > 1 else ''}); each is judged on its own (--overlap sets how many "
              "raters judge an item)", file=sys.stderr)


def read_guidelines(path: str | None) -> str:
    """`--guidelines` of `import` and `generate`: the Markdown file's text, or a one-line error."""
    from pathlib import Path

    if not path:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"--guidelines {path}: cannot read it ({getattr(e, 'strerror', None) or e})") from None


def generate_items(cfg: GenerateItemsConfig) -> None:
    from posttrain.data.load import load_records
    from posttrain.data.records import Prompt
    from posttrain.feedback.campaigns import model_items
    from posttrain.feedback.tasks import AnswerError, check_campaign
    from posttrain.models.load import load_model, resolve_device
    from posttrain.sampling.sampler import ModelSampler, sample_messages

    rubric = parse_rubric(cfg.rubric)
    guidelines = read_guidelines(cfg.guidelines)  # a wrong path now, not after every model has sampled
    if cfg.task == "rubric":  # the scales' errors now, not after every model has sampled
        try:
            check_campaign("rubric", 1, rubric)
        except AnswerError as e:
            raise ConfigError(f"--rubric: {e}") from None
    records = load_records(cfg.prompts, accept=(Prompt,), limit=cfg.limit)
    answers = {}
    for name, label in zip(dict.fromkeys(cfg.model), cfg.model_labels()):
        model, tokenizer = load_model(ModelConfig(name=name), resolve_device(cfg.device))
        answers[label] = sample_messages(ModelSampler(model, tokenizer, progress=False), records, tokenizer, 1,
                                        cfg.sampling).texts
    items, identical = model_items([[m.to_dict() for m in r.prompt] for r in records], answers, cfg.task)
    if not items:
        raise DataError("every prompt got identical responses from the models; nothing to compare")
    how = "greedy" if cfg.sampling.temperature == 0 else f"sampled at temperature {cfg.sampling.temperature:g}"
    print(f"answers {how} (posttrain eval is greedy unless given --sampling.temperature; compare them at the same "
          "temperature)", file=sys.stderr)
    if identical:
        print(f"left out {identical} prompts whose responses were identical", file=sys.stderr)
    _store(cfg.db, cfg.campaign, cfg.task, items, cfg.overlap, guidelines, rubric, cfg.lease_seconds)


def export(cfg: ExportConfig) -> None:
    from posttrain.feedback.source import read_campaign
    from posttrain.files import replacing, write_jsonl

    exported = read_campaign(cfg.db, cfg.campaign)
    if cfg.ties is not None and exported.task_type != "pairwise":
        raise ConfigError(f"--ties: campaign {cfg.campaign!r} is a {exported.task_type} campaign; only pairwise "
                          "campaigns have ties")
    if cfg.correction_pairs is not None and exported.task_type != "correction":
        raise ConfigError(f"--correction-pairs: campaign {cfg.campaign!r} is a {exported.task_type} campaign, "
                          "not a correction campaign")
    output = cfg.output or re.sub(r"[^\w.-]", "_", cfg.campaign) + ".jsonl"
    replaced = replacing(output)
    write_jsonl(exported.rows, output)
    left, excluded = exported.left_out(), exported.excluded()
    print(f"export {exported.export_id}: wrote {len(exported.rows)} records of {exported.judgments} judgments to "
          f"{output}{replaced}" + (f" (left out: {left})" if left else "") + (f"; {excluded}" if excluded else ""),
          file=sys.stderr)
    for path, rows, what in ((cfg.ties, exported.ties, "ties"),
                             (cfg.correction_pairs, exported.correction_pairs, "correction pairs")):
        if path is not None:
            replaced = replacing(path)
            write_jsonl(rows, path)
            print(f"wrote {len(rows)} {what if len(rows) != 1 else what[:-1]} to {path}{replaced}", file=sys.stderr)


def stats(cfg: StatsConfig) -> None:
    from rich.console import Console
    from sqlalchemy.orm import Session

    from posttrain.feedback.analysis import campaign_stats, print_stats
    from posttrain.files import write_json_atomic

    with Session(_engine(cfg.db, must_exist=True)) as s:
        result = campaign_stats(s, cfg.campaign, cfg.resamples, cfg.seed, cfg.without_excluded)
    print_stats(result, Console())
    if cfg.json:
        write_json_atomic(cfg.json, result.to_dict())
        print(f"wrote the figures to {cfg.json}", file=sys.stderr)


def merge_repeated(argv: list[str], option: str) -> list[str]:
    """`--model a --model b c` -> `--model a b c`, in the place of the first: a repeated option adds values
    (the parser alone would keep only the last one's); `--model=a` counts too. Other arguments keep their order."""
    values: list[str] = []
    out: list[str] = []
    first = None
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg == option or arg.startswith(option + "="):
            if first is None:
                first = len(out)
            if arg != option:
                values.append(arg.split("=", 1)[1])
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            continue
        out.append(arg)
        i += 1
    if first is None:
        return out
    return [*out[:first], option, *values, *out[first:]]


ACTIONS = {
    "init": (InitConfig, init),
    "serve": (ServeConfig, serve),
    "import": (ImportConfig, import_items),
    "generate": (GenerateItemsConfig, generate_items),
    "export": (ExportConfig, export),
    "stats": (StatsConfig, stats),
    "user": (UserConfig, add_users),
    "token": (TokenConfig, make_token),
    "close": (CloseConfig, close_campaign),
}


def main(argv: list[str]) -> int:
    if argv[:1] in (["-h"], ["--help"]) or not argv:
        print(f"usage: posttrain feedback {{{','.join(ACTIONS)}}} [OPTIONS]   "
              "(posttrain feedback ACTION --help for every option)")
        return 0 if argv else 2
    if argv[0] not in ACTIONS:
        raise UserError(f"unknown action {argv[0]!r}; expected one of: {', '.join(ACTIONS)}")
    cls, run = ACTIONS[argv[0]]
    rest = argv[1:]
    if argv[0] == "generate":
        rest = merge_repeated(rest, "--model")  # the issue's `--model runs/a/final --model runs/b/final`
    if argv[0] == "user":
        rest = merge_repeated(rest, "--name")
    cfg = parse_config(cls, rest, prog=f"posttrain feedback {argv[0]}")
    _need_extra()
    run(cfg)
    return 0
