"""Run a transformers model one decoder layer's weights at a time and record its routers' choices.

This is the engine of the routing probe (``probe.py`` has the inputs and the counting; MOE.md
section 4 of the project brief has the research):

* the base model (no output head) is built with its parameters on the meta device; buffers
  (rotary tables) are computed as usual, and the weights outside the decoder layers (embedding,
  ...) are loaded once;
* a forward pre-hook on each decoder layer loads that layer from the safetensors files through
  transformers' own checkpoint conversion (per-expert tensors become the fused experts the modules
  expect, as ``from_pretrained`` does), and a forward hook frees it again;
* the model's own forward computes masks, rotary embeddings and per-layer arguments, so every
  architecture runs as transformers runs it; the pass stops after the last MoE layer;
* forward hooks on the routers - the modules a model declares as the source of its
  ``router_logits`` (``_can_record_outputs``) - capture the experts each token was sent to: the
  indices the model used, including DeepSeek-V3's group-limited, bias-corrected choice.

Peak memory is about two copies of one decoder layer (its stored tensors, mapped from the file,
and the converted ones) + the embedding + activations, whatever the depth. transformers and torch
are imported lazily (the ``probe`` extra); their objects are typed ``Any`` here.
"""

from __future__ import annotations

import importlib
import inspect
import re
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from ..errors import InputError

__all__ = ["Routed", "route", "arch_name", "first_line"]

Progress = Callable[[str, int, int], None]

# Routers whose output has no [tokens, k] integer tensor: the choice is recomputed from the logits
# with the operation the model itself applies to them (transformers 5.24 sources):
#   Llama4Router -> (scores, logits); Llama4TextMoe: topk(logits, top_k, dim=1)
#   DbrxRouter -> logits; DbrxFFN.route_tokens_to_experts: topk(softmax(logits, dim=1), top_k)
#   JetMoeTopKGating -> (sorted ids, batch ids, gates, sizes, logits): logits.topk(top_k, dim=1)
_FROM_LOGITS = {"Llama4Router": (1, False), "DbrxRouter": (None, True),
                "JetMoeTopKGating": (4, False)}   # class -> (logits index, softmax first)


@dataclass(frozen=True)
class Routed:
    """One MoE layer's routing: ``ids`` [tokens, k] int64, the experts each token was sent to;
    ``experts`` the router's width (its ``router_logits`` columns).

    >>> Routed(np.array([[0, 2], [1, 2]]), experts=4).ids.shape
    (2, 2)
    """

    ids: np.ndarray
    experts: int


class _Router(NamedTuple):
    unit: str       # the decoder layer holding it
    layer: int      # that layer's id
    logits: int     # index of router_logits in its output (transformers' OutputRecorder)


class _Stop(Exception):
    """Raised by the hook after the last MoE layer: the rest of the forward is not needed."""


def route(config: Any, files: list[Path], ids: list[int], model_dir: Path,
          progress: Progress | None = None) -> dict[int, Routed]:
    """Run the token ids ``ids`` through the model of ``config`` whose weights are the safetensors
    ``files``, one decoder layer at a time; MoE layer id -> the experts each token was sent to."""
    torch = importlib.import_module("torch")
    tf = importlib.import_module("transformers")
    model, dtype = _skeleton(torch, tf, config, model_dir)
    loader = _LayerLoader(torch, model, dtype, files, model_dir)
    loader.check_vocab(ids)
    routers = _routers(model, loader.units, config)
    return _capture(torch, model, loader, routers, ids, progress, config)


def arch_name(config: Any) -> str:
    """The model type and architectures of a config, for messages."""
    names = getattr(config, "architectures", None) or []
    return repr(config.model_type) + (f" ({', '.join(names)})" if names else "")


def first_line(e: object) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0][:300]


def _lib(name: str) -> Any:
    return importlib.import_module(name)


@contextmanager
def _parameters_on_meta(torch: Any) -> Iterator[None]:
    """Parameters created in this block live on the meta device (no memory); buffers do not, so
    values computed at construction (rotary tables) stay real. As accelerate's
    ``init_empty_weights(include_buffers=False)``."""
    module_cls = torch.nn.Module
    register = module_cls.register_parameter

    def on_meta(module: Any, name: str, param: Any) -> None:
        register(module, name, param)
        if param is not None and param.device.type != "meta":
            p = module._parameters[name]
            module._parameters[name] = type(p)(p.to("meta"), requires_grad=p.requires_grad)

    module_cls.register_parameter = on_meta
    try:
        yield
    finally:
        module_cls.register_parameter = register


