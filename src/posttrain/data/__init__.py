"""Data: the records every part of posttrain speaks and everything between a file and a batch of tensors.

- `records`: the record kinds (Text, Conversation, PromptCompletion, Prompt, PreferencePair, Ranking, Rating).
- `load`: any source (JSONL/JSON/CSV/Parquet, datasets folders, `builtin:` tasks) to checked records.
- `tokenize`: the chat template, applied here and nowhere else; which tokens are trained.
- `collate`: padding, packing, length-grouped orders; `IGNORE_INDEX`.
- `batches`, `preference`, `rankings`: each recipe's examples and batch dataclass (SFT, DPO, reward model).
- `splits`: the one held-out policy.
"""
