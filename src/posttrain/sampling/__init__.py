"""Sampling completions from a policy: the `Sampler` protocol, its `Rollout`, and the built-in batched
KV-cache sampler (`sampler.ModelSampler`). Evaluation, `generate`, `data pairs` and RL all sample here."""
