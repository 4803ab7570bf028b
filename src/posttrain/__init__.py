"""posttrain: an open post-training system for language models.

SFT, reward models, DPO, PPO/GRPO/RLOO and evaluation as readable recipes over
one set of records, one model loader, one sampler and one training engine.
"""

__version__ = "0.1.0"
