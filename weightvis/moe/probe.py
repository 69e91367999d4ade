"""Routing probe: which experts each router of a Mixture-of-Experts model picks for a short text
(issue 12 item 6; MOE.md section 4 of the project brief).

The text - the bundled ``probe_text.txt`` or a caller's, tokenized with the model directory's
tokenizer - or exact token ids run through the model with transformers, one decoder layer's
weights in memory at a time (``layerwise.py``); hooks on the routers record each token's top-k
experts, counted here into routing frequencies and co-activations per MoE layer.
Needs the ``probe`` extra (torch + transformers). Nothing is downloaded (``local_files_only``) and
no code from the model directory runs (``trust_remote_code=False``).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError, MissingExtraError
from .layerwise import Routed, arch_name, first_line, route

__all__ = ["probe_routing", "probe_choices", "default_probe_text", "MAX_TOKENS_ENV",
           "DEFAULT_MAX_TOKENS"]

# the probe runs its tokens as one sequence (attention is quadratic in it): a limit, as an option
MAX_TOKENS_ENV = "WEIGHTVIS_PROBE_MAX_TOKENS"
DEFAULT_MAX_TOKENS = 8192

Progress = Callable[[str, int, int], None]


def default_probe_text() -> str:
    """The bundled probe text: a few hundred tokens of plain English prose."""
    return resources.files(__package__).joinpath("probe_text.txt").read_text(encoding="utf-8")


def probe_routing(model_dir: Path, *, text: str | None = None,
                  tokens: Sequence[int] | None = None, moe_layers: Sequence[int] | None = None,
                  progress: Progress | None = None) -> dict[str, Any]:
    """Run ``text`` (default: the bundled text, tokenized with the model directory's tokenizer,
    special tokens as the tokenizer adds them) or the exact token ids ``tokens`` through the model
    in ``model_dir`` (a local transformers model directory: config.json + safetensors) and count
    each router's top-k choice per token.

    Returns ``{"tokens": T, "top_k": k, "layers": [MoE layer ids, ascending], "freq": rows x E
    (fraction of the T tokens routed to each expert; a row sums to k), "coact": {str(layer):
    E x E (fraction of the tokens routed to both i and j; diagonal = freq)}}``. With ``moe_layers``
    (the rows of the weight summary) the routers found must sit in exactly those layers.
    ``progress("probe", n, total)`` is called as decoder layers finish."""
    choices = probe_choices(model_dir, text=text, tokens=tokens, progress=progress)
    return _tally(choices, moe_layers, Path(model_dir))


def probe_choices(model_dir: Path, *, text: str | None = None,
                  tokens: Sequence[int] | None = None, progress: Progress | None = None
                  ) -> dict[int, Routed]:
    """The experts each token was routed to, per MoE layer (``probe_routing`` before counting)."""
    if text is not None and tokens is not None:
        raise InputError("the routing probe takes a text or token ids, not both")
    tf = _require_extra()
    model_dir = Path(model_dir)
    config = _read_config(tf, model_dir)
    files = _safetensors_files(model_dir)
    limit = _max_tokens()
    with _quiet(tf):
        ids = (_check_tokens(tokens, limit, model_dir) if tokens is not None
               else _tokenize(tf, model_dir, default_probe_text() if text is None else text,
                              limit))
        return route(config, files, ids, model_dir, progress)


# ---------------------------------------------------------------------------------------------
# inputs

def _require_extra() -> Any:
    try:
        importlib.import_module("torch")
        return importlib.import_module("transformers")
    except ImportError as e:
        raise MissingExtraError(e.name or "transformers", "probe", "the routing probe") from e


def _read_config(tf: Any, model_dir: Path) -> Any:
    path = model_dir / "config.json"
    if not path.is_file():
        raise InputError(f"{model_dir}: the routing probe needs a local model directory with "
                         "config.json (a transformers checkpoint)")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{path}: unreadable ({first_line(e)})") from e
    if not isinstance(raw, dict):
        raise InputError(f"{path}: not a JSON object")
    quant = raw.get("quantization_config")
    if quant:
        method = quant.get("quant_method", "?") if isinstance(quant, dict) else quant
        raise InputError(f"{path}: quantized checkpoint (quant_method {method!r}); the routing "
                         "probe runs unquantized weights only")
    try:
        config = tf.AutoConfig.from_pretrained(str(model_dir), local_files_only=True,
                                               trust_remote_code=False)
    except (ValueError, KeyError, OSError, TypeError, AttributeError) as e:
        raise InputError(f"{path}: transformers has no model type {raw.get('model_type')!r} "
                         f"({first_line(e)})") from e
    if getattr(config, "is_encoder_decoder", False):
        raise InputError(f"{path}: architecture {arch_name(config)} is an encoder-decoder; the "
                         "routing probe runs decoder-only models")
    return config


def _safetensors_files(model_dir: Path) -> list[Path]:
    index = model_dir / "model.safetensors.index.json"
    if index.is_file():
        try:
            names = sorted(set(json.loads(index.read_text(encoding="utf-8"))["weight_map"]
                               .values()))
        except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError,
                AttributeError) as e:
            raise InputError(f"{index}: unreadable shard index ({first_line(e)})") from e
        for n in names:
            if not isinstance(n, str) or Path(n).name != n or not (model_dir / n).is_file():
                raise InputError(f"{index}: shard {n!r} is not a file in {model_dir}")
        return [model_dir / n for n in names]
    if (model_dir / "model.safetensors").is_file():
        return [model_dir / "model.safetensors"]
    raise InputError(f"{model_dir}: no model.safetensors (or model.safetensors.index.json); the "
                     "routing probe reads safetensors checkpoints only")


def _max_tokens() -> int:
    raw = os.environ.get(MAX_TOKENS_ENV, "")
    if not raw:
        return DEFAULT_MAX_TOKENS
    if not raw.isdigit() or int(raw) < 1:
        raise InputError(f"{MAX_TOKENS_ENV}={raw!r}: expected a positive number of tokens")
    return int(raw)


def _check_tokens(tokens: Sequence[int], limit: int, where: object) -> list[int]:
    ids = list(tokens)
    if not ids:
        raise InputError(f"{where}: no probe tokens")
    for t in ids:
        if not isinstance(t, (int, np.integer)) or isinstance(t, bool) or t < 0:
            raise InputError(f"{where}: probe token {t!r} is not a non-negative integer id")
    if len(ids) > limit:
        raise InputError(f"{where}: {len(ids)} probe tokens, more than {limit} "
                         f"(raise {MAX_TOKENS_ENV})")
    return [int(t) for t in ids]


def _tokenize(tf: Any, model_dir: Path, text: str, limit: int) -> list[int]:
    try:
        tok = tf.AutoTokenizer.from_pretrained(str(model_dir), local_files_only=True,
                                               trust_remote_code=False)
        ids = tok(text)["input_ids"]
    except (ValueError, OSError, KeyError, TypeError, AttributeError, ImportError) as e:
        raise InputError(f"{model_dir}: no usable tokenizer ({first_line(e)}); give exact "
                         "token ids instead (--probe-tokens)") from e
    return _check_tokens(ids, limit, f"{model_dir}: probe text")


@contextmanager
def _quiet(tf: Any) -> Iterator[None]:
    """transformers' progress bars and warnings off (nothing below the CLI prints)."""
    log = tf.utils.logging
    verbosity, bars = log.get_verbosity(), log.is_progress_bar_enabled()
    log.set_verbosity(logging.ERROR)
    log.disable_progress_bar()
    try:
        yield
    finally:
        log.set_verbosity(verbosity)
        if bars:
            log.enable_progress_bar()


