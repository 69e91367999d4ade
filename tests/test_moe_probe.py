"""The routing probe (weightvis/moe/probe.py, layerwise.py) on tiny random MoE models built offline
with transformers: planted routing patterns give exactly the predicted frequencies and
co-activations, models with dense layers get rows for exactly their MoE layers, the
one-layer-at-a-time run picks the same experts per token as a full transformers forward, and
what it cannot run fails with one clear error."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

try:
    import torch
    import transformers  # noqa: F401
except ImportError:  # pragma: no cover - CI installs the probe extra (.ci/run)
    if os.environ.get("WEIGHTVIS_REQUIRE_REAL"):
        raise
    pytest.skip("the probe extra (torch + transformers) is not installed", allow_module_level=True)

from weightvis.errors import InputError, MissingExtraError
from weightvis.moe import layerwise
from weightvis.moe.probe import (
    MAX_TOKENS_ENV,
    default_probe_text,
    probe_choices,
    probe_routing,
)

from .moe_probe_fixtures import build, plant, predicted, save, word_tokenizer

# model type -> (config overrides, DeepSeek-style expert group size): E = 8, top-2
PLANTED = {
    "mixtral": ({"num_local_experts": 8}, 1),
    "qwen2_moe": ({"num_experts": 8}, 1),
    "deepseek_v3": ({"n_routed_experts": 8, "n_group": 4, "topk_group": 1}, 2),
    "gpt_oss": ({"num_local_experts": 8}, 1),
}
RNG_IDS = np.random.default_rng(12).integers(0, 256, 40).tolist()


def planted_model(tmp: Path, model_type: str, seed: int = 0, **overrides: Any
                  ) -> tuple[Path, dict[int, np.ndarray]]:
    over, group = PLANTED[model_type]
    model = build(model_type, seed=seed, **{**over, **overrides})
    plan = plant(model, group=group, seed=seed)
    save(model, tmp / model_type)    # the checkpoint layout: the probe's load converts it back
    return tmp / model_type, plan


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Any]]:
    tmp = tmp_path_factory.mktemp("planted")
    return {t: planted_model(tmp, t) for t in PLANTED}


@pytest.mark.parametrize("model_type", sorted(PLANTED))
def test_planted_routing_gives_exactly_the_predicted_counts(planted: dict[str, Any],
                                                            model_type: str) -> None:
    path, plan = planted[model_type]
    got = probe_routing(path, tokens=RNG_IDS)
    freq, coact = predicted(plan, RNG_IDS, k=2)
    assert got["tokens"] == len(RNG_IDS) and got["top_k"] == 2
    assert got["layers"] == sorted(plan)
    assert got["freq"] == freq          # exact: the same integer counts over the same T
    assert got["coact"] == coact
    # the pattern is not trivial: both parities occur, and some experts are never chosen
    assert 0 < sum(t % 2 for t in RNG_IDS) < len(RNG_IDS)
    assert all(0.0 in row and max(row) < 1 for row in got["freq"])


def test_dense_layers_get_no_rows(tmp_path: Path) -> None:
    # Qwen2-MoE: MoE iff L not in mlp_only_layers and (L + 1) % decoder_sparse_step == 0
    # DeepSeek-V3: MoE iff L >= first_k_dense_replace (MOE.md section 1.4)
    cases = {"qwen2_moe": ({"num_hidden_layers": 6, "decoder_sparse_step": 2,
                            "mlp_only_layers": [3]},
                           [L for L in range(6) if L not in [3] and (L + 1) % 2 == 0]),
             "deepseek_v3": ({"num_hidden_layers": 5, "first_k_dense_replace": 2},
                             [L for L in range(5) if L >= 2])}
    for model_type, (over, moe) in cases.items():
        path, plan = planted_model(tmp_path, model_type, seed=3, **over)
        assert sorted(plan) == moe, model_type       # the checkpoint has routers there only
        got = probe_routing(path, tokens=RNG_IDS, moe_layers=moe)
        assert got["layers"] == moe and len(got["freq"]) == len(moe)
        assert set(got["coact"]) == {str(L) for L in moe}
        assert (got["freq"], got["coact"]) == predicted(plan, RNG_IDS, k=2)
        with pytest.raises(InputError, match=r"routes in layers .* MoE layers are"):
            probe_routing(path, tokens=RNG_IDS, moe_layers=list(range(over["num_hidden_layers"])))


def experts_received(path: Path, ids: list[int]) -> dict[int, np.ndarray]:
    """A full ``from_pretrained`` forward; per layer, the expert ids the experts module received
    (its ``top_k_index`` argument) - not the probe's router hooks."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(path), local_files_only=True).eval()
    got: dict[int, np.ndarray] = {}
    for name, module in model.named_modules():
        if name.endswith(".experts") and ".layers." in name:
            layer = int(name.split(".layers.")[1].split(".")[0])

            def pre(_m: Any, args: Any, kwargs: Any, layer: int = layer) -> None:
                idx = args[1] if len(args) > 1 else kwargs["top_k_index"]
                got[layer] = idx.reshape(len(ids), -1).numpy().astype(np.int64)
            module.register_forward_pre_hook(pre, with_kwargs=True)
    with torch.no_grad():
        model(torch.tensor([ids]), use_cache=False)
    return got


