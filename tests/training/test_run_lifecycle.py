"""Recipe tier: the run lifecycle seen from the command line, on the tiny model (`posttrain sft` in-process).

A default run ends with a checkpoint; Ctrl-C keeps the last completed step and prints the command that resumes
it; resuming restores the saved config and refuses options that contradict it; a run that cannot be resumed,
or is finished, is left as it is; every check runs before the run directory is made; TensorBoard keeps the
checkpoint step's point across a resume.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

import posttrain.recipes.sft as sft
from posttrain.cli import main
from posttrain.errors import sigterm_raises


def chats(path: Path, n: int = 24) -> Path:
    rows = [{"messages": [{"role": "user", "content": f"What is {i} + {i}?"},
                          {"role": "assistant", "content": str(2 * i)}]} for i in range(n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def flags(tmp: Path, name: str, *more: str) -> list[str]:
    """A 6-step run of 4 examples a step, every step logged."""
    return ["sft", "--data.train", str(chats(tmp / "chats.jsonl")), "--data.max-length", "64", "--optim.max-steps",
            "6", "--optim.batch-size", "4", "--optim.lr", "3e-3", "--optim.warmup-steps", "1", "--run.log-every", "1",
            "--run.output-dir", str(tmp / "runs"), "--run.name", name, "--run.no-progress", *more]


def weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run / "final" / "model.safetensors"))


def metrics(run: Path) -> list[dict]:
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("perf/", "time/"))} for r in rows]


def tree(path: Path) -> dict[str, bytes]:
    """Every file under `path` with its bytes: what "changes nothing" compares."""
    return {str(p.relative_to(path)): p.read_bytes() for p in sorted(path.rglob("*")) if p.is_file()}


def tensorboard_steps(run: Path, tag: str = "train/loss") -> list[int]:
    events = EventAccumulator(str(run / "tensorboard"))
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


def one_line(err: str) -> str:
    assert "Traceback" not in err, err
    assert len(err.splitlines()) == 1, err
    return err.strip()


@pytest.fixture
def interrupt_in_step(monkeypatch):
    """Raise KeyboardInterrupt, as Ctrl-C does, inside the forward pass of step `n` (1-based): the step's
    loss function is wrapped, one call per step at grad_accum 1."""
    def arm(n: int) -> None:
        calls = {"n": 0}
        real = sft.sft_step_loss

        def loss(model, batch):
            calls["n"] += 1
            if calls["n"] == n:
                raise KeyboardInterrupt
            return real(model, batch)

        monkeypatch.setattr(sft, "sft_step_loss", loss)
    return arm


def test_a_default_run_ends_with_a_checkpoint(tmp_path, tiny_dir):
    assert main(flags(tmp_path, "a")) == 0
    run = tmp_path / "runs" / "a"
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-6"]
    assert json.loads((run / "checkpoints" / "step-6" / "state.json").read_text())["total_steps"] == 6
    # the checkpoint writes are timed apart (benchmarks compare loops with trainers that save nothing)
    timing = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()][-1]
    assert 0 < timing["time/checkpoint_seconds"] < timing["time/train_seconds"]


def test_ctrl_c_keeps_the_last_step_and_the_printed_command_resumes_to_the_uninterrupted_run(
        tmp_path, tiny_dir, capsys, monkeypatch, interrupt_in_step):
    """Interrupted in step 4: step 3 is kept, and the printed command (--run.name and --run.resume, no other
    option: the saved config supplies them) ends at the weights and metrics of a run never interrupted, with
    config.json untouched and TensorBoard holding every step once, the checkpoint's step 3 included."""
    assert main(flags(tmp_path, "full")) == 0
    capsys.readouterr()
    interrupt_in_step(4)
    assert main(flags(tmp_path, "cut")) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    run = tmp_path / "runs" / "cut"
    # other libraries may print progress bars to stderr first (transformers' weight loading, when another test
    # turned its bars on): the two lines are read where they stand
    lines = [line for line in err.splitlines() if line.startswith(("interrupted in step", "resume with:"))]
    assert lines == [
        f"interrupted in step 4 of 6: step 3 is kept in {run / 'checkpoints' / 'step-3'}",
        f"resume with: posttrain sft --run.output-dir {tmp_path / 'runs'} --run.name cut --run.resume",
    ]
    assert not (run / "final").exists()
    monkeypatch.undo()
    config = (run / "config.json").read_bytes()

    command = shlex.split(lines[1].removeprefix("resume with: "))
    assert command[0] == "posttrain" and main(command[1:]) == 0
    full = tmp_path / "runs" / "full"
    for name, value in weights(full).items():
        assert torch.equal(value, weights(run)[name]), name
    assert metrics(run) == metrics(full)
    assert (run / "config.json").read_bytes() == config
    assert [r["from_step"] for r in json.loads((run / "lineage.json").read_text())["resumes"]] == [3]
    assert tensorboard_steps(run) == [1, 2, 3, 4, 5, 6]


