"""Online RL. The pure math, torch only (layer 5): `advantages` (GRPO's group-normalised, Dr. GRPO's unscaled and
RLOO's leave-one-out advantages, DAPO's zero-variance groups, whitening, GAE for PPO) and `kl` (the k1/k2/k3 KL
estimators and the fixed and adaptive KL controllers). `rl.setup` (layer 6) holds an RL run's options (`RLConfig`,
`PromptDataConfig`), its reward spec and prompts and the checks before its first step; `rl.engine` (layer 6) is the
online-RL step GRPO, RLOO and PPO share: sample, score, advantages, updates, metrics; `rl.samplers` (layer 6) picks
its sampler (built-in or vLLM) and pushes the weights to an engine; `rl.mismatch` weighs an engine's samples (TIS).
Policy losses are in `posttrain.losses.policy`."""
