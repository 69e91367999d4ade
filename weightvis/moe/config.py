"""The numbers of a Mixture-of-Experts from config.json or GGUF metadata (MOE.md §1.4).

config.json is untrusted data: every number is checked (an int, not a bool, in range) before it
is used, and anything else reads as absent. ``moe_config`` gives one flat mapping for both
sources (GGUF keys mapped to config.json's); ``config_moe_layers`` is the MoE-layer rule of each
family's config.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["flat_config", "gguf_config", "cfg_int", "cfg_first", "config_moe_layers",
           "EXPERT_KEYS", "TOP_K_KEYS", "SHARED_KEYS", "HIDDEN_KEYS"]

EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")
TOP_K_KEYS = ("num_experts_per_tok", "moe_k", "moe_topk", "num_experts_per_token",
              "top_k_experts", "moe_top_k")
SHARED_KEYS = ("n_shared_experts", "num_shared_experts", "moe_num_shared_experts")
HIDDEN_KEYS = ("hidden_size", "d_model", "n_embd")
_LIMIT = 1 << 40


def cfg_int(cfg: Mapping[str, Any], key: str, *, minimum: int = 1) -> int | None:
    """``cfg[key]`` when it is an integer (not a bool) in [minimum, 2^40), else None."""
    v = cfg.get(key)
    if type(v) is int and minimum <= v < _LIMIT:  # noqa: E721 (exact: a bool is not a count)
        return v
    return None


def cfg_first(cfg: Mapping[str, Any], keys: Sequence[str], *, minimum: int = 1) -> int | None:
    """The first of ``keys`` whose value ``cfg_int`` accepts."""
    for k in keys:
        v = cfg_int(cfg, k, minimum=minimum)
        if v is not None:
            return v
    return None


def flat_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """config.json with a VL wrapper's ``text_config`` (Qwen3-VL-MoE, Llama-4) merged over it
    and DBRX's ``ffn_config`` mapped to the common keys."""
    cfg: dict[str, Any] = dict(config) if isinstance(config, Mapping) else {}
    text = cfg.get("text_config")
    if isinstance(text, Mapping):
        cfg.update(text)
    ffn = cfg.get("ffn_config")
    if isinstance(ffn, Mapping):
        for src, dst in (("moe_num_experts", "num_experts"), ("moe_top_k", "moe_top_k"),
                         ("ffn_hidden_size", "moe_intermediate_size")):
            if dst not in cfg and src in ffn:
                cfg[dst] = ffn[src]
    return cfg


_GGUF_KEYS = {
    "embedding_length": "hidden_size",
    "block_count": "num_hidden_layers",
    "expert_count": "num_experts",
    "expert_used_count": "num_experts_per_tok",
    "expert_shared_count": "n_shared_experts",
    "expert_feed_forward_length": "moe_intermediate_size",
    "leading_dense_block_count": "first_k_dense_replace",
    "interleave_moe_layer_step": "interleave_moe_layer_step",
    "moe_every_n_layers": "moe_every_n_layers",
}


def gguf_config(metadata: Mapping[str, Any]) -> dict[str, Any]:
    """GGUF KV metadata as config.json keys (``{arch}.expert_count`` -> ``num_experts``, …);
    ``model_type`` is ``general.architecture`` and ``gguf`` is True."""
    arch = metadata.get("general.architecture")
    if not isinstance(arch, str):
        return {}
    cfg: dict[str, Any] = {"model_type": arch, "gguf": True}
    for key, name in _GGUF_KEYS.items():
        if f"{arch}.{key}" in metadata:
            cfg[name] = metadata[f"{arch}.{key}"]
    return cfg


def _int_list(v: Any) -> list[int] | None:
    if isinstance(v, list) and all(type(x) is int for x in v):  # noqa: E721
        return list(v)
    return None


def config_moe_layers(config: Mapping[str, Any] | None, n_layers: int | None = None
                      ) -> tuple[int, ...] | None:
    """The MoE layer ids config.json (or ``gguf_config``) declares among ``n_layers`` layers
    (default ``num_hidden_layers``), by each family's rule (MOE.md §1.4); None when it names
    no rule. weightvis takes the MoE layers from the tensors (``detect_moe``); this rule is
    for callers that have only a config (a probe before loading), and the tests check that the
    two agree."""
    cfg = flat_config(config)
    n = n_layers if n_layers is not None else cfg_int(cfg, "num_hidden_layers")
    if n is None:
        return None
    layers = range(n)
    types = cfg.get("mlp_layer_types")
    if isinstance(types, list) and len(types) == n:
        return tuple(i for i in layers if types[i] in ("sparse", "moe", "hash_moe"))
    blocks = cfg.get("layers_block_type")
    if isinstance(blocks, list) and len(blocks) == n:
        return tuple(i for i in layers if blocks[i] == "moe")
    freq = cfg.get("moe_layer_freq")
    as_list = _int_list(freq)
    if as_list is not None and len(as_list) == n:
        return tuple(i for i in layers if as_list[i])
    k = cfg_int(cfg, "first_k_dense_replace", minimum=0)
    if k is not None:
        freq = cfg_int(cfg, "moe_layer_freq") or 1
        return tuple(i for i in layers if i >= k and i % freq == 0)
    moe_layers = _int_list(cfg.get("moe_layers"))
    if moe_layers is not None:
        return tuple(i for i in layers if i in set(moe_layers))
    step = cfg_int(cfg, "interleave_moe_layer_step")
    if step is not None:
        return tuple(range(step - 1, n, step))
    every = cfg_int(cfg, "moe_every_n_layers")
    if every is not None:
        return tuple(i for i in layers if (i + 1) % every == 0)
    period = cfg_int(cfg, "expert_layer_period")
    if period is not None:
        offset = cfg_int(cfg, "expert_layer_offset", minimum=0) or 0
        return tuple(i for i in layers if i % period == offset)
    start = cfg_int(cfg, "moe_layer_start_index", minimum=0)
    if start is not None:
        end = cfg_int(cfg, "moe_layer_end_index", minimum=0)
        interval = cfg_int(cfg, "moe_layer_interval") or 1
        return tuple(i for i in layers if start <= i <= (n - 1 if end is None else end)
                     and (i + 1) % interval == 0)
    dense = cfg_int(cfg, "num_dense_layers", minimum=0)
    if dense is not None:
        return tuple(i for i in layers if i >= dense)
    sparse_step = cfg_int(cfg, "decoder_sparse_step")
    if sparse_step is not None:
        only = set(_int_list(cfg.get("mlp_only_layers")) or ())
        return tuple(i for i in layers if i not in only and (i + 1) % sparse_step == 0)
    return None
