# Over the 450-line guide: every name is parsed here and nowhere else (STYLE: one name index),
# the Mixture-of-Experts families included.
"""The name index: every tensor name parsed once, for layout, ``info``, diff pairing and search.

Canonical names. A GGUF file names its tensors the llama.cpp way (``blk.3.attn_q.weight``); the
Hugging Face release of the same model says ``model.layers.3.self_attn.q_proj.weight``. The
canonical name of a tensor is its Hugging Face spelling: GGUF names are mapped back through
gguf-py's ``get_tensor_name_map`` (HF -> GGUF, many to one), choosing one preferred HF spelling
per GGUF name; other names are their own canonical name. Everything below is parsed from the
canonical name, so the GGUF and the safetensors release of one model line up slot for slot.

Parsed from a canonical name (``TensorName``): the block stack and block index with the sub-path
inside the block (``model.layers`` / 3 / ``self_attn.q_proj.weight``); the kind (``KINDS``); for a
Mixture-of-Experts the part (``MOE_PARTS``: one routed expert's tensor, all routed experts fused
in one tensor, a shared expert, the router), the expert index and the projection role; the Q/K
role of attention (llama.cpp permutes those rows for RoPE). Expert name families: MOE.md §1.2
and Appendix C. ``NameIndex`` builds all of it for a list of names in linear time, with O(1)
lookups by name and by canonical name and the dominant block stack. Pure Python: no numpy, no
reader (gguf-py is imported only to map GGUF names of an architecture the overrides miss).
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Mapping
from functools import lru_cache
from typing import NamedTuple

__all__ = ["KINDS", "MOE_PARTS", "SLOT_KINDS", "BlockParse", "MoeParse", "NameIndex", "TensorName",
           "canonical_names", "detect_blocks", "gguf_to_hf_map", "is_embedding", "is_output_head",
           "looks_gguf", "natural_key", "order_key",
           "parse_block", "parse_moe", "qk_role", "slot_kind", "strip_wrappers", "tensor_kind",
           "view_row_dims", "expert_rest"]

_INDEX = r"[0-9]{1,9}"
"""A block or expert index in a name: ASCII digits (``\\d`` would take any script's digits, so
``layers.٣`` would pose as block 3), at most nine (``int()`` of a name's 5,000 digits raises, and
indices stay exact in the viewer's doubles). A name with any other index is outside any block."""

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
        m = re.match(r"(?:blk\.(" + _INDEX + r")\.)?(.*?)(\.weight|\.bias)?\Z", n, re.DOTALL)
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


# -- order ---------------------------------------------------------------------------------------
_DIGITS = re.compile(r"([0-9]+)")


def natural_key(s: str) -> tuple[object, ...]:
    """Sort key in which digit runs compare as numbers: ``experts.2`` < ``experts.10``.

    A run compares by its length without leading zeros, then by its digits: the order of
    ``int()``, which would raise on a name's 5,000-digit run (and on ``"²"``, a str.isdigit()).
    Only ASCII digits make a run.

    >>> sorted(["x.10", "x." + "9" * 5000, "x.9", "x²", "x.09a"], key=natural_key)[:3]
    ['x.9', 'x.09a', 'x.10']
    """
    return tuple((0, len(t.lstrip("0")), t.lstrip("0")) if i % 2 else (1, t)
                 for i, t in enumerate(_DIGITS.split(s)) if t)


_RNN_RE = re.compile(r"(?P<head>(?:.*\.)?)(?P<kind>weight|bias)_(?P<gate>ih|hh|hr)_l"
                     r"(?P<layer>" + _INDEX + r")(?P<rev>_reverse)?(?P<tail>\..*)?\Z", re.DOTALL)
_RNN_RANK = {"weight": "0", "bias": "1", "ih": "0", "hh": "1", "hr": "2"}


def order_key(name: str) -> tuple[object, ...]:
    """The order of tensors outside transformer blocks: natural (``layer2`` before ``layer10``),
    with PyTorch's recurrent parameters (``weight_ih_l0``, ``bias_hh_l1_reverse`` of ``nn.LSTM`` /
    ``GRU`` / ``RNN``) by layer first (the backward direction after the forward one), then
    weights before biases, input before hidden before projection: their layer number ends the
    name, so plain natural order would put every layer's ``weight_hh`` before any ``weight_ih``.

    >>> sorted(["lstm.weight_hh_l1", "lstm.weight_ih_l1", "lstm.bias_ih_l0", "lstm.weight_hh_l0",
    ...         "lstm.weight_ih_l0", "lstm.weight_ih_l10"],
    ...        key=order_key)  # doctest: +NORMALIZE_WHITESPACE
    ['lstm.weight_ih_l0', 'lstm.weight_hh_l0', 'lstm.bias_ih_l0', 'lstm.weight_ih_l1',
     'lstm.weight_hh_l1', 'lstm.weight_ih_l10']
    """
    m = _RNN_RE.match(name)
    if m is not None:
        r = _RNN_RANK
        name = (f"{m['head']}l{m['layer']}{m['rev'] or ''}\0{r[m['kind']]}{r[m['gate']]}"
                f"{m['tail'] or ''}")
    return natural_key(name)


# -- blocks --------------------------------------------------------------------------------------
_BLOCK_RE = re.compile(
    r"^(?P<prefix>(?:[^.]+\.)*?(?:layers|layer|h|blocks|block|blk))\.(?P<idx>" + _INDEX
    + r")\.(?P<rest>.+)$")


class BlockParse(NamedTuple):
    """``model.layers.3.mlp.up_proj.weight`` -> (``model.layers``, 3, ``mlp.up_proj.weight``)."""

    prefix: str
    block: int
    sub: str


def parse_block(name: str) -> BlockParse | None:
    """The block stack, block index and sub-path of a name, or None outside any block."""
    m = _BLOCK_RE.match(name)
    if m is None:
        return None
    return BlockParse(m["prefix"], int(m["idx"]), m["rest"])


def _dominant(counts: Mapping[str, int], indices: Mapping[str, set[int]]) -> str | None:
    if not counts:
        return None
    best = sorted(counts, key=lambda k: (-counts[k], -len(indices[k]), k))[0]
    # a single "block" holding one tensor is not a stack
    if len(indices[best]) < 2 and counts[best] < 2:
        return None
    return best


def detect_blocks(names: Iterable[str]) -> str | None:
    """The dominant block stack's prefix (most tensors, then most blocks, then the smaller
    prefix), or None when no name looks like a transformer block."""
    counts: dict[str, int] = defaultdict(int)
    indices: dict[str, set[int]] = defaultdict(set)
    for n in names:
        p = parse_block(n)
        if p is not None:
            counts[p.prefix] += 1
            indices[p.prefix].add(p.block)
    return _dominant(counts, indices)


# -- kinds ---------------------------------------------------------------------------------------
SLOT_KINDS = ("attention", "mlp", "norm", "other")
"""Kinds of a block sub-path (``slot_kind``): the layout's shelves, in this order."""
KINDS = ("attention", "mlp", "norms", "embeddings", "experts", "other")
"""Kinds of a tensor (``tensor_kind``), as ``info`` and the diff report them."""

_NORM_RE = re.compile(r"(norm|^ln(_?\d+|_?f)?$|^rms)")
_ATTN_RE = re.compile(r"(attn|attention)")
_MLP_RE = re.compile(r"(mlp|ffn|feed_forward|densereludense|intermediate|experts?|moe|router|"
                     r"^gate|up_proj|down_proj|^fc\d|^w[123]$|c_fc|shared_expert)")
_QKVO_RE = re.compile(r"^(q_proj|k_proj|v_proj|o_proj|query|key|value|qkv|wq|wk|wv|wqkv|"
                      r"query_key_value|out_proj)$")
_EMBED_RE = re.compile(r"(embed|^wte\b|^wpe\b|\.wte\.|\.wpe\.|token_embd|tok_embeddings|"
                       r"^shared\.|\.shared\.)", re.IGNORECASE)
_EXPERT_RE = re.compile(r"(^|\.)experts?\.\d+\.|_exps\b|\.experts\.")
_HEAD_RE = re.compile(r"(^|\.)(lm_head|output)\.(weight|bias)$")
_Q_RE = re.compile(r"(self_attn\.q_proj|attention\.wq)\.weight$")
_K_RE = re.compile(r"(self_attn\.k_proj|attention\.wk)\.weight$")


def slot_kind(sub: str) -> str:
    """``attention``, ``mlp``, ``norm`` or ``other`` (``SLOT_KINDS``) for a block sub-path."""
    comps = [c.lower() for c in sub.split(".")]
    module = comps[:-1] if len(comps) > 1 else comps
    if any(_NORM_RE.search(c) for c in module):
        return "norm"
    if any(_ATTN_RE.search(c) for c in module):
        return "attention"
    if any(_MLP_RE.search(c) for c in module):
        return "mlp"
    if any(_QKVO_RE.match(c) for c in module):
        return "attention"
    if module and module[0] == "output":  # BERT's FFN output.dense
        return "mlp"
    return "other"


def is_embedding(name: str) -> bool:
    """True for token / position embeddings (``embed_tokens``, ``wte``, T5's ``shared`` …)."""
    return bool(_EMBED_RE.search(name))


def is_output_head(name: str) -> bool:
    """True for the output head (``lm_head``, GGUF ``output``), weight or bias."""
    return bool(_HEAD_RE.search(name))


def _kind(canon: str, p: BlockParse | None, prefix: str | None) -> str:
    if _EXPERT_RE.search(canon):
        return "experts"
    if p is not None and _FUSED_ONLY_RE.search(p.sub) and _routed(parse_moe(p.sub)):
        return "experts"  # GraniteMoE / JetMoE input_linear, output_linear
    if is_embedding(canon) or _HEAD_RE.search(canon):
        return "embeddings"
    sub = p.sub if p is not None and p.prefix == prefix else canon
    return {"norm": "norms", "attention": "attention", "mlp": "mlp"}.get(slot_kind(sub), "other")


def tensor_kind(canon: str, prefix: str | None) -> str:
    """One of ``KINDS`` for a canonical name; ``prefix`` is the dominant block stack."""
    return _kind(canon, parse_block(canon), prefix)


def qk_role(canon: str) -> str | None:
    """``q`` / ``k`` for the weight of attention's query / key projection (the rows llama.cpp
    permutes for RoPE), else None."""
    if _Q_RE.search(canon):
        return "q"
    if _K_RE.search(canon):
        return "k"
    return None


WRAPPERS = ("module.", "_orig_mod.", "base_model.model.", "model.", "transformer.")
"""Prefixes that wrappers add to a state dict (DDP, torch.compile, PEFT) or that one export
has and another lacks; ``strip_wrappers`` removes them for the diff's last pairing rule."""


def strip_wrappers(name: str) -> str:
    """``name`` without its leading ``WRAPPERS``, repeatedly (never down to nothing)."""
    changed = True
    while changed:
        changed = False
        for w in WRAPPERS:
            if name.startswith(w) and len(name) > len(w):
                name = name[len(w):]
                changed = True
    return name


# -- Mixture-of-Experts (MOE.md §1.2, Appendix C) -----------------------------------------------
MOE_PARTS = ("expert", "fused", "shared", "router")
"""``expert``: one routed expert's tensor; ``fused``: every routed expert in one tensor (expert
axis first); ``shared``: an always-on shared expert (never counted as routed); ``router``."""

_ROLES = {"gate_proj": "gate", "w1": "gate", "up_proj": "up", "w3": "up", "v1": "up", "wi": "up",
          "fc1": "up", "down_proj": "down", "w2": "down", "wo": "down", "fc2": "down",
          "gate_up_proj": "gate_up", "input_linear": "gate_up", "output_linear": "down"}
_MOE_ATTN_RE = re.compile(r"attn|attention")  # JetMoE's attention experts are not FFN experts
_SHARED_RE = re.compile(r"shared_experts?|shared_mlp|share_expert|_shexp")
_SHARED_ROLE_RE = re.compile(r"(?:(?:shared_experts?|shared_mlp|share_expert)\.(?P<w>[^.]+)|"
                             r"ffn_(?P<g>gate|up|down|gate_up)_shexp)\.weight$")
_ROUTER_BIAS_RE = re.compile(r"(?:^|\.)(?:e_score_correction_bias|expert_bias(?:\.bias)?|"
                             r"exp_probs_b\.bias|router\.bias|ffn_gate_inp\.bias|gate\.bias)$")
_ROUTER_RE = re.compile(r"(?:^|\.)(?:gate|router|gate\.wg|router\.gate|router\.layer|"
                        r"router\.classifier|router\.proj|ffn_gate_inp)\.weight$")
_ROUTER_PART_RE = re.compile(r"(?:^|\.)router\.")
_PER_EXPERT_RE = re.compile(r"(?:^|\.)experts\.(?:expert_)?(?P<e>" + _INDEX
                            + r")\.(?P<rest>.+)$")
_FUSED_RE = re.compile(
    r"(?:^|\.)(?:experts\.(?:mlp\.)?(?P<a>gate_up_proj|gate_proj|up_proj|down_proj|w1|v1|w2)|"
    r"(?P<b>input_linear|output_linear)|ffn_(?P<g>gate|up|down|gate_up)_exps)"
    r"(?P<tail>_bias|_blocks|_scales|\.[^.]+)?$")


class MoeParse(NamedTuple):
    """Where a block sub-path sits in a Mixture-of-Experts: ``part`` (``MOE_PARTS``), the routed
    expert's index (``expert`` parts only) and the role: ``gate``, ``up``, ``down``, ``gate_up``
    for a projection's weight, ``router`` / ``router_bias`` for the router's weight / a routing
    bias; None for other parameters (biases, FP8 scales, MXFP4 blocks).

    >>> parse_moe("block_sparse_moe.experts.5.w3.weight")
    MoeParse(part='expert', expert=5, role='up')
    """

    part: str
    expert: int | None
    role: str | None


_FUSED_ONLY_RE = re.compile(r"(?:^|\.)(?:input_linear|output_linear)\.")


def _routed(m: MoeParse | None) -> bool:
    return m is not None and m.part in ("expert", "fused")


def view_row_dims(name: str, shape: tuple[int, ...]) -> int:
    """How many leading dims the rows of a tensor's 2-D view span (``types.view_of``): 2 for
    a fused expert tensor of three or more dims, whose view is then its E experts' matrices
    stacked (``[E, r, c]`` -> ``(E*r) x c``: one expert's matrix is a row range, MOE.md §1.3),
    else 1. Readers call it when they list a tensor; ``name`` is the stored name (GGUF names
    too: ``ffn_up_exps``).

    >>> view_row_dims("model.layers.0.mlp.experts.gate_up_proj", (8, 64, 32))
    2
    >>> view_row_dims("conv.weight", (8, 3, 3, 3))
    1
    """
    if len(shape) < 3:
        return 1
    m = parse_moe(name)
    return 2 if m is not None and m.part == "fused" else 1


def expert_rest(sub: str) -> str | None:
    """What follows the expert number in a routed expert's sub-path (``gate_proj.weight`` of
    ``mlp.experts.7.gate_proj.weight``), or None when it names no numbered expert."""
    m = _PER_EXPERT_RE.search(sub)
    return None if m is None else m["rest"]


def parse_moe(sub: str) -> MoeParse | None:
    """The MoE reading of a block sub-path (``MoeParse``), or None for a dense tensor."""
    if _MOE_ATTN_RE.search(sub):
        return None
    if _SHARED_RE.search(sub):
        m = _SHARED_ROLE_RE.search(sub)
        role = None if m is None else m["g"] or _ROLES.get(m["w"])
        return MoeParse("shared", None, role)
    if _ROUTER_BIAS_RE.search(sub):
        return MoeParse("router", None, "router_bias")
    if _ROUTER_RE.search(sub):
        return MoeParse("router", None, "router")
    m = _PER_EXPERT_RE.search(sub)
    if m is not None:
        w = m["rest"].removesuffix(".weight")
        role = _ROLES.get(w) if m["rest"].endswith(".weight") else None
        return MoeParse("expert", int(m["e"]), role)
    m = _FUSED_RE.search(sub)
    if m is not None:
        weight = m["tail"] in (None, ".weight")
        return MoeParse("fused", None, (m["g"] or _ROLES[m["a"] or m["b"]]) if weight else None)
    if _ROUTER_PART_RE.search(sub):
        return MoeParse("router", None, None)
    return None


# -- the index -----------------------------------------------------------------------------------
class TensorName(NamedTuple):
    """One tensor's name, parsed (``NameIndex``). ``prefix``, ``block`` and ``sub`` place it in
    a block stack (any stack; ``NameIndex.block_prefix`` is the dominant one), None outside
    blocks; ``kind`` is one of ``KINDS``; ``moe``, ``expert``, ``expert_role`` as ``MoeParse``
    (None for a dense tensor); ``qk_role`` as ``qk_role``.

    >>> NameIndex(["model.layers.3.mlp.experts.7.down_proj.weight",
    ...            "model.layers.4.mlp.experts.7.down_proj.weight"])[
    ...     "model.layers.3.mlp.experts.7.down_proj.weight"]  # doctest: +NORMALIZE_WHITESPACE
    TensorName(name='model.layers.3.mlp.experts.7.down_proj.weight',
               canonical='model.layers.3.mlp.experts.7.down_proj.weight', prefix='model.layers',
               block=3, sub='mlp.experts.7.down_proj.weight', kind='experts', moe='expert',
               expert=7, expert_role='down', qk_role=None)
    """

    name: str
    canonical: str
    prefix: str | None
    block: int | None
    sub: str | None
    kind: str
    moe: str | None
    expert: int | None
    expert_role: str | None
    qk_role: str | None


class NameIndex:
    """Every name of a checkpoint (or of a diff's pairs) parsed once, in time linear in the
    number of names. ``canonical`` maps names to canonical names when the caller already has
    them (a diff: each pair under the canonical name of its tensors); otherwise they are found
    from the names (GGUF names through ``gguf_arch``'s map). Names are unique (a repeated name is
    indexed once); when two share a canonical name, ``by_canonical`` gives the first."""

    __slots__ = ("_by_name", "_by_canonical", "block_prefix", "blocks", "experts")

    def __init__(self, names: Iterable[str], *, gguf_arch: str | None = None,
                 canonical: Mapping[str, str] | None = None) -> None:
        names = list(dict.fromkeys(names))
        canon = (canonical_names(names, gguf_arch=gguf_arch) if canonical is None
                 else {n: canonical.get(n, n) for n in names})
        match = _BLOCK_RE.match
        parsed = [(n, c, m.groups() if (m := match(c)) is not None else None)
                  for n, c in canon.items()]
        # (by stack and block index as written: few distinct, each converted once)
        at = Counter(g[:2] for _, _, g in parsed if g is not None)
        counts: dict[str, int] = defaultdict(int)
        indices: dict[str, set[int]] = defaultdict(set)
        for (stack, idx), k in at.items():
            counts[stack] += k
            indices[stack].add(int(idx))
        prefix = self.block_prefix = _dominant(counts, indices)
        """The dominant block stack (``detect_blocks``), None without one."""
        self.blocks: tuple[int, ...] = tuple(sorted(indices[prefix])) if prefix else ()
        """Block indices of the dominant stack, ascending."""
        # everything but the block index depends on (stack, sub-path) only: parsed once each
        memo: dict[tuple[str, str], tuple[str, str | None, int | None, str | None, str | None]] = {}
        new = tuple.__new__  # TensorName(...) without its Python-level __new__: 45k names/0.1 s
        by_name: dict[str, TensorName] = {}
        for n, c, g in parsed:
            if g is None:
                by_name[n] = new(TensorName, (n, c, None, None, None, _kind(c, None, prefix),
                                              None, None, None, qk_role(c)))
                continue
            stack, idx, sub = g
            got = memo.get((stack, sub))
            if got is None:
                moe = parse_moe(sub)
                part, expert, role = moe if moe is not None else (None, None, None)
                got = memo[(stack, sub)] = (_kind(c, BlockParse(stack, int(idx), sub), prefix),
                                            part, expert, role, qk_role(c))
            by_name[n] = new(TensorName, (n, c, stack, int(idx), sub, *got))
        self._by_name = by_name
        self._by_canonical: dict[str, TensorName] | None = None  # built on first use
        self.experts: tuple[int, ...] = tuple(sorted(
            {v[2] for v in memo.values() if v[1] == "expert" and v[2] is not None}))
        """Indices of routed experts stored one per tensor, ascending (empty when fused)."""

    def __getitem__(self, name: str) -> TensorName:
        try:
            return self._by_name[name]
        except KeyError:
            raise KeyError(f"{name!r}: no such tensor name in the index") from None

    def get(self, name: str) -> TensorName | None:
        return self._by_name.get(name)

    def by_canonical(self, canonical: str) -> TensorName | None:
        """The tensor whose canonical name this is (the first one, if several), or None."""
        if self._by_canonical is None:
            self._by_canonical = {}
            for t in reversed(self._by_name.values()):
                self._by_canonical[t.canonical] = t
        return self._by_canonical.get(canonical)

    def __contains__(self, name: object) -> bool:
        return name in self._by_name

    def __iter__(self) -> Iterator[TensorName]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def canonical(self) -> dict[str, str]:
        """name -> canonical name, in the order the names were given."""
        return {n: t.canonical for n, t in self._by_name.items()}

    def slot(self, name: str) -> tuple[int, str] | None:
        """(block, sub-path) of a tensor in the dominant stack, else None."""
        t = self[name]
        if t.prefix is None or t.prefix != self.block_prefix:
            return None
        assert t.block is not None and t.sub is not None
        return t.block, t.sub