@pytest.fixture
def sigint_in_update(monkeypatch):
    """Send this process SIGINT (a real Ctrl-C; or `sig`) `times` times from inside AdamW's update of step `n`."""
    def arm(n: int, times: int = 1, sig: int = signal.SIGINT) -> None:
        calls = {"n": 0}
        real = torch.optim.AdamW.step

        def step(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == n:
                for _ in range(times):
                    os.kill(os.getpid(), sig)  # handled before the next bytecode: inside the update
            return real(self, *args, **kwargs)

        monkeypatch.setattr(torch.optim.AdamW, "step", step)
    return arm


def test_ctrl_c_during_an_update_finishes_that_step_and_keeps_it(tmp_path, tiny_dir, capsys, monkeypatch,
                                                                  sigint_in_update):
    """A Ctrl-C inside step 4's update (most of a PPO step) waits for step 4 to end, which is kept and resumes to
    the uninterrupted run; a second Ctrl-C there stops at once and keeps step 3."""
    assert main(flags(tmp_path, "full")) == 0
    capsys.readouterr()
    sigint_in_update(4)
    assert main(flags(tmp_path, "held")) == 130
    err = capsys.readouterr().err
    run = tmp_path / "runs" / "held"
    assert "Ctrl-C: finishing step 4 so that it is kept (Ctrl-C again to stop now, with no checkpoint to keep)" in err
    assert f"interrupted in step 5 of 6: step 4 is kept in {run / 'checkpoints' / 'step-4'}" in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    monkeypatch.undo()
    assert main(flags(tmp_path, "held", "--run.resume")) == 0
    for name, value in weights(tmp_path / "runs" / "full").items():
        assert torch.equal(value, weights(run)[name]), name
    assert metrics(run) == metrics(tmp_path / "runs" / "full")

    sigint_in_update(4, times=2)
    assert main(flags(tmp_path, "now", "--run.save-every", "2")) == 130
    err = capsys.readouterr().err
    assert "(Ctrl-C again to stop now, keeping step 2, the last checkpoint)" in err
    assert "interrupted in step 4 of 6: step 2 is kept" in err
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_sigterm_is_answered_as_ctrl_c_with_exit_status_143(tmp_path, tiny_dir, capsys, monkeypatch,
                                                             sigint_in_update):
    """`kill` (a scheduler's preemption or time limit) inside step 4's update: step 4 is kept as a Ctrl-C keeps it
    and resumes to the uninterrupted run; SIGTERM has its default action again once the command returns."""
    assert main(flags(tmp_path, "full")) == 0
    capsys.readouterr()
    sigint_in_update(4, sig=signal.SIGTERM)
    assert main(flags(tmp_path, "killed")) == 143
    err = capsys.readouterr().err
    run = tmp_path / "runs" / "killed"
    assert "SIGTERM: finishing step 4 so that it is kept (SIGTERM again to stop now, with no checkpoint to keep)" in err
    assert f"interrupted in step 5 of 6: step 4 is kept in {run / 'checkpoints' / 'step-4'}" in err
    assert "posttrain sft: terminated (SIGTERM)" in err and "Traceback" not in err
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    monkeypatch.undo()
    assert main(flags(tmp_path, "killed", "--run.resume")) == 0
    for name, value in weights(tmp_path / "runs" / "full").items():
        assert torch.equal(value, weights(run)[name]), name


def test_a_process_forked_by_a_command_dies_of_sigterm_as_before():
    """Python's handlers are inherited by a fork (a data loader's worker): there SIGTERM ends the process, as its
    default action does, instead of raising in code that was never told of it."""
    with sigterm_raises():
        pid = os.fork()
        if pid == 0:  # the child
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(5)
            os._exit(0)
        _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGTERM


def test_ctrl_c_before_the_first_step_leaves_no_run_behind(tmp_path, tiny_dir, capsys, interrupt_in_step):
    interrupt_in_step(1)
    assert main(flags(tmp_path, "early")) == 130
    assert "before any step was complete" in capsys.readouterr().err
    assert not (tmp_path / "runs" / "early").exists()


def test_resume_refuses_a_contradicting_option_and_leaves_a_finished_run_as_it_is(tmp_path, tiny_dir, capsys):
    assert main(flags(tmp_path, "done")) == 0
    run = tmp_path / "runs" / "done"
    before = tree(run)
    capsys.readouterr()
    assert main(flags(tmp_path, "done", "--optim.lr", "0.01", "--run.resume")) == 2
    line = one_line(capsys.readouterr().err)
    assert "optim.lr=0.01 (saved: 0.003)" in line and "optim.max_steps" not in line
    # an option equal to the saved one, and one that leaves the numbers alone, are accepted
    assert main(flags(tmp_path, "done", "--run.save-every", "2", "--run.resume")) == 0
    assert "is finished" in one_line(capsys.readouterr().err)
    assert tree(run) == before


def test_resume_without_a_checkpoint_is_one_line_and_writes_nothing(tmp_path, tiny_dir, capsys):
    """A run that stopped before its first checkpoint (config.json, lineage.json, an empty metrics.jsonl), and a
    run that is not there at all."""
    run = tmp_path / "runs" / "crashed"
    (run / "checkpoints").mkdir(parents=True)
    for name, text in (("config.json", "{}"), ("lineage.json", "{}"), ("metrics.jsonl", "")):
        (run / name).write_text(text)
    before = tree(run)
    assert main(["sft", "--run.output-dir", str(tmp_path / "runs"), "--run.name", "crashed", "--run.resume"]) == 2
    line = one_line(capsys.readouterr().err)
    assert "nothing to resume" in line and "--run.overwrite" in line
    assert tree(run) == before and sorted(p.name for p in run.iterdir()) == sorted(["checkpoints", *before])
    assert main(["sft", "--run.output-dir", str(tmp_path / "runs"), "--run.name", "nowhere", "--run.resume"]) == 2
    assert "nothing to resume" in one_line(capsys.readouterr().err)
    assert not (tmp_path / "runs" / "nowhere").exists()


def test_overwrite_replaces_runs_only_and_never_a_folder_above_or_beside_the_run(tmp_path, tiny_dir, capsys):
    """--run.name .. --run.overwrite deleted the output folder's parent (every sibling of it), --run.name . the whole
    output folder (every other run), and --run.overwrite any folder of the user's that had the run's name."""
    runs = tmp_path / "runs"
    (runs / "precious").mkdir(parents=True)
    (runs / "precious" / "data.txt").write_text("keep")
    (tmp_path / "sibling.txt").write_text("keep")
    before = tree(tmp_path)
    for name in ("..", ".", "precious"):
        assert main(flags(tmp_path, name, "--run.overwrite")) == 2
        line = one_line(capsys.readouterr().err)
        assert ("must be a folder name" in line) if name != "precious" else ("is not a posttrain run" in line), line
    assert {k: v for k, v in tree(tmp_path).items() if k != "chats.jsonl"} == {
        k: v for k, v in before.items() if k != "chats.jsonl"}
    assert main(flags(tmp_path, "real")) == 0 and main(flags(tmp_path, "real", "--run.overwrite")) == 0  # a run: yes
    capsys.readouterr()


def test_overwrite_keeps_the_old_run_until_the_new_one_has_a_checkpoint(tmp_path, tiny_dir, capsys, monkeypatch,
                                                                       interrupt_in_step):
    """--run.overwrite deleted the old run before the new one had trained anything, so a new run stopped in its
    first steps (a Ctrl-C, a crash) lost the good one. Until the new run's first checkpoint the old one waits in
    .NAME.replaced and comes back when the new run stops without a checkpoint; a finished new run leaves none."""
    assert main(flags(tmp_path, "a")) == 0
    run, aside = tmp_path / "runs" / "a", tmp_path / "runs" / ".a.replaced"
    good = tree(run)
    capsys.readouterr()
    interrupt_in_step(1)
    assert main(flags(tmp_path, "a", "--run.overwrite")) == 130
    assert f"the run it replaced is back in {run}" in capsys.readouterr().err
    assert tree(run) == good and not aside.exists()
    monkeypatch.undo()

    real, calls = sft.sft_step_loss, {"n": 0}

    def crash_in_step_3(model, batch):  # a bug found in step 3, before any checkpoint (the default: at the end)
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("out of memory")
        return real(model, batch)

    monkeypatch.setattr(sft, "sft_step_loss", crash_in_step_3)
    with pytest.raises(RuntimeError, match="out of memory"):
        main(flags(tmp_path, "a", "--run.overwrite"))
    assert "stopped in step 3 of 6, with no checkpoint to resume from" in capsys.readouterr().err
    assert tree(run) == good and not aside.exists()
    monkeypatch.undo()

    aside.mkdir()  # as a new run killed outright before its first checkpoint leaves it
    (aside / "config.json").write_text("{}")
    (tmp_path / "runs" / "b" / "checkpoints").mkdir(parents=True)
    (tmp_path / "runs" / "b" / "config.json").write_text("{}")
    (tmp_path / "runs" / ".b.replaced").mkdir()
    assert main(flags(tmp_path, "b", "--run.resume")) == 2
    assert f"is kept in {tmp_path / 'runs' / '.b.replaced'}" in one_line(capsys.readouterr().err)
    assert main(flags(tmp_path, "a", "--run.overwrite")) == 0  # a new run that finishes replaces the old for good
    assert not aside.exists() and (run / "final").is_dir()
    capsys.readouterr()


def test_resume_from_an_earlier_checkpoint_trains_again_to_the_same_end(tmp_path, tiny_dir):
    """Checkpoints at steps 2, 4 and 6; resuming from step-2 drops step-4, step-6 and final/, retrains steps 3-6
    to the same weights, and TensorBoard has each step once (the point of step 2, the checkpoint's, kept)."""
    assert main(flags(tmp_path, "r", "--run.save-every", "2", "--run.keep-checkpoints", "3")) == 0
    run = tmp_path / "runs" / "r"
    first = weights(run)
    step2 = run / "checkpoints" / "step-2"
    assert main(["sft", "--run.output-dir", str(tmp_path / "runs"), "--run.name", "r", "--run.resume-from",
                 str(step2), "--run.no-progress"]) == 0
    for name, value in first.items():
        assert torch.equal(value, weights(run)[name]), name
    assert tensorboard_steps(run) == [1, 2, 3, 4, 5, 6]
    assert [r["from_step"] for r in json.loads((run / "lineage.json").read_text())["resumes"]] == [2]


def test_a_resume_may_log_less_often_and_drop_a_tracker_and_still_trains_the_same(tmp_path, tiny_dir):
    """--run.log-every and --run.trackers set what is written, not what is computed: a resume may change them
    (refused before), ends at the uninterrupted run's weights, logs at the new cadence, and records the change."""
    assert main(flags(tmp_path, "r", "--run.save-every", "3")) == 0
    run = tmp_path / "runs" / "r"
    first, logged = weights(run), metrics(run)
    assert main(["sft", "--run.output-dir", str(tmp_path / "runs"), "--run.name", "r", "--run.resume-from",
                 str(run / "checkpoints" / "step-3"), "--run.log-every", "2", "--run.trackers", "--run.no-progress"]) == 0
    for name, value in first.items():
        assert torch.equal(value, weights(run)[name]), name
    steps = [r["step"] for r in metrics(run) if "train/loss" in r]
    assert steps == [1, 2, 3, 4, 6]
    assert [r for r in metrics(run) if r["step"] in (4, 6)] == [r for r in logged if r["step"] in (4, 6)]
    assert json.loads((run / "lineage.json").read_text())["resumes"][0]["changed"] == {
        "run.log_every": 2, "run.trackers": []}


def test_a_resume_on_another_number_of_processes_is_refused_before_anything_loads(tmp_path, tiny_dir, capsys):
    """A newcomer resumed a 2-process run as 1 process: the global batch halved and the data position moved
    back without a word (1 -> 2 ended in 'cannot be read ... rng-1.pt' and advice to --run.overwrite). The number
    of processes that wrote the checkpoint is checked with the run directory now."""
    from posttrain.errors import ConfigError
    from posttrain.training.rundir import check_world_size

    assert main(flags(tmp_path, "w", "--run.save-every", "3")) == 0
    run = tmp_path / "runs" / "w"
    state = run / "checkpoints" / "step-6" / "state.json"
    saved = json.loads(state.read_text())
    state.write_text(json.dumps({**saved, "world_size": 2}))  # as torchrun --nproc-per-node 2 writes it
    shutil.rmtree(run / "final")
    before = tree(run)
    capsys.readouterr()
    assert main(flags(tmp_path, "w", "--run.resume")) == 2
    line = one_line(capsys.readouterr().err)
    assert "was written by 2 processes and this launch has 1" in line
    assert "resume with torchrun --nproc-per-node 2 -m posttrain" in line
    assert tree(run) == before
    state.write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match="written by 1 process and this launch has 2: .* posttrain ... .no torchrun."):
        check_world_size(state.parent, 2)


