"""A trained reward model as a reward function: `reward(prompt_record, completion) -> float`, a `RewardFn`
(`rewards.functions`), the signature a verifier's reward and a user's `module:function` have too.

The completion is tokenized exactly as `posttrain rm` tokenized its training responses: the prompt
plus the completion as one assistant message through the model's chat template
(`data.tokenize.tokenize_completion`), and the reward is read at the last token (`models.heads`).

    reward = RewardFunction.load("runs/rm/final")
    reward(Prompt.from_dict({"prompt": "What is 2 + 3?"}), "#### 5")          # one float
    reward.score_batch(prompts, completions)                                  # batched by length
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from posttrain.data.collate import pad_batch
from posttrain.data.records import Message, Prompt
from posttrain.data.tokenize import Example, reward_input_ids
from posttrain.errors import ModelError
from posttrain.models.heads import MARKER_FILE, RewardModel, load_classifier
from posttrain.models.load import load_tokenizer, resolve_dtype, resolve_model_dir


@dataclass
class RewardFunction:
    """Scores (prompt, completion) pairs with a reward model; rewards are floats, higher is better.

    An instance is a `RewardFn`: `reward(prompt_record, completion) -> float`. The model's rewards are
    unbounded (not in [0, 1] as a verifier's are) and only their differences are meaningful (Bradley-Terry).
    """

    model: RewardModel
    tokenizer: Any
    batch_size: int = 32
    name: str = "rm"
    """What its scores are logged under (`rm:PATH` when a spec names it)."""

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu", batch_size: int = 32,
             name: str | None = None) -> "RewardFunction":
        """A saved reward model (`posttrain rm`'s final/, or any num_labels=1 sequence classifier)."""
        device = torch.device(device)
        model_dir = resolve_model_dir(str(path))
        marker = model_dir / MARKER_FILE
        if marker.is_file() and json.loads(marker.read_text()).get("pooling") != "last_token":
            raise ModelError(f"{marker}: pooling must be last_token, the only one posttrain reads")
        classifier, new_head = load_classifier(model_dir, resolve_dtype("auto", device))
        if new_head:
            raise ModelError(f"{model_dir} has no reward head (is it a causal LM?); train one with: "
                             f"posttrain rm --model.name {path} --data.train PAIRS.jsonl")
        model = RewardModel(classifier).to(device).eval()
        return cls(model, load_tokenizer(str(model_dir)), batch_size, name or f"rm:{path}")

    def __call__(self, prompt_record: Prompt, completion: str) -> float:
        return self.score_batch([prompt_record], [completion])[0]

    @torch.inference_mode()
    def score_batch(self, prompts: list[Prompt], completions: list[str]) -> list[float]:
        """One reward per (prompt, completion), in order; sequences of similar length share a forward."""
        if len(prompts) != len(completions):
            raise ValueError(f"got {len(prompts)} prompts but {len(completions)} completions")
        sequences = [self.tokenize(p, c) for p, c in zip(prompts, completions)]
        order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
        device = next(self.model.parameters()).device
        rewards = [0.0] * len(sequences)
        for start in range(0, len(order), self.batch_size):
            chunk = order[start : start + self.batch_size]
            batch = pad_batch([sequences[i] for i in chunk], self.tokenizer.pad_token_id, "right")
            values = self.model(batch["input_ids"].to(device), batch["attention_mask"].to(device))  # (b,)
            for i, value in zip(chunk, values.tolist()):
                rewards[i] = value
        return rewards

    def tokenize(self, prompt_record: Prompt, completion: str) -> Example:
        ids = reward_input_ids(prompt_record.prompt, (Message("assistant", completion),), self.tokenizer,
                               plain=prompt_record.plain)
        return Example(ids, [False] * len(ids))  # the loss mask is unused here
