"""Per-tensor costs are O(1) amortised: lookups by name, lists built once, placements built once,
release visiting only what was read, and the small-sample scale path equal to the histogram
path (the scale of a tiny tensor must not cost a 32,768-bin histogram)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from weightvis.formats import open_checkpoint
from weightvis.formats.base import Reader
from weightvis.formats.safetensors import write_safetensors
from weightvis.types import TensorInfo
from weightvis.values import SORT_BELOW, numpy_code_counts, robust_scale_codes


def _moe(path: Path, experts: int, layers: int = 3, shards: int = 2) -> list[Path]:
    """A tiny DeepSeek-named checkpoint (``layers`` x ``experts`` x 3 expert tensors)."""
    rng = np.random.default_rng(0)
    names = [f"model.layers.{n}.mlp.experts.{e}.{k}_proj.weight"
             for n in range(layers) for e in range(experts) for k in ("gate", "up", "down")]
    names += [f"model.layers.{n}.input_layernorm.weight" for n in range(layers)]
    names += ["model.embed_tokens.weight"]
    per = -(-len(names) // shards)
    files = []
    for k in range(shards):
        spec = {}
        for n in names[k * per:(k + 1) * per]:
            shape = (8,) if "norm" in n else (4, 8)
            codes = (rng.standard_normal(int(np.prod(shape))).astype(np.float32)
                     .view(np.uint32) >> 16).astype(np.uint16)
            spec[n] = ("BF16", shape, codes)
        f = path / f"model-{k + 1:05d}-of-{shards:05d}.safetensors"
        write_safetensors(f, spec)
        files.append(f)
    return files


class _Counting(Reader):
    def __init__(self, ts: Sequence[TensorInfo]) -> None:
        self.ts, self.calls = list(ts), 0

    def tensors(self) -> Sequence[TensorInfo]:
        self.calls += 1
        return list(self.ts)

    def read(self, name: str, e_r0: int, e_r1: int, e_c0: int = 0,
             e_c1: int | None = None) -> np.ndarray:
        raise NotImplementedError


def test_base_info_builds_its_map_once() -> None:
    r = _Counting([TensorInfo(f"t{i}", (2, 3), "F32", "f") for i in range(1000)])
    for i in range(1000):
        assert r.info(f"t{i}").name == f"t{i}"
    assert r.calls == 1
    with pytest.raises(KeyError):
        r.info("nope")


def test_readers_list_once_and_look_up_by_name(tmp_path: Path) -> None:
    files = _moe(tmp_path, experts=8)
    with open_checkpoint(files) as r:
        for sub in r.readers:
            assert sub.tensors() is sub.tensors()
        names = [t.name for t in r.tensors()]
        assert r.info(names[-1]) == r.tensors()[-1]
        for n in names:
            assert r.info(n).name == n


def test_release_visits_only_the_readers_read(tmp_path: Path) -> None:
    files = _moe(tmp_path, experts=4, shards=3)
    with open_checkpoint(files) as r:
        seen: list[int] = []
        for i, sub in enumerate(r.readers):
            sub.release = (lambda i=i: seen.append(i))  # type: ignore[method-assign]
        first = r.readers[0].tensors()[0].name
        r.read_codes(first, 0, 1)
        r.release()
        assert seen == [0]
        r.release()
        assert seen == [0]
        last = r.readers[2].tensors()[-1].name
        r.read(last, 0, 1)
        r.read(first, 0, 1)
        r.release()
        assert sorted(seen) == [0, 0, 2]


def test_arch_layout_places_each_tensor_once(tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    import weightvis.layout.arch as arch

    made = 0
    real = arch.Placement

    def counting(*a: object) -> object:
        nonlocal made
        made += 1
        return real(*a)  # type: ignore[arg-type]

    monkeypatch.setattr(arch, "Placement", counting)
    ts = [TensorInfo(f"model.layers.{n}.mlp.experts.{e}.up_proj.weight", (4, 8), "BF16", "f")
          for n in range(40) for e in range(16)]
    lay = arch.arch_layout(ts)
    assert len(lay.placements) == len(ts)
    assert made == len(ts)  # not once per candidate column count


@pytest.mark.parametrize("dtype", ["BF16", "F16"])
def test_small_samples_scale_like_the_histogram(dtype: str) -> None:
    rng = np.random.default_rng(5)
    specials = np.array([0, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0x7C00, 0xFC00, 0x7E00, 1, 0x8001],
                        np.uint16)
    for trial in range(400):
        n = int(rng.integers(1, SORT_BELOW))
        if trial % 4 == 0:
            codes = rng.integers(0, 1 << 16, n).astype(np.uint16)
        elif trial % 4 == 1:
            codes = rng.choice(specials, n)
        elif trial % 4 == 2:
            codes = np.full(n, rng.integers(0, 1 << 16), np.uint16)
        else:
            x = rng.standard_normal(n).astype(np.float32) * np.float32(10.0 ** rng.integers(-6, 3))
            codes = (x.view(np.uint32) >> 16).astype(np.uint16) if dtype == "BF16" \
                else x.astype(np.float16).view(np.uint16)
        small = robust_scale_codes(codes, dtype, numpy_code_counts)  # the sort path
        v = _values(codes, dtype)
        a = np.abs(v[np.isfinite(v)])
        want = 1.0 if a.size == 0 else float(np.quantile(a, 0.999))  # values.robust_scale's rule
        if a.size and not want > 0:
            want = float(a.max()) if a.max() > 0 else 1.0
        assert small == want, (trial, n, small, want)
    # the histogram path agrees on a sample just over the threshold
    codes = rng.integers(0, 1 << 16, SORT_BELOW + 1).astype(np.uint16)
    v = _values(codes, dtype)
    a = np.abs(v[np.isfinite(v)])
    assert robust_scale_codes(codes, dtype, numpy_code_counts) == float(np.quantile(a, 0.999))


def _values(codes: np.ndarray, dtype: str) -> np.ndarray:
    with np.errstate(invalid="ignore"):  # signalling NaNs are quieted by the cast
        if dtype == "BF16":
            return (codes.astype(np.uint32) << 16).view(np.float32).astype(np.float64)
        return codes.view(np.float16).astype(np.float64)


def test_open_list_and_look_up_scale_linearly(tmp_path: Path) -> None:
    """Opening, listing, looking up, reading and releasing every tensor: 4x the tensors costs
    < 10x the time (a quadratic step costs 16x). Small and big runs alternate, best of five, to
    ride out a noisy machine."""
    small_dir, big_dir = tmp_path / "s", tmp_path / "b"
    small_dir.mkdir()
    big_dir.mkdir()
    small, big = _moe(small_dir, experts=100), _moe(big_dir, experts=400)

    def run(files: list[Path]) -> float:
        t0 = time.perf_counter()
        with open_checkpoint(files) as r:
            for t in r.tensors():
                r.info(t.name)
                r.read_codes(t.name, 0, 1)
                r.release()
        return time.perf_counter() - t0

    best_small = best_big = float("inf")
    for _ in range(5):
        best_small = min(best_small, run(small))
        best_big = min(best_big, run(big))
    assert best_big < 10 * best_small, (best_big, best_small)


@pytest.mark.parametrize("dtype", ["BF16", "F16"])
def test_small_samples_rms_like_the_histogram(dtype: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import weightvis.values as values

    rng = np.random.default_rng(6)
    samples = [rng.integers(0, 1 << 16, int(rng.integers(1, SORT_BELOW))).astype(np.uint16)
               for _ in range(100)]
    samples += [np.array([0, 0x8000, 0x7F80, 0x7C00, 0xFC00, 0x3F80], np.uint16)]
    small = [values.codes_rms(c, dtype) for c in samples]
    monkeypatch.setattr(values, "SORT_BELOW", 0)  # everything through the histogram
    assert small == [values.codes_rms(c, dtype) for c in samples]  # bit for bit


def test_is_bundle_reads_a_weightvis_manifest_by_its_head(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``--overwrite`` asks twice whether ``--out`` is a bundle: a manifest weightvis wrote is
    recognised by its opening bytes (a 45k-tensor one is 40 MB); any other is parsed whole."""
    from weightvis import manifest

    def folder(name: str, text: str) -> Path:
        (tmp_path / name).mkdir()
        (tmp_path / name / "manifest.json").write_text(text, "utf-8")
        return tmp_path / name

    ours = folder("ours", manifest.dumps({**manifest.manifest_head("t", "png"),
                                          "tensors": {f"t{i}": {} for i in range(50_000)}}))
    later = folder("later", '{"version": 1, "format": "weightvis-bundle"}')
    theirs = [folder("other", '{"format": "weightvis-bundlex", "version": 1}'),
              folder("list", '["weightvis-bundle"]'), folder("junk", "{"),
              folder("late", '{"x": 1' + " " * 5000 + ', "format": "weightvis-bundle"')]
    assert all(manifest.is_bundle(p) for p in (ours, later))
    assert not any(manifest.is_bundle(p) for p in theirs)

    parsed: list[int] = []
    real = manifest.json.loads
    monkeypatch.setattr(manifest.json, "loads", lambda s: parsed.append(len(s)) or real(s))
    assert manifest.is_bundle(ours) and parsed == []
    assert manifest.is_bundle(later) and len(parsed) == 1