@pytest.mark.parametrize("model_type", ["mixtral", "qwen2_moe", "deepseek_v3", "gpt_oss",
                                        "olmoe", "deepseek_v4"])
def test_layer_at_a_time_routes_as_the_full_model(tmp_path: Path, model_type: str) -> None:
    # random (unplanted) weights; deepseek_v4's first layers route by a token-id table
    model = build(model_type, seed=5)
    if model_type == "deepseek_v4":
        with torch.no_grad():
            for m in model.modules():
                if hasattr(m, "tid2eid"):
                    m.tid2eid.copy_(torch.randint(0, 4, m.tid2eid.shape, generator=torch.
                                                  Generator().manual_seed(1)))
    save(model, tmp_path / model_type)
    ids = np.random.default_rng(7).integers(0, 256, 64).tolist()
    full = experts_received(tmp_path / model_type, ids)
    got = probe_choices(tmp_path / model_type, tokens=ids)
    assert sorted(got) == sorted(full) and full
    for layer in full:
        np.testing.assert_array_equal(got[layer].ids, full[layer], err_msg=f"layer {layer}")
    if model_type == "deepseek_v4":      # the hash layers follow their table exactly
        for layer, m in enumerate(model.model.layers):
            table = getattr(m.mlp.gate, "tid2eid", None)
            if table is not None:
                np.testing.assert_array_equal(got[layer].ids, table[ids].numpy())


