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
