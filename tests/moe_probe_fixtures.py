"""Tiny random Mixture-of-Experts models built offline with transformers (MOE.md Appendix D), a
planted routing pattern (MOE.md section 4.5 / Appendix B1) and the routing it must give, worked out
from the token ids alone, and a word-level tokenizer for the text path."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np

# sizes applied to any key the model type's default config has (MOE.md Appendix D)
TINY: dict[str, Any] = {
    "hidden_size": 64, "intermediate_size": 96, "moe_intermediate_size": 24,
    "shared_expert_intermediate_size": 40, "num_hidden_layers": 4, "num_attention_heads": 4,
    "num_key_value_heads": 2, "head_dim": 16, "vocab_size": 256, "pad_token_id": 0,
    "num_local_experts": 4, "num_experts": 4, "n_routed_experts": 4, "moe_num_experts": 4,
    "num_experts_per_tok": 2, "moe_topk": 2, "moe_k": 2, "num_experts_per_token": 2,
    "n_shared_experts": 1, "first_k_dense_replace": 1, "n_group": 2, "topk_group": 1,
    "kv_lora_rank": 16, "q_lora_rank": 32, "qk_rope_head_dim": 8, "qk_nope_head_dim": 8,
    "v_head_dim": 16, "max_position_embeddings": 512,
}
# per family (MOE.md Appendix D)
FAMILY: dict[str, dict[str, Any]] = {
    "mixtral": {"intermediate_size": 24},
    "phimoe": {"intermediate_size": 24},
    "deepseek_v2": {"num_key_value_heads": 4, "head_dim": 8},
    "deepseek_v3": {"num_key_value_heads": 4, "head_dim": 8},
    "glm4_moe": {"num_key_value_heads": 4},
}
EXPERT_KEYS = ("num_local_experts", "num_experts", "n_routed_experts", "moe_num_experts")


def tiny_config(model_type: str, **overrides: Any) -> Any:
    from transformers import AutoConfig

    default = AutoConfig.for_model(model_type).to_dict()
    kw = {k: v for k, v in TINY.items() if k in default}
    kw.update(FAMILY.get(model_type, {}))
    kw.update(overrides)
    return AutoConfig.for_model(model_type, **kw)


def build(model_type: str, out: Path | None = None, seed: int = 0, **overrides: Any) -> Any:
    """A tiny random model of ``model_type`` (saved in the checkpoint layout in ``out``)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(tiny_config(model_type, **overrides)).eval()
    if out is not None:
        save(model, out)
    return model


def save(model: Any, out: Path) -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()
    model.save_pretrained(str(out))


def routers(model: Any) -> dict[int, Any]:
    """layer id -> router module: a module named like a router (the class names of MOE.md 4.2)
    that owns a 2-D weight, found by name here so the test does not reuse the probe's search."""
    out = {}
    for name, m in model.named_modules():
        found = re.search(r"\.layers\.(\d+)\.(mlp|block_sparse_moe)\.(gate|router)$", name)
        if found and getattr(m, "weight", None) is not None and m.weight.ndim == 2:
            out[int(found.group(1))] = m
    return out


def blocked_scales(experts: int, group: int, rng: np.random.Generator) -> np.ndarray:
    """Distinct positive router scales s (1..E), arranged so that for group-limited routing
    (DeepSeek-V3: experts in groups of ``group``) the k largest of s fill whole groups: groups get
    blocks of consecutive ranks in random order, and ranks are shuffled inside a group."""
    blocks = rng.permutation(experts // group)
    s = np.empty(experts)
    for g, b in enumerate(blocks):
        s[g * group:(g + 1) * group] = rng.permutation(np.arange(b * group, (b + 1) * group)) + 1
    return s


def plant(model: Any, *, channel: int = 0, big: float = 50.0, seed: int = 0,
          group: int = 1) -> dict[int, np.ndarray]:
    """MOE.md section 4.5, the parity channel: residual channel ``channel`` is +big for even token
    ids and -big for odd ones, nothing writes to it, and each router is s_L (outer) e_channel with
    distinct positive s_L. Every even token then picks top-k(s_L), every odd one bottom-k(s_L).
    The router input's channel is about +-sqrt(H) after the RMSNorm, so s_L is divided by sqrt(H):
    logits of +-1..E keep sigmoid scores (DeepSeek-V3) distinct in float32 instead of saturating
    to ties. Works on the model as transformers holds it (fused experts); returns {layer: s_L}."""
    import torch

    rng = np.random.default_rng(seed)
    H = model.config.get_text_config().hidden_size
    j = channel
    with torch.no_grad():
        emb = model.get_input_embeddings().weight
        ids = torch.arange(emb.shape[0])
        emb[:, j] = torch.where(ids % 2 == 0, big, -big)
        for name, p in model.named_parameters():
            if name.endswith("embed_tokens.weight"):
                continue
            if re.search(r"(o_proj|out_proj|down_proj|w2|output_linear)\.weight$", name) \
                    and p.ndim == 2 and p.shape[0] == H:
                p[j] = 0
            elif re.search(r"(o_proj|out_proj|down_proj|w2)\.bias$", name) and p.shape[-1] == H:
                p[..., j] = 0
            elif re.search(r"experts\.down_proj$", name) and p.ndim == 3:
                if p.shape[1] == H and p.shape[2] != H:
                    p[:, j, :] = 0          # [E, H, I]
                else:
                    assert p.shape[2] == H, (name, p.shape)
                    p[:, :, j] = 0          # [E, I, H] (gpt-oss)
            elif name.endswith("down_proj_bias"):
                p[:, j] = 0
        plan = {}
        for layer, router in routers(model).items():
            s = blocked_scales(router.weight.shape[0], group, rng)
            router.weight.zero_()
            router.weight[:, j] = torch.as_tensor(s / np.sqrt(H), dtype=router.weight.dtype)
            for b in ("bias", "e_score_correction_bias"):
                if getattr(router, b, None) is not None:
                    getattr(router, b).zero_()
            plan[layer] = s
    return plan


def predicted(plan: dict[int, np.ndarray], ids: list[int], k: int
              ) -> tuple[list[list[float]], dict[str, list[list[float]]]]:
    """The frequencies and co-activations the plant must give, from the token ids alone."""
    T = len(ids)
    freq, coact = [], {}
    for layer in sorted(plan):
        order = np.argsort(plan[layer])
        top, bottom = set(order[-k:].tolist()), set(order[:k].tolist())
        counts = np.zeros((len(order), len(order)), dtype=np.int64)
        for t in ids:
            chosen = sorted(top if t % 2 == 0 else bottom)
            for a in chosen:
                for b in chosen:
                    counts[a, b] += 1
        freq.append([c / T for c in np.diag(counts).tolist()])
        coact[str(layer)] = [[c / T for c in row] for row in counts.tolist()]
    return freq, coact


def word_tokenizer(text: str, out: Path) -> Any:
    """A word-level tokenizer over the words of ``text`` (ids from 1; 0 = [UNK]), saved in
    ``out`` as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = sorted(set(re.findall(r"\w+|[^\w\s]", text)))
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(words)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]")
    fast.save_pretrained(str(out))
    return fast