def _skeleton(torch: Any, tf: Any, config: Any, model_dir: Path) -> tuple[Any, Any]:
    """The base model (no output head) with every parameter on the meta device, in the dtype
    ``from_pretrained`` would use (the config's; float32 if it names none)."""
    dtype = getattr(config.get_text_config(), "dtype", None) or getattr(config, "dtype", None)
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        dtype = torch.float32
    try:
        with _parameters_on_meta(torch):
            model = tf.AutoModel.from_config(config, dtype=dtype, trust_remote_code=False)
    except (ValueError, KeyError, TypeError, AttributeError, ImportError) as e:
        raise InputError(f"{model_dir}: transformers cannot build architecture "
                         f"{arch_name(config)} ({first_line(e)})") from e
    return model.eval(), dtype


class _LayerLoader:
    """Which checkpoint tensors feed which decoder layer; loading and freeing one layer.

    A decoder layer ("unit") is a module whose class the model names in ``_no_split_modules``
    (the units transformers' device maps never split). Checkpoint names are mapped to parameters
    with transformers' renamings and converters (``get_model_conversion_mapping``), and a layer
    is loaded by ``convert_and_load_state_dict_in_model`` from that layer's tensors only - the
    path ``from_pretrained`` takes for the whole checkpoint."""

    def __init__(self, torch: Any, model: Any, dtype: Any, files: list[Path], model_dir: Path):
        cml = _lib("transformers.core_model_loading")
        pretrained = _lib("transformers.modeling_utils").PreTrainedModel
        self.torch, self.model, self.model_dir, self._cml = torch, model, model_dir, cml
        self._safe_open = _lib("safetensors").safe_open
        mapping = _lib("transformers.conversion_mapping").get_model_conversion_mapping(model)
        plan = model._get_dtype_plan(dtype) if hasattr(model, "_get_dtype_plan") else {}
        self._config = _lib("transformers.modeling_utils").LoadStateDictConfig(
            dtype=dtype, dtype_plan=plan, weight_mapping=mapping)
        no_split: set[str] = set()
        for m in model.modules():
            if isinstance(m, pretrained):
                no_split |= set(getattr(m, "_no_split_modules", None) or ())
        self.units: dict[str, Any] = {}
        for name, m in model.named_modules():
            if type(m).__name__ in no_split and not any(
                    name.startswith(u + ".") for u in self.units):
                self.units[name] = m
        if not self.units:
            raise InputError(f"{model_dir}: {type(model).__name__} names no decoder layers "
                             "(_no_split_modules); the layer-at-a-time probe cannot run it")
        renamings = [t for t in mapping if isinstance(t, cml.WeightRenaming)]
        converters = [t for t in mapping if isinstance(t, cml.WeightConverter)]
        meta = model.state_dict()
        self._keys: dict[str, dict[Path, list[str]]] = {}   # unit ("" = the rest) -> file -> keys
        for f in files:
            try:
                with self._safe_open(str(f), framework="pt") as h:
                    names = list(h.keys())
            except Exception as e:  # safetensors raises its own (untyped) errors
                raise InputError(f"{f}: not a readable safetensors file ({first_line(e)})") from e
            for k in names:
                target, _ = cml.rename_source_key(k, renamings, converters,
                                                  model.base_model_prefix, meta)
                if target not in meta and k in meta:
                    target = k
                if target in meta:   # else: output head, multi-token-prediction layers (not run)
                    owner = next((u for u in self.units if target.startswith(u + ".")), "")
                    self._keys.setdefault(owner, {}).setdefault(f, []).append(k)
        self._load("")
        # parameters outside the layers the checkpoint lacks stay on meta: an error if used
        self.missing = [n for n, p in model.named_parameters() if p.device.type == "meta"
                        and not any(n.startswith(u + ".") for u in self.units)]

    def check_vocab(self, ids: list[int]) -> None:
        try:
            weight = self.model.get_input_embeddings().weight
        except (NotImplementedError, AttributeError):
            return
        if weight.device.type == "meta":
            raise InputError(f"{self.model_dir}: the checkpoint has no input embedding")
        if max(ids) >= weight.shape[0]:
            raise InputError(f"{self.model_dir}: probe token id {max(ids)} is outside the "
                             f"embedding's {weight.shape[0]} rows")

    def load(self, unit: str) -> None:
        self._load(unit)
        for name, p in self.units[unit].named_parameters(prefix=unit):
            if p.device.type == "meta":
                raise InputError(f"{self.model_dir}: the checkpoint has no tensor for "
                                 f"parameter {name!r}")

    def free(self, unit: str) -> None:
        parameter = self.torch.nn.Parameter
        for m in self.units[unit].modules():
            for name, p in list(m._parameters.items()):
                if p is not None and p.device.type != "meta":
                    m._parameters[name] = parameter(p.to("meta"), requires_grad=False)

    def _load(self, unit: str) -> None:
        where = f"{self.model_dir}: layer {unit!r}" if unit else str(self.model_dir)
        with ExitStack() as stack:
            state: dict[str, Any] = {}
            for f, keys in self._keys.get(unit, {}).items():
                try:
                    h = stack.enter_context(self._safe_open(str(f), framework="pt"))
                    state.update((k, h.get_slice(k)) for k in keys)
                except Exception as e:  # safetensors raises its own (untyped) errors
                    raise InputError(f"{f}: unreadable ({first_line(e)})") from e
            info, _ = self._cml.convert_and_load_state_dict_in_model(self.model, state,
                                                                     self._config)
        if info.conversion_errors:
            key, msg = next(iter(info.conversion_errors.items()))
            raise InputError(f"{where}: cannot convert the checkpoint's tensors for {key!r} "
                             f"({first_line(str(msg).strip().splitlines()[-1])})")
        if info.mismatched_keys:
            key, found, expected = sorted(info.mismatched_keys, key=str)[0]
            raise InputError(f"{where}: the tensor for {key!r} has shape {tuple(found)}, the "
                             f"model expects {tuple(expected)}")