def _tally(choices: dict[int, Routed], moe_layers: Sequence[int] | None, model_dir: Path
           ) -> dict[str, Any]:
    """Frequencies and co-activations, as MOE.md section 4.5 defines them: with one-hot rows
    [tokens, E], freq = onehot.sum(0) / T and coact = onehot.T @ onehot / T."""
    layers = sorted(choices)
    if moe_layers is not None and sorted(moe_layers) != layers:
        raise InputError(f"{model_dir}: transformers routes in layers {layers}, the checkpoint's "
                         f"MoE layers are {sorted(moe_layers)}")
    n_tokens = choices[layers[0]].ids.shape[0]
    experts = max(max(r.experts, int(r.ids.max()) + 1) for r in choices.values())
    freq, coact = [], {}
    for layer in layers:
        onehot = np.zeros((n_tokens, experts), dtype=np.int64)
        np.put_along_axis(onehot, choices[layer].ids, 1, axis=1)
        freq.append((onehot.sum(axis=0) / n_tokens).tolist())
        coact[str(layer)] = (onehot.T @ onehot / n_tokens).tolist()
    top_k = Counter(r.ids.shape[1] for r in choices.values()).most_common(1)[0][0]
    return {"tokens": n_tokens, "top_k": top_k, "layers": layers, "freq": freq, "coact": coact}