def test_one_decoder_layer_in_memory_at_a_time(planted: dict[str, Any],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    real_layers: list[list[str]] = []
    load = layerwise._LayerLoader.load

    def real(loader: Any) -> list[str]:
        return [u for u, m in loader.units.items()
                if any(p.device.type != "meta" for p in m.parameters())]

    def checked_load(self: Any, unit: str) -> None:
        assert real(self) == [], real(self)      # the previous layer was freed
        load(self, unit)
        real_layers.append(real(self))

    monkeypatch.setattr(layerwise._LayerLoader, "load", checked_load)
    probe_routing(planted["mixtral"][0], tokens=RNG_IDS)
    assert real_layers == [[f"layers.{i}"] for i in range(4)]


def test_explicit_token_ids(planted: dict[str, Any], tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    path, plan = planted["qwen2_moe"]
    tokens = tmp_path / "tokens.json"            # what --probe-tokens FILE holds
    tokens.write_text(json.dumps([2, 2, 2, 7]))
    ids = json.loads(tokens.read_text())
    got = probe_routing(path, tokens=ids)
    assert got["tokens"] == 4
    assert (got["freq"], got["coact"]) == predicted(plan, ids, k=2)
    assert all(sorted(row, reverse=True)[:4] == [0.75, 0.75, 0.25, 0.25] for row in got["freq"])
    np_ids = probe_routing(path, tokens=np.array(ids))
    assert np_ids == got
    for bad, words in (([], "no probe tokens"), ([1, -2], "-2"), ([1.5], "1.5"),
                       ([True], "True"), ([256], "outside the embedding's 256 rows")):
        with pytest.raises(InputError, match=words):
            probe_routing(path, tokens=bad)
    monkeypatch.setenv(MAX_TOKENS_ENV, "3")
    with pytest.raises(InputError, match=f"4 probe tokens, more than 3.*{MAX_TOKENS_ENV}"):
        probe_routing(path, tokens=ids)
    monkeypatch.setenv(MAX_TOKENS_ENV, "many")
    with pytest.raises(InputError, match=MAX_TOKENS_ENV):
        probe_routing(path, tokens=ids)


def test_text_is_tokenized_with_the_model_directory_tokenizer(tmp_path: Path) -> None:
    text = default_probe_text()
    path, plan = planted_model(tmp_path, "mixtral", seed=2, vocab_size=512)
    tok = word_tokenizer(text, path)
    ids = tok(text)["input_ids"]
    assert 200 <= len(ids) <= 1000                    # "a few hundred tokens"
    steps: list[tuple[str, int, int]] = []
    got = probe_routing(path, progress=lambda *a: steps.append(a))
    assert got["tokens"] == len(ids)
    assert (got["freq"], got["coact"]) == predicted(plan, ids, k=2)
    assert steps == [("probe", n, 4) for n in range(1, 5)]
    mine = "the rain stopped and the lamps came on"
    got = probe_routing(path, text=mine)
    assert (got["freq"], got["coact"]) == predicted(plan, tok(mine)["input_ids"], k=2)
    with pytest.raises(InputError, match="not both"):
        probe_routing(path, text=mine, tokens=[1])
    (path / "tokenizer.json").unlink()
    with pytest.raises(InputError, match="no usable tokenizer.*--probe-tokens"):
        probe_routing(path)


def test_what_the_probe_cannot_run_fails_clearly(tmp_path: Path, planted: dict[str, Any],
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from safetensors.torch import load_file, save_file
    from transformers import AutoConfig, LlamaConfig, LlamaForCausalLM

    # a dense architecture: transformers declares no router for it
    torch.manual_seed(0)
    save(LlamaForCausalLM(LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2,
                                      vocab_size=64)), tmp_path / "llama")
    with pytest.raises(InputError, match=r"architecture 'llama' \(LlamaForCausalLM\).*router"):
        probe_routing(tmp_path / "llama", tokens=[1, 2, 3])
    # not a model directory
    for where in (tmp_path / "nowhere", planted["mixtral"][0] / "model.safetensors"):
        with pytest.raises(InputError, match="config.json"):
            probe_routing(where, tokens=[1])
    # a model type transformers does not know
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "config.json").write_text('{"model_type": "no-such-moe"}')
    with pytest.raises(InputError, match="no-such-moe"):
        probe_routing(tmp_path / "odd", tokens=[1])
    # encoder-decoder MoE (Switch Transformers)
    AutoConfig.for_model("switch_transformers").save_pretrained(tmp_path / "switch")
    with pytest.raises(InputError, match="switch_transformers.*encoder-decoder"):
        probe_routing(tmp_path / "switch", tokens=[1])
    # quantized weights
    cfg = json.loads((planted["mixtral"][0] / "config.json").read_text())
    (tmp_path / "fp8").mkdir()
    (tmp_path / "fp8" / "config.json").write_text(json.dumps(
        {**cfg, "quantization_config": {"quant_method": "fp8"}}))
    with pytest.raises(InputError, match="quantized.*'fp8'"):
        probe_routing(tmp_path / "fp8", tokens=[1])
    # no weights, then a layer's tensor missing
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="no model.safetensors"):
        probe_routing(tmp_path / "cut", tokens=[1])
    state = load_file(str(planted["mixtral"][0] / "model.safetensors"))
    del state["model.layers.2.self_attn.k_proj.weight"]
    save_file(state, str(tmp_path / "cut" / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(InputError, match=r"layers\.2\.self_attn\.k_proj\.weight"):
        probe_routing(tmp_path / "cut", tokens=[1, 2])
    data = (planted["mixtral"][0] / "model.safetensors").read_bytes()
    (tmp_path / "cut" / "model.safetensors").write_bytes(data[:len(data) // 2])
    with pytest.raises(InputError, match="model.safetensors: not a readable safetensors file"):
        probe_routing(tmp_path / "cut", tokens=[1, 2])
    # without the extra
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingExtraError, match=r"weightvis\[probe\]"):
        probe_routing(planted["mixtral"][0], tokens=[1])
