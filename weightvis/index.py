"""Canonical tensor names across formats.

A GGUF file names its tensors the llama.cpp way (``blk.3.attn_q.weight``); the Hugging Face
release of the same model says ``model.layers.3.self_attn.q_proj.weight``. The canonical name of
a tensor is its Hugging Face spelling: GGUF names are mapped back through gguf-py's
``get_tensor_name_map`` (HF -> GGUF, many to one), choosing one preferred HF spelling per GGUF
name; other names are their own canonical name. The layout keys its slots on canonical names, so
the GGUF and the safetensors release of one model line up slot for slot.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from functools import lru_cache

__all__ = ["canonical_names", "gguf_to_hf_map", "looks_gguf"]

_GGUF_NAME = re.compile(r"^(blk\.\d+\.|token_embd\.|output\.|output_norm\.|rope_freqs\.)")

# preferred HF spellings, best first (llama-style names are what most checkpoints use)
_PREFERENCE = (
    re.compile(r"^model\.layers\.\{bid\}\.(self_attn|mlp)\.[a-z]+_proj$"),
    re.compile(r"^model\.layers\.\{bid\}\.(input_layernorm|post_attention_layernorm)$"),
    re.compile(r"^model\.layers\.\{bid\}\.(self_attn|mlp)\.[a-z_]+$"),
    re.compile(r"^model\.layers\.\{bid\}\."),
    re.compile(r"^(lm_head|model\.embed_tokens|model\.norm)$"),
    re.compile(r"^model\."),
)


# llama.cpp's names for the tensors nearly every GGUF has, and the HF spelling of the llama family
# (Llama, Mistral, Qwen, Gemma, Phi-3 …). Checked first; gguf-py's map covers the rest.
_OVERRIDES = {
    "token_embd": "model.embed_tokens",
    "output": "lm_head",
    "output_norm": "model.norm",
    "blk.{bid}.attn_q": "model.layers.{bid}.self_attn.q_proj",
    "blk.{bid}.attn_k": "model.layers.{bid}.self_attn.k_proj",
    "blk.{bid}.attn_v": "model.layers.{bid}.self_attn.v_proj",
    "blk.{bid}.attn_output": "model.layers.{bid}.self_attn.o_proj",
    "blk.{bid}.attn_q_norm": "model.layers.{bid}.self_attn.q_norm",
    "blk.{bid}.attn_k_norm": "model.layers.{bid}.self_attn.k_norm",
    "blk.{bid}.attn_norm": "model.layers.{bid}.input_layernorm",
    "blk.{bid}.ffn_norm": "model.layers.{bid}.post_attention_layernorm",
    "blk.{bid}.ffn_gate": "model.layers.{bid}.mlp.gate_proj",
    "blk.{bid}.ffn_up": "model.layers.{bid}.mlp.up_proj",
    "blk.{bid}.ffn_down": "model.layers.{bid}.mlp.down_proj",
    "blk.{bid}.ffn_gate_inp": "model.layers.{bid}.mlp.gate",
    "blk.{bid}.ffn_gate_shexp": "model.layers.{bid}.mlp.shared_expert.gate_proj",
    "blk.{bid}.ffn_up_shexp": "model.layers.{bid}.mlp.shared_expert.up_proj",
    "blk.{bid}.ffn_down_shexp": "model.layers.{bid}.mlp.shared_expert.down_proj",
    # merged experts have no per-expert HF twin; keep them in the MLP group, named by role
    "blk.{bid}.ffn_gate_exps": "model.layers.{bid}.mlp.experts.gate_proj",
    "blk.{bid}.ffn_up_exps": "model.layers.{bid}.mlp.experts.up_proj",
    "blk.{bid}.ffn_down_exps": "model.layers.{bid}.mlp.experts.down_proj",
}


def looks_gguf(names: Iterable[str]) -> bool:
    """True when the names follow llama.cpp's GGUF naming (``blk.N.…``, ``token_embd``…)."""
    names = list(names)
    return bool(names) and sum(bool(_GGUF_NAME.match(n)) for n in names) >= len(names) / 2


def _rank(hf: str) -> tuple[int, int, str]:
    for i, pat in enumerate(_PREFERENCE):
        if pat.search(hf):
            return (i, len(hf), hf)
    return (len(_PREFERENCE), len(hf), hf)


@lru_cache(maxsize=16)
def gguf_to_hf_map(arch: str) -> Mapping[str, str]:
    """GGUF base name (with ``{bid}`` for the block number) -> preferred HF base name, for a
    llama.cpp architecture name such as ``llama`` (empty when gguf-py does not know it)."""
    import gguf

    by_name = {v: k for k, v in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in by_name:
        return {}
    tmap = gguf.get_tensor_name_map(by_name[arch], 1)
    # block templates: map names for block 0 and substitute {bid}
    candidates: dict[str, list[str]] = {}
    for hf, (_kind, gg) in tmap.mapping.items():
        if hf == gg:
            continue
        g = re.sub(r"^blk\.0\.", "blk.{bid}.", gg)
        h = re.sub(r"\.0\.", ".{bid}.", hf, count=1) if g != gg else hf
        if "{bid}" in g and "{bid}" not in h:
            continue
        candidates.setdefault(g, []).append(h)
    return {g: min(hs, key=_rank) for g, hs in candidates.items()}


def canonical_names(names: Iterable[str], *, gguf_arch: str | None = None) -> dict[str, str]:
    """name -> canonical (HF-style) name for every tensor name given."""
    names = list(names)
    if not looks_gguf(names):
        return {n: n for n in names}
    table = {**(gguf_to_hf_map(gguf_arch or "llama") or gguf_to_hf_map("llama")), **_OVERRIDES}
    out: dict[str, str] = {}
    for n in names:
        m = re.match(r"^(?:blk\.(\d+)\.)?(.+?)(\.weight|\.bias)?$", n)
        assert m is not None
        bid, base, suffix = m.group(1), m.group(2), m.group(3) or ""
        key = f"blk.{{bid}}.{base}" if bid is not None else base
        hf = table.get(key)
        out[n] = n if hf is None else hf.replace("{bid}", bid or "") + suffix
    seen: dict[str, str] = {}
    for n, c in out.items():  # two names must never share a canonical name
        if c in seen:
            out[n] = n
            out[seen[c]] = seen[c]
        else:
            seen[c] = n
    return out