def test_resume_from_a_path_that_is_not_a_checkpoint_of_the_run_is_refused(tmp_path, tiny_dir, capsys):
    assert main(flags(tmp_path, "x")) == 0
    capsys.readouterr()
    assert main(["sft", "--run.output-dir", str(tmp_path / "runs"), "--run.name", "x", "--run.resume-from",
                 str(tmp_path)]) == 2
    line = one_line(capsys.readouterr().err)
    assert "not a checkpoint of" in line and "step-6" in line


MISSING = [t for t in ("wandb", "trackio") if importlib.util.find_spec(t) is None]


@pytest.mark.skipif(not MISSING, reason="every optional tracker is installed here")
@pytest.mark.parametrize("tracker", MISSING)
def test_a_missing_tracker_package_is_one_line_before_anything_is_written(tmp_path, tiny_dir, capsys, tracker):
    assert main(flags(tmp_path, "t", "--run.trackers", "tensorboard", tracker)) == 2
    line = one_line(capsys.readouterr().err)
    assert f"--run.trackers {tracker} needs {tracker}" in line and f"pip install 'posttrain[{tracker}]'" in line
    assert not (tmp_path / "runs").exists()


def test_a_data_error_shows_even_where_the_run_directory_exists(tmp_path, tiny_dir, capsys):
    (tmp_path / "runs" / "sft").mkdir(parents=True)
    (tmp_path / "runs" / "sft" / "config.json").write_text("{}")
    code = main(["sft", "--data.train", str(tmp_path / "missing.jsonl"), "--run.output-dir", str(tmp_path / "runs")])
    assert code == 2 and "missing.jsonl: no such file" in one_line(capsys.readouterr().err)


