"""weightvis.kernels imports nothing of weightvis outside itself; its constants load without numba;
every name it re-exports resolves; the one table of reduction rules."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import weightvis.kernels

KERNELS_DIR = Path(weightvis.kernels.__file__).parent
MODULES = sorted(p.stem for p in KERNELS_DIR.glob("*.py") if p.stem != "__init__")


def _run(code: str) -> object:
    """Run ``code`` in a fresh interpreter; it prints one JSON value, which is returned."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


def _outside(module: str) -> str:
    return (f"import importlib, json, sys\n"
            f"importlib.import_module({module!r})\n"
            f"print(json.dumps(sorted(m for m in sys.modules if m.startswith('weightvis.')\n"
            f"                        and not m.startswith('weightvis.kernels'))))\n")


def test_there_are_kernel_modules() -> None:
    assert {"constants", "values", "delta", "reduce", "hilbert", "deflate"} <= set(MODULES)


@pytest.mark.parametrize("name", ["weightvis.kernels"] + [f"weightvis.kernels.{m}"
                                                           for m in MODULES])
def test_kernel_module_imports_nothing_else_of_weightvis(name: str) -> None:
    assert _run(_outside(name)) == []


def test_imports_in_the_source_stay_inside_the_package() -> None:
    """Also the imports inside functions, which importing a module does not run."""
    for path in sorted(KERNELS_DIR.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                assert node.level in (0, 1), f"{path.name}: from {'.' * node.level}{node.module}"
                assert node.level == 1 or not (node.module or "").startswith("weightvis"), \
                    f"{path.name}: from {node.module}"
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    assert not alias.name.startswith("weightvis"), f"{path.name}: {alias.name}"


@pytest.mark.parametrize("name", ["weightvis.color", "weightvis.kernels",
                                  "weightvis.kernels.constants"])
def test_constants_load_without_numba(name: str) -> None:
    assert _run(f"import json, sys, {name}\nprint(json.dumps('numba' in sys.modules))") is False


def test_color_takes_the_constants_from_kernels() -> None:
    from weightvis import color
    from weightvis.kernels import constants

    for name in ("PAD", "NAN", "POSINF", "NEGINF", "ZERO", "LEVELS", "D_NONFINITE", "D_ONLY_A",
                 "D_ONLY_B", "D_BASE_ONLY", "D_GAP", "D_LEVELS"):
        assert getattr(color, name) is getattr(constants, name)
    assert color.level_values is constants.level_values


def test_every_exported_name_resolves_to_its_module() -> None:
    from weightvis import kernels

    for name in kernels.__all__:
        value = getattr(kernels, name)
        module = kernels._LAZY.get(name)
        if module is not None:
            assert value is getattr(sys.modules[f"weightvis.kernels.{module}"], name)
    assert set(kernels.__all__) <= set(dir(kernels))
    with pytest.raises(AttributeError):
        kernels.no_such_kernel  # noqa: B018


def test_one_table_of_reduction_rules() -> None:
    from weightvis import kernels

    rng = np.random.default_rng(5)
    kids = rng.integers(1, 256, (64, 64)).astype(np.uint8)
    kids[:8] = 0
    for mode in (kernels.REDUCE_SIGNED_RMS, kernels.REDUCE_FIRST, kernels.REDUCE_DELTA):
        out = np.zeros((32, 32), np.uint8)
        kernels.reduce_tile(kids, mode, out, (0, 0), 512, 1024)
        assert (out[:4] == kernels.PAD).all() and (out[4:] != kernels.PAD).any()
    first = np.zeros((32, 32), np.uint8)
    kernels.reduce_tile(kids, kernels.REDUCE_FIRST, first)
    np.testing.assert_array_equal(first[4:], kids[8::2, ::2])  # no padding: the top-left child
    quad = np.zeros((64, 64), np.uint8)
    kernels.reduce_tile(kids, kernels.REDUCE_DELTA, quad, (32, 0), 512, 1024 + 32)
    old = np.zeros((64, 64), np.uint8)
    kernels.reduce_delta(kids, 512, 1024 + 32, old, (32, 0))
    np.testing.assert_array_equal(quad, old)
    with pytest.raises(ValueError, match="mode"):
        kernels.reduce_tile(kids, 7, np.zeros((32, 32), np.uint8))
    with pytest.raises(ValueError, match="shapes"):
        kernels.reduce_tile(kids, kernels.REDUCE_FIRST, np.zeros((31, 32), np.uint8))


def test_one_table_of_accumulators() -> None:
    from weightvis import kernels

    for kind, new, size in ((kernels.ACC_VALUES, kernels.new_acc, kernels.ACC_SIZE),
                            (kernels.ACC_DELTA, kernels.new_delta_acc, kernels.DELTA_ACC_SIZE)):
        a = kernels.new_accumulator(kind)
        np.testing.assert_array_equal(a, new())
        assert a.shape == (size,)
        kernels.merge_accumulator(kind, a, new())
        np.testing.assert_array_equal(a, new())
    with pytest.raises(ValueError, match="kind"):
        kernels.new_accumulator(9)
