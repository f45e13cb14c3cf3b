"""The official AutoDeco head layout: tensor names, shapes and config keys.

Each head is ``mlp = Sequential(Linear(D_in, W), ReLU(), Linear(W, 1), Sigmoid())``; the
temperature head's output is doubled. ``D_in`` is ``H`` for the temperature head and
``H + 5`` (enhanced features: ``T``, max prob, entropy, variance, top-5 mass) or ``H + 1``
(``T`` only) for the top-p head. The MLP width ``W`` (256 in released checkpoints) is read
from the weights, never assumed.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

TEMP = "temp_head"
TOP_P = "top_p_head"
HEAD_NAMES = (TEMP, TOP_P)
PARAM_SUFFIXES = ("mlp.0.weight", "mlp.0.bias", "mlp.2.weight", "mlp.2.bias")
ENHANCED_EXTRA_FEATURES = 5  # T, max_prob, entropy, var, top5
PLAIN_EXTRA_FEATURES = 1  # T
BASE_PREFIX = "llm."  # merged checkpoints keep the base model under this prefix
HEADS_FILE = "autodeco_heads.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1


def head_key(head: str, suffix: str) -> str:
    return f"{head}.{suffix}"


def canonical_head_key(key: str) -> Optional[str]:
    """Map a stored tensor name to ``temp_head.*`` / ``top_p_head.*``, or None if not a head key.

    Accepts the name as written by the official tools and the same name under ``llm.``.
    """
    name = key[len(BASE_PREFIX):] if key.startswith(BASE_PREFIX + TEMP) or key.startswith(BASE_PREFIX + TOP_P) else key
    if name.startswith(TEMP + ".") or name.startswith(TOP_P + "."):
        return name
    return None


def expected_shapes(head: str, hidden_size: int, width: int, enhanced: bool) -> Dict[str, Tuple[int, ...]]:
    """Expected shape of each parameter of ``head`` for a given hidden size and MLP width."""
    d_in = hidden_size
    if head == TOP_P:
        d_in += ENHANCED_EXTRA_FEATURES if enhanced else PLAIN_EXTRA_FEATURES
    return {
        head_key(head, "mlp.0.weight"): (width, d_in),
        head_key(head, "mlp.0.bias"): (width,),
        head_key(head, "mlp.2.weight"): (1, width),
        head_key(head, "mlp.2.bias"): (1,),
    }