def test_trackio_gets_the_metrics_the_config_and_the_lineage(tmp_path, tiny_dir):
    """In a fresh process, so that trackio reads TRACKIO_DIR (a folder of this test) when it is imported."""
    code = f"""
import json, sys
from posttrain.cli import main
from posttrain.errors import sigterm_raises
assert main({flags(tmp_path, "tk", "--run.trackers", "trackio")!r}) == 0
from trackio.sqlite_storage import SQLiteStorage
print("RESULT", json.dumps({{"logs": SQLiteStorage.get_logs("posttrain", "tk"),
                  "config": SQLiteStorage.get_run_config("posttrain", "tk")}}))
"""
    env = {**os.environ, "TRACKIO_DIR": str(tmp_path / "trackio"), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("RESULT ")).removeprefix("RESULT "))
    assert [row["step"] for row in got["logs"] if "train/loss" in row] == [1, 2, 3, 4, 5, 6]
    assert got["config"]["config"]["optim"]["max_steps"] == 6
    assert got["config"]["lineage"]["base_model"]["name"] == "tiny"
    assert not (tmp_path / "runs" / "tk" / "tensorboard").exists()


def test_the_given_options_are_those_of_the_command_line_and_its_config_file(tmp_path):
    """What a resume checks against the saved config: `--x.y-z v`, `--x.y=v`, `--x.no-y`, and --config's keys."""
    from posttrain.cli import given_options
    from posttrain.recipes.sft import SFTConfig

    (tmp_path / "c.yaml").write_text("optim:\n  lr: 0.01\nrun:\n  name: a\n")
    argv = ["--config", str(tmp_path / "c.yaml"), "--optim.max-steps", "4", "--data.train=x.jsonl", "--run.no-progress",
            "--optim.betas", "0.9", "0.95"]
    assert given_options(SFTConfig, argv) == {"optim.lr", "run.name", "optim.max_steps", "data.train", "run.progress",
                                              "optim.betas"}