# ---------------------------------------------------------------------------------------------
# routers and their choices

def _routers(model: Any, units: dict[str, Any], config: Any) -> dict[str, _Router]:
    """Router module name -> where it is, for the modules the model declares as the source of its
    ``router_logits`` (its ``OutputRecorder``), outside attention (JetMoE's attention experts)."""
    pretrained = _lib("transformers.modeling_utils").PreTrainedModel
    recorder = _lib("transformers.utils.output_capturing").OutputRecorder
    specs = []
    for m in model.modules():
        if isinstance(m, pretrained):
            rec = (getattr(type(m), "_can_record_outputs", None) or {}).get("router_logits")
            for r in rec if isinstance(rec, list) else [] if rec is None else [rec]:
                specs.append(r if isinstance(r, recorder) else recorder(target_class=r, index=1))
    if not specs:
        raise InputError(f"architecture {arch_name(config)} has no router (router_logits) in "
                         "transformers: the routing probe runs Mixture-of-Experts models")
    found: dict[str, _Router] = {}
    for name, m in model.named_modules():
        spec = next((s for s in specs if isinstance(m, s.target_class) and (
            s.layer_name is None or f".{s.layer_name.strip('.')}." in f".{name}.")), None)
        if spec is None:
            continue
        if re.search(r"(^|\.)(self_)?(attention|attn)\.", name):
            continue
        unit = next((u for u in units if name.startswith(u + ".")), None)
        stack, _, i = (unit or "").rpartition(".")
        if unit is None or not i.isdigit():
            raise InputError(f"architecture {arch_name(config)}: router {name!r} is not inside a "
                             "numbered decoder layer; the routing probe cannot place it")
        found[name] = _Router(unit, int(i), spec.index)
    # A layer may route with a class the model does not record, at the place a recorded router has
    # in other layers: DeepSeek-V4's hash layers (DeepseekV4HashRouter, a token-id -> experts
    # table, at mlp.gate where the other MoE layers have DeepseekV4TopKRouter).
    modules = dict(model.named_modules())
    places = {name[len(r.unit) + 1:]: r.logits for name, r in found.items()}
    for unit in units:
        for place, logits in places.items():
            name, (_, _, i) = f"{unit}.{place}", unit.rpartition(".")
            if name not in found and name in modules and i.isdigit() and re.search(
                    r"(Router|Gate|Gating)$", type(modules[name]).__name__):
                found[name] = _Router(unit, int(i), logits)
    if not found:
        raise InputError(f"architecture {arch_name(config)}: the model has no router modules (no "
                         "MoE layers in this configuration)")
    stacks = {r.unit.rpartition(".")[0] for r in found.values()}
    if len(stacks) > 1:
        raise InputError(f"architecture {arch_name(config)}: routers in more than one layer stack "
                         f"({', '.join(sorted(stacks))}); not supported by the routing probe")
    per_layer = Counter(r.layer for r in found.values())
    layer, n = per_layer.most_common(1)[0]
    if n > 1:
        raise InputError(f"architecture {arch_name(config)}: {n} routers in layer {layer}; the "
                         "routing probe expects one per MoE layer")
    return found


