"""One-process behaviour of the torchrun helpers (the multi-process paths: tests/recipes/*torchrun*, test_fsdp)."""

import torch

from posttrain.config import DistConfig
from posttrain.training.distributed import Dist, parallelize

ONE = Dist(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def test_one_process_trains_the_model_as_it_is_and_says_so_when_dist_options_were_set(capsys):
    model = torch.nn.Linear(2, 2)
    assert parallelize(model, ONE, DistConfig()) is model
    assert capsys.readouterr().err == ""
    assert parallelize(model, ONE, DistConfig(strategy="fsdp")) is model
    assert "--dist.strategy fsdp" in capsys.readouterr().err


def test_fsdp_only_options_are_refused_under_ddp_alike():
    """--dist.mixed-precision bf16 under ddp was refused while --dist.no-reshard-after-forward was accepted and
    ignored (newcomer trial); both are fsdp's."""
    import pytest

    from posttrain.errors import ConfigError

    for bad, field in ((dict(mixed_precision="bf16"), "mixed_precision"), (dict(reshard_after_forward=False),
                                                                              "reshard_after_forward")):
        with pytest.raises(ConfigError, match=f"dist.{field}=.*applies to --dist.strategy fsdp only"):
            DistConfig(**bad)
        DistConfig(strategy="fsdp", **bad)  # fine where it applies


def test_a_sharded_run_with_a_too_small_held_out_file_names_the_file():
    """The advice was 'hold out more (--data.eval-fraction)', which a --data.eval file ignores."""
    import pytest

    from posttrain.errors import ConfigError
    from posttrain.training.distributed import check_heldout

    two = Dist(rank=0, world_size=2, local_rank=0, device=torch.device("cpu"))
    with pytest.raises(ConfigError, match=r"1 example\(s\) for 2 processes: .*; add rows to eval1.jsonl, or use "
                                          r"--dist.strategy ddp"):
        check_heldout(1, two, DistConfig(strategy="fsdp"), source="eval1.jsonl")
    with pytest.raises(ConfigError, match=r"hold out more \(--data.eval-fraction\)"):
        check_heldout(1, two, DistConfig(strategy="fsdp"))
    check_heldout(2, two, DistConfig(strategy="fsdp"), source="eval1.jsonl")