def test_resume_from_another_runs_checkpoint_names_that_run(tmp_path, tiny_dir, capsys):
    """--run.resume-from runs/k2/checkpoints/step-N without --run.name k2 said 'runs/sft: nothing to resume (no run
    there); drop --run.resume', an option the user had not given."""
    assert main(flags(tmp_path, "k2", "--run.save-every", "2", "--run.keep-checkpoints", "5")) == 0
    step = tmp_path / "runs" / "k2" / "checkpoints" / "step-2"
    assert step.is_dir()
    for name in ("sft", "k9"):
        assert main(flags(tmp_path, name, "--run.resume-from", str(step))) == 2
        line = one_line(capsys.readouterr().err)
        assert f"a checkpoint of {tmp_path / 'runs' / 'k2'}" in line and line.endswith(
            f"add --run.name k2 to resume {tmp_path / 'runs' / 'k2'} from it"), line
        assert not (tmp_path / "runs" / name).exists()


def test_a_damaged_checkpoint_or_config_is_one_line_naming_what_to_resume_from(tmp_path, tiny_dir, capsys):
    """A checkpoint damaged after it was written (a copy, a disk) and an unparsable config.json ended in
    safetensors' and json's tracebacks; nothing of the run may be deleted."""
    assert main(flags(tmp_path, "k4", "--run.save-every", "2", "--run.keep-checkpoints", "5")) == 0
    run = tmp_path / "runs" / "k4"
    shutil.rmtree(run / "final")  # an unfinished run, as after a kill
    last = run / "checkpoints" / "step-6"
    with open(last / "trainable.safetensors", "r+b") as f:
        f.truncate(100)
    before = tree(run)
    assert main(flags(tmp_path, "k4", "--run.resume")) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"posttrain sft: error: {last}: cannot be read (") and line.endswith(
        f"resume from an earlier one with --run.resume-from {run / 'checkpoints' / 'step-4'}"), line
    assert tree(run) == before
    (run / "config.json").write_text("{")
    assert main(flags(tmp_path, "k4", "--run.resume")) == 2
    assert f"{run / 'config.json'}: not JSON" in one_line(capsys.readouterr().err)


def test_report_refuses_to_write_over_a_file_that_is_not_html(tmp_path, tiny_dir, capsys):
    """posttrain report runs/y1 -o runs/y1/metrics.jsonl replaced the run's metrics (or its weights) with HTML."""
    assert main(flags(tmp_path, "y1")) == 0
    run = tmp_path / "runs" / "y1"
    for target in (run / "metrics.jsonl", run / "final" / "model.safetensors"):
        before = target.read_bytes()
        assert main(["report", str(run), "-o", str(target)]) == 2
        assert "exists and is not an HTML file" in one_line(capsys.readouterr().err)
        assert target.read_bytes() == before
    assert main(["report", str(run), "-o", str(run / "report.html")]) == 0  # a report over a report: yes


def test_an_output_dir_that_is_a_file_is_one_line_before_anything_loads(tmp_path, capsys):
    (tmp_path / "run.yaml").write_text("x: 1\n")
    args = flags(tmp_path, "x")
    args[args.index("--run.output-dir") + 1] = str(tmp_path / "run.yaml")
    assert main(args) == 2
    assert "run.yaml is a file, not a folder" in one_line(capsys.readouterr().err)
    assert (tmp_path / "run.yaml").read_text() == "x: 1\n"
