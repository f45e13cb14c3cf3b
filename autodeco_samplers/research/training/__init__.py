"""Training AutoDeco heads on a frozen backbone (docs/design.md section 5). Needs torch + transformers.

>>> from autodeco_samplers.research.training import TrainConfig, train_heads      # doctest: +SKIP
>>> train_heads("base_model_dir", "train.jsonl", "heads_out", TrainConfig(steps=200))  # doctest: +SKIP
"""

from autodeco_samplers.research.training.losses import IGNORE_INDEX, dft_weights, easy_token_keep_mask, shift_for_causal_lm, temperature_loss, top_p_loss
from autodeco_samplers.research.training.data import Example, collate, encode_example, encode_examples, read_jsonl
from autodeco_samplers.research.training.trainer import HiddenCapture, TrainConfig, TrainResult, latest_checkpoint, load_optimizer, save_optimizer, train_heads

__all__ = [
    "IGNORE_INDEX", "dft_weights", "easy_token_keep_mask", "shift_for_causal_lm", "temperature_loss", "top_p_loss",
    "Example", "collate", "encode_example", "encode_examples", "read_jsonl",
    "HiddenCapture", "TrainConfig", "TrainResult", "latest_checkpoint", "load_optimizer", "save_optimizer", "train_heads",
]
