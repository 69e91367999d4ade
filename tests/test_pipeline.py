"""The pipeline's seams: one orchestration, executors and stores that give byte-identical bundles,
the manifest module, and the import rules (DESIGN.md, "Pipeline")."""

from __future__ import annotations

import ast
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

import weightvis
from weightvis.bundle import build_bundle
from weightvis.errors import BundleError, OutputError
from weightvis.executors import InlineExecutor, LocalPoolExecutor, local_executor
from weightvis.manifest import MANIFEST_VERSION, read_manifest, validate
from weightvis.options import DiffOptions, RenderOptions
from weightvis.store import FolderStore, StagedFolderStore

PKG = Path(weightvis.__file__).parent


def _digest(bundle: Path) -> dict[str, str]:
    files = sorted(p for p in (bundle / "tiles").rglob("*") if p.is_file())
    out = {str(p.relative_to(bundle)): hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    for doc in ("manifest.json", "diff.json"):
        if (bundle / doc).exists():
            out[doc] = hashlib.sha256((bundle / doc).read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Llama-named F32 tensors (with a NaN, an Inf and a bf16-free mix) big enough for several
    leaf tiles and subtrees."""
    rng = np.random.default_rng(11)
    t: dict[str, np.ndarray] = {"model.embed_tokens.weight":
                                rng.standard_normal((1500, 96)).astype(np.float32)}
    for i in range(4):
        for k, shape in {"self_attn.q_proj": (96, 96), "self_attn.k_proj": (48, 96),
                         "mlp.up_proj": (700, 96), "mlp.down_proj": (96, 700)}.items():
            t[f"model.layers.{i}.{k}.weight"] = (rng.standard_normal(shape)
                                                 * (i + 1)).astype(np.float32)
        t[f"model.layers.{i}.input_layernorm.weight"] = np.ones(96, np.float32)
    t["model.layers.1.mlp.up_proj.weight"][3, 5] = np.nan
    t["model.layers.2.mlp.down_proj.weight"][7, 1] = np.inf
    d = tmp_path_factory.mktemp("ck")
    save_file(t, str(d / "model.safetensors"))
    t2 = dict(t)
    t2["model.layers.3.mlp.up_proj.weight"] = t["model.layers.3.mlp.up_proj.weight"] + 0.5
    save_file(t2, str(d / "b.safetensors"))
    return d / "model.safetensors"


@pytest.mark.parametrize("layout", ["arch", "hilbert"])
def test_executors_and_stores_give_identical_bundles(checkpoint: Path, tmp_path: Path,
                                                     layout: str) -> None:
    a = weightvis.render([checkpoint], tmp_path / "inline", layout=layout,  # type: ignore[arg-type]
                         executor=InlineExecutor())
    b = weightvis.render([checkpoint], tmp_path / "pool", layout=layout,  # type: ignore[arg-type]
                         executor=LocalPoolExecutor(2))
    c = weightvis.render([checkpoint], tmp_path / "folder", layout=layout,  # type: ignore[arg-type]
                         executor=LocalPoolExecutor(2), store=FolderStore(tmp_path / "folder"))
    da, db, dc = _digest(a.out), _digest(b.out), _digest(c.out)
    assert len(da) >= 5 and da == db == dc
    assert a.tiles_written == b.tiles_written == c.tiles_written
    # the folder store leaves no temporary tile names behind
    assert not [p for p in (tmp_path / "folder").rglob(".*.tmp")]


def test_diff_identical_across_executors(checkpoint: Path, tmp_path: Path) -> None:
    b_file = checkpoint.parent / "b.safetensors"
    kw = {"scenes": ("a", "b", "delta")}
    a = weightvis.render_diff([checkpoint], [b_file], tmp_path / "i", executor=InlineExecutor(),
                              **kw)  # type: ignore[arg-type]
    b = weightvis.render_diff([checkpoint], [b_file], tmp_path / "p",
                              executor=LocalPoolExecutor(2), **kw)  # type: ignore[arg-type]
    assert _digest(a.out) == _digest(b.out)
    assert [s["key"] for s in a.manifest["scenes"]] == ["delta", "a", "b"]
    changed = {p["name"] for p in a.diff["pairs"] if p["status"] == "changed"}
    assert changed == {"model.layers.3.mlp.up_proj.weight"}


def test_failed_scene_aborts_the_store(checkpoint: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    from weightvis import painters

    def boom(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(painters.ValuesPainter, "rect", boom)
    for store in (StagedFolderStore(tmp_path / "s"), FolderStore(tmp_path / "f")):
        with pytest.raises(OSError, match="No space"):
            weightvis.render([checkpoint], store.out, executor=InlineExecutor(), store=store)
        assert not store.out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_build_bundle_is_the_one_path(checkpoint: Path, tmp_path: Path) -> None:
    """render() is plan + build_bundle: the same plan built by hand gives the same bundle."""
    from weightvis.formats import open_checkpoint
    from weightvis.scenes import plan_render

    ref = weightvis.render([checkpoint], tmp_path / "ref", executor=InlineExecutor())
    reader = open_checkpoint([str(checkpoint)])
    ticks: list[str] = []
    plan = plan_render(reader, [str(checkpoint)], RenderOptions(), InlineExecutor(),
                       lambda s, n, t: ticks.append(s))
    res = build_bundle(plan, StagedFolderStore(tmp_path / "mine"), InlineExecutor(),
                       lambda s, n, t: ticks.append(s))
    reader.close()
    assert _digest(res.out) == _digest(ref.out)
    assert "scales" in ticks and "tiles" in ticks


def test_options_are_validated_once() -> None:
    with pytest.raises(ValueError, match="layout"):
        RenderOptions(layout="spiral")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="tile format"):
        RenderOptions(tile_format="gif")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="delta"):
        DiffOptions(scenes=("a", "b"))
    with pytest.raises(ValueError, match="metric"):
        DiffOptions(metric="l2")  # type: ignore[arg-type]
    assert DiffOptions(scenes=("b", "delta", "a")).scenes == ("delta", "a", "b")
    with pytest.raises(AttributeError):
        RenderOptions().layout = "hilbert"  # type: ignore[misc]
    assert isinstance(local_executor(1), InlineExecutor)
    assert isinstance(local_executor(3), LocalPoolExecutor)


def test_manifest_read_and_validate(checkpoint: Path, tmp_path: Path) -> None:
    res = weightvis.render([checkpoint], tmp_path / "b", executor=InlineExecutor())
    doc = read_manifest(res.out)
    assert doc["version"] == MANIFEST_VERSION and doc["scenes"][0]["key"] == "main"
    broken = dict(doc)
    del broken["tensors"]
    with pytest.raises(BundleError, match="lacks tensors"):
        validate(broken, "x")
    with pytest.raises(BundleError, match="version 99"):
        validate({**doc, "version": 99}, "x")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "manifest.json").write_text("{", "utf-8")
    with pytest.raises(BundleError, match="not valid JSON"):
        read_manifest(tmp_path / "junk")
    with pytest.raises(OutputError, match="not a weightvis bundle"):
        StagedFolderStore(tmp_path / "junk")


_NO_NUMPY = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('numpy', 'numba', 'PIL', 'safetensors', 'gguf', 'torch'):
            raise ImportError('blocked: ' + name)
sys.meta_path.insert(0, Block())
from weightvis.cli import main
code = main(['--regen-html', sys.argv[1]])
assert not [m for m in sys.modules if m.split('.')[0] in ('numpy', 'numba')], 'numpy loaded'
sys.exit(code)
"""


def test_regen_html_runs_without_numpy(checkpoint: Path, tmp_path: Path) -> None:
    res = weightvis.render([checkpoint], tmp_path / "b", executor=InlineExecutor())
    (res.out / "index.html").unlink()
    r = subprocess.run([sys.executable, "-c", _NO_NUMPY, str(res.out)], capture_output=True,
                       text=True, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    html = (res.out / "index.html").read_text("utf-8")
    assert "weightvis-manifest" in html and "model.layers.3.mlp.up_proj.weight" in html


def _imports_of(module: str) -> set[str]:
    code = (f"import sys, {module}; print('\\n'.join(m for m in sys.modules "
            "if m.startswith('weightvis')))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(r.stdout.split())


def test_import_rules() -> None:
    # layout and the name index never import readers or the pyramid
    for mod in ("weightvis.layout", "weightvis.index"):
        bad = {m for m in _imports_of(mod)
               if m.startswith(("weightvis.formats", "weightvis.pyramid", "weightvis.bundle",
                                "weightvis.painters", "weightvis.executors"))}
        assert not bad, f"{mod} imports {bad}"
    # the manifest, options, stores and the page writer are numpy-free
    for mod in ("weightvis.manifest", "weightvis.options", "weightvis.store", "weightvis.regen"):
        code = f"import sys, {mod}; sys.exit('numpy' in sys.modules)"
        assert subprocess.run([sys.executable, "-c", code]).returncode == 0, mod
    # kernels import nothing of weightvis outside the kernels package
    kern = [p for p in (PKG / "kernels").rglob("*.py")] if (PKG / "kernels").is_dir() \
        else [PKG / "kernels.py"]
    for path in kern:
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= 1 or path.parent.name != "kernels", \
                    f"{path.name} imports from outside kernels"
                assert not (node.module or "").startswith("weightvis") or \
                    (node.module or "").startswith("weightvis.kernels"), path.name


def test_nothing_below_the_cli_prints() -> None:
    for path in PKG.rglob("*.py"):
        if path.name == "cli.py" and path.parent == PKG:
            continue
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "print", f"{path.relative_to(PKG)}:{node.lineno} prints"
            if isinstance(node, ast.Attribute) and node.attr in ("stdout", "stderr"):
                assert not (isinstance(node.value, ast.Name) and node.value.id == "sys"), \
                    f"{path.relative_to(PKG)}:{node.lineno} writes to sys.{node.attr}"


def test_pyramid_has_no_mode_branches() -> None:
    """The pyramid never asks what a scene shows: no comparison with a mode or layout name."""
    tree = ast.parse((PKG / "pyramid.py").read_text("utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            consts = [c.value for c in [node.left, *node.comparators]
                      if isinstance(c, ast.Constant) and isinstance(c.value, str)]
            assert not consts, f"pyramid.py:{node.lineno} compares with {consts}"


def test_manifest_json_is_what_index_html_inlines(checkpoint: Path, tmp_path: Path) -> None:
    res = weightvis.render([checkpoint], tmp_path / "b", executor=InlineExecutor())
    html = (res.out / "index.html").read_text("utf-8")
    start = html.index('id="weightvis-manifest">') + len('id="weightvis-manifest">')
    inlined = json.loads(html[start:html.index("</script>", start)])
    assert inlined == json.loads((res.out / "manifest.json").read_text("utf-8"))


class _SpawnedTasks(LocalPoolExecutor):
    """A stand-in for a distributed executor: every subtree is ``pyramid.subtree_task`` in a
    freshly *spawned* process (nothing inherited: the task's pickled inputs are all it has)."""

    def run_subtrees(self, job, roots, *, reader=None, meanwhile=None):  # type: ignore[no-untyped-def]
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        from weightvis.pyramid import subtree_task

        with ProcessPoolExecutor(2, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(subtree_task, job, r) for r in roots]
            if meanwhile is not None:
                meanwhile()
            for f in as_completed(futures):
                yield f.result()


@pytest.mark.slow
def test_subtree_tasks_need_no_process_state(checkpoint: Path, tmp_path: Path) -> None:
    ref = weightvis.render([checkpoint], tmp_path / "ref", executor=InlineExecutor())
    got = weightvis.render([checkpoint], tmp_path / "spawned", executor=_SpawnedTasks(2))
    assert _digest(got.out) == _digest(ref.out)


def test_option_metric_codes_are_the_kernels() -> None:
    from weightvis.kernels import constants as k
    from weightvis.options import METRICS

    assert METRICS == {"rms": k.METRIC_RMS, "abs-log": k.METRIC_ABSLOG, "exact": k.METRIC_EXACT}


def test_vectorised_stats_equal_the_per_tensor_ones() -> None:
    from weightvis.values import stats_from_acc, stats_json_many

    rng = np.random.default_rng(2)
    accs = []
    for k in range(300):
        n = float(rng.integers(0, 3)) if k % 7 == 0 else float(rng.integers(1, 10**6))
        tot = float(rng.normal() * 10.0 ** rng.integers(-30, 30))
        tot2 = abs(tot) * float(rng.uniform(0, 2e3)) if k % 11 else tot * tot / max(n, 1.0)
        accs.append([n, tot, tot2, float(rng.normal()), float(rng.normal()),
                     float(rng.integers(0, 5)), float(rng.integers(0, 3)),
                     float(rng.integers(0, 3))])
    accs += [[4.0, math.inf, math.inf, -math.inf, math.inf, 0.0, 1.0, 2.0],  # (infinities:
             [2.0, -math.inf, 1.0, -math.inf, 3.0, 1.0, 0.0, 1.0],          # None in the JSON)
             [3.0, 1.0, math.nan, math.nan, math.nan, 0.0, 3.0, 0.0]]
    accs_a = np.array(accs, np.float64)
    numels = rng.integers(0, 10**7, len(accs))
    numels[::13] = 0
    robusts = rng.uniform(0, 3, len(accs))
    robusts[::17] = np.nan
    want = [stats_from_acc(a, int(m), float(r)).to_json()
            for a, m, r in zip(accs_a, numels, robusts, strict=True)]
    got = stats_json_many(accs_a, numels, robusts)
    assert json.dumps(got) == json.dumps(want)
    assert got[-3]["min"] is None and got[-3]["max"] is None and got[-2]["mean"] is None
    assert all(type(g["nan_count"]) is int and type(g["inf_count"]) is int for g in got)


def test_manifest_parts_made_meanwhile_fail_like_the_others(
        checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capfd: pytest.CaptureFixture[str]) -> None:
    """The manifest's static parts are made in a thread while the pool draws the tiles: a
    failure there is made again by ``finish`` (here it fails once: the bundle is the same as
    without a pool), or reported from there (here it always fails) - never printed by the
    thread."""
    from weightvis import scenes
    from weightvis.errors import InputError

    ref = weightvis.render([checkpoint], tmp_path / "ref", executor=InlineExecutor())
    real = scenes.file_gguf_names
    calls: list[str] = []

    def once(*args: object) -> dict[str, str]:
        calls.append("x")
        if len(calls) == 1:
            raise InputError(f"{checkpoint}: names that cannot be read")
        return real(*args)  # type: ignore[arg-type]

    monkeypatch.setattr(scenes, "file_gguf_names", once)
    got = weightvis.render([checkpoint], tmp_path / "pool", executor=LocalPoolExecutor(2))
    assert len(calls) == 2 and _digest(got.out) == _digest(ref.out)

    def always(*args: object) -> dict[str, str]:
        raise InputError(f"{checkpoint}: names that cannot be read")

    monkeypatch.setattr(scenes, "file_gguf_names", always)
    capfd.readouterr()
    with pytest.raises(InputError, match="names that cannot be read"):
        weightvis.render([checkpoint], tmp_path / "bad", executor=LocalPoolExecutor(2))
    assert not (tmp_path / "bad").exists()
    assert "Traceback" not in capfd.readouterr().err