def test_drawing_order_leaves_out_what_a_helper_has() -> None:
    """The scale helper of the big tensors gets them in the order the workers draw them, the
    tiny tensors another helper has left out before ordering (the same order for the rest)."""
    from weightvis.layout.arch import arch_layout
    from weightvis.tiling import Geometry, SceneJob

    ts = [TensorInfo(f"model.layers.{n}.mlp.experts.{e}.up_proj.weight", (4, 8), "BF16", "f")
          for n in range(8) for e in range(64)]
    ts += [TensorInfo(f"model.layers.{n}.self_attn.o_proj.weight", (300, 700), "BF16", "f")
           for n in range(8)]
    job = SceneJob(None, "main", Geometry(arch_layout(ts)), {}, None, "png", None,
                   prefetch=tuple(t.name for t in reversed(ts)))
    small = frozenset(t.name for t in ts if t.numel < 100)
    full = job.drawing_order(2)
    assert sorted(full) == sorted(job.prefetch)
    got = job.drawing_order(2, small)
    assert got == [n for n in full if n not in small] and len(got) == 8


def test_an_index_read_once_per_process_its_shards_checked_each_time(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tile worker forked after the checkpoint was opened does not parse its index again
    (DeepSeek-V3's is 9 MB); a shard turned into a link out of the folder is still refused."""
    import weightvis.formats as formats
    from weightvis.errors import FormatError

    from .trust_fixtures import sharded_folder, st_file

    folder = sharded_folder(tmp_path / "ck")
    parsed: list[str] = []
    real = formats.load_json
    monkeypatch.setattr(formats, "load_json", lambda text, *a, **k: parsed.append(text) or
                        real(text, *a, **k))
    first = [t.name for t in open_checkpoint([str(folder)]).tensors()]
    assert len(parsed) == 1
    assert [t.name for t in open_checkpoint([str(folder)]).tensors()] == first
    assert len(parsed) == 1  # (the index's shard names: from this process's first read)
    shard = sorted(folder.glob("*.safetensors"))[0]
    secret = st_file(tmp_path / "secret.safetensors", {"secret.weight": ("F32", (2, 2))})
    shard.unlink()
    shard.symlink_to(secret)
    with pytest.raises(FormatError, match="resolves outside"):
        open_checkpoint([str(folder)])


def test_gguf_name_shapes_are_found_once_per_key() -> None:
    """The shape of a name (block and expert indices as ``#``) is found once per pattern of
    digits; names whose digit runs are not all indices (``007``, ten digits) are each looked
    at: every shape is the regular expression's."""
    import random

    from weightvis import gguf_names

    rng = random.Random(4)
    runs = ["0", "7", "10", "100", "007", "05", "1234567890", "999999999", "3"]
    names = [f"model.layers.{rng.choice(runs)}.mlp.experts.{rng.choice(runs)}.w{rng.choice(runs)}"
             for _ in range(3000)] + ["", "x", "é.1.ü", "a\ud800.12", "٣.4"]
    got = list(gguf_names._shapes(names))
    assert got == [(n, gguf_names._BID.sub("#", n)) for n in names]


def test_geometry_indexes_each_placements_leaf_tiles() -> None:
    """Geometry's leaf index (one-tile fast path and all) is the tiles each placement's
    rectangle meets, placements ascending per tile, tiles in first-met order; an empty
    rectangle meets none (or the one its corner lies in, as the plain loops gave)."""
    from weightvis.tiling import Geometry
    from weightvis.types import Placement, SceneLayout

    rng = np.random.default_rng(5)
    tile = 16
    ps = []
    for k in range(400):
        h, w = (int(rng.integers(0, 3)), int(rng.integers(0, 3))) if k % 9 == 0 else (
            int(rng.integers(1, 40)), int(rng.integers(1, 40)))
        ps.append(Placement(f"t{k}", int(rng.integers(0, 200)), int(rng.integers(0, 200)),
                            3, 3 + h, 1, 1 + w))
    lay = SceneLayout("arch", 260, 260, tuple(ps), (), {})
    want: dict[tuple[int, int], list[int]] = {}
    for i, p in enumerate(ps):
        for t_y in range(p.c_y // tile, (p.c_y + p.c_h - 1) // tile + 1):
            for t_x in range(p.c_x // tile, (p.c_x + p.c_w - 1) // tile + 1):
                want.setdefault((t_x, t_y), []).append(i)
    geo = Geometry(lay, tile)
    assert list(geo.leaf_placements.items()) == list(want.items())
    assert geo.occupied[geo.max_zoom] == set(want)
    assert any(len(v) > 1 for v in want.values()) and any(
        p.c_w > tile for p in ps)  # (the test meets multi-tile rectangles and shared tiles)


def test_plan_hands_the_helper_the_tiny_16_bit_tensors(tmp_path: Path) -> None:
    """The scale helper is told of every tensor and asked to compute the BF16/F16 ones of
    0 < numel < SORT_BELOW (small_scales' kind); the plan's value bytes pick the sidecars."""
    from weightvis.executors import InlineExecutor
    from weightvis.options import RenderOptions
    from weightvis.scenes import plan_render

    class Recording(InlineExecutor):
        got: list[tuple[tuple[str, ...], list[str]]] = []

        @property
        def in_other_processes(self) -> bool:
            return True

        def start_scales(self, spec: object, names: Sequence[str],
                         small: Sequence[str]) -> None:
            self.got.append((tuple(names), list(small)))

    side = int(np.ceil(np.sqrt(SORT_BELOW)))  # side * side >= SORT_BELOW > (side - 1) * side
    spec = {"a": ("BF16", (4, 8)), "big": ("BF16", (side, side)), "b": ("F16", (side - 1, side)),
            "f": ("F32", (4, 8)), "empty": ("BF16", (0, 8)), "c": ("BF16", (3,))}
    f = tmp_path / "m.safetensors"
    write_safetensors(f, {n: (d, s, np.zeros(s, np.uint16 if d != "F32" else np.float32))
                          for n, (d, s) in spec.items()})
    r = open_checkpoint([f])
    ex = Recording()
    nbytes = sum(int(np.prod(s)) * (4 if d == "F32" else 2) for d, s in spec.values())
    for limit, want in ((nbytes / 1e6, "values"), ((nbytes - 1) / 1e6, "index")):
        plan = plan_render(r, [str(f)], RenderOptions(values_limit_mb=limit), ex,
                           lambda *a: None)
        assert plan.scenes[0].sidecars == want
    names, small = ex.got[0]
    assert names == tuple(t.name for t in r.tensors())
    assert sorted(small) == ["a", "b", "c"]
    r.close()
