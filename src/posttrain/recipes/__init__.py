"""One file per algorithm, each `Config` + `train(cfg)` reading top to bottom: config -> check inputs ->
set up -> loop -> save. `sft` (supervised fine-tuning), `reward_model` (Bradley-Terry), `dpo` (DPO, IPO,
SimPO, RPO's NLL term)."""