def _choice(torch: Any, router: Any, parent: Any, out: Any, config: Any) -> Any:
    """The [tokens, k] expert ids a router's output says the model used."""
    rule = _FROM_LOGITS.get(type(router).__name__)
    if rule is not None:
        index, softmax = rule
        logits = out if index is None else out[index]
        k: Any = getattr(router, "top_k", None) or getattr(parent, "top_k", None)
        if softmax:
            logits = torch.nn.functional.softmax(logits, dim=1, dtype=logits.dtype)
        return torch.topk(logits, int(k), dim=1).indices
    ints = [t for t in (out if isinstance(out, (tuple, list)) else [out])
            if isinstance(t, torch.Tensor) and t.ndim == 2 and not t.is_floating_point()
            and t.dtype != torch.bool]
    if not ints:
        raise InputError(f"architecture {arch_name(config)}: router {type(router).__name__} "
                         "returns no expert ids; the routing probe cannot read its choice")
    return ints[-1]


def _capture(torch: Any, model: Any, loader: _LayerLoader, routers: dict[str, _Router],
             ids: list[int], progress: Progress | None, config: Any) -> dict[int, Routed]:
    """One forward with the layer and router hooks."""
    modules = dict(model.named_modules())
    stack = next(iter(routers.values())).unit.rpartition(".")[0]
    run = [u for u in loader.units if u.rpartition(".")[0] == stack]
    last = max((r.unit for r in routers.values()), key=run.index)
    total = run.index(last) + 1
    choices: dict[int, list[Routed]] = {}
    finished: list[str] = []

    def on_router(name: str) -> Callable[..., None]:
        router = routers[name]
        parent = modules[name.rpartition(".")[0]]

        def hook(module: Any, _args: Any, out: Any) -> None:
            chosen = _choice(torch, module, parent, out, config)
            logits = out[router.logits] if isinstance(out, (tuple, list)) else out
            ids = chosen.detach().to("cpu", torch.int64).reshape(-1, chosen.shape[-1]).numpy()
            choices.setdefault(router.layer, []).append(Routed(ids, int(logits.shape[-1])))
        return hook

    def before(unit: str) -> Callable[..., None]:
        return lambda _module, _args: loader.load(unit)

    def after(unit: str) -> Callable[..., None]:
        def hook(_module: Any, _args: Any, _out: Any) -> None:
            loader.free(unit)
            finished.append(unit)
            if progress is not None:
                progress("probe", min(len(finished), total), total)
            if unit == last:
                raise _Stop
        return hook

    handles = [modules[n].register_forward_hook(on_router(n)) for n in routers]
    for unit, m in loader.units.items():
        handles += [m.register_forward_pre_hook(before(unit)), m.register_forward_hook(after(unit))]
    kwargs: dict[str, Any] = {"input_ids": torch.tensor([ids], dtype=torch.long)}
    if "use_cache" in inspect.signature(model.forward).parameters:
        kwargs["use_cache"] = False
    try:
        with torch.no_grad():
            model(**kwargs)
    except _Stop:
        pass
    except (RuntimeError, NotImplementedError, ValueError, TypeError, IndexError) as e:
        lacks = (f" (the checkpoint has no tensor for {', '.join(loader.missing[:3])})"
                 if loader.missing else "")
        raise InputError(f"architecture {arch_name(config)}: the layer-at-a-time forward failed"
                         f"{lacks}: {first_line(e)}") from e
    finally:
        for h in handles:
            h.remove()
        for unit in loader.units:
            loader.free(unit)
    out = {}
    for layer, calls in choices.items():
        if len(calls) > 1:
            raise InputError(f"architecture {arch_name(config)}: the router of layer {layer} ran "
                             f"{len(calls)} times in one pass (a looped model); not supported")
        if calls[0].ids.shape[0] != len(ids):
            raise InputError(f"architecture {arch_name(config)}: the router of layer {layer} saw "
                             f"{calls[0].ids.shape[0]} tokens, not {len(ids)}")
        out[layer] = calls[0]
    return out
