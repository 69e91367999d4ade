"""``info --scan`` finds what the eye finds (issue 14, item 9): all-zero rows and columns and
constant tensors besides NaN / Inf / all-zero tensors, streaming in row blocks; checked against
numpy on the whole arrays, with blocks small enough that runs cross block edges."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import save_file

from weightvis import scan
from weightvis.demo import DEAD_HEAD, DEMO_CONFIG, write_demo_checkpoint
from weightvis.info import checkpoint_info, format_info


def _runs(mask: np.ndarray) -> list[list[int]]:
    """Reference runs, by a plain loop."""
    out: list[list[int]] = []
    for i, z in enumerate(mask.tolist()):
        if z and out and out[-1][1] == i:
            out[-1][1] = i + 1
        elif z:
            out.append([i, i + 1])
    return out[:scan.MAX_RUNS]


def _reference(tensors: dict[str, np.ndarray]) -> dict[str, list[dict[str, Any]]]:
    ref: dict[str, list[dict[str, Any]]] = {k: [] for k in
                                            ("nan", "inf", "all_zero", "constant", "zero_rows",
                                             "zero_cols")}
    for name in sorted(tensors):
        a = tensors[name]
        nan, inf = int(np.isnan(a).sum()), int(np.isinf(a).sum())
        if nan:
            ref["nan"].append({"name": name, "count": nan})
        if inf:
            ref["inf"].append({"name": name, "count": inf})
        if a.size and not np.any(a != 0):
            ref["all_zero"].append({"name": name})
            continue
        if a.size >= 2 and not nan and not inf and np.all(a == a.flat[0]):
            ref["constant"].append({"name": name, "value": float(a.flat[0])})
            continue
        if a.ndim < 2:
            continue
        m = a.reshape(a.shape[0], -1)
        if m.shape[0] < 2 or m.shape[1] < 2:
            continue
        rows, cols = ~np.any(m != 0, axis=1), ~np.any(m != 0, axis=0)
        if rows.any():
            ref["zero_rows"].append({"name": name, "count": int(rows.sum()), "of": m.shape[0],
                                     "runs": _runs(rows)})
        if cols.any():
            ref["zero_cols"].append({"name": name, "count": int(cols.sum()), "of": m.shape[1],
                                     "runs": _runs(cols)})
    return ref


def _planted(rng: np.random.Generator) -> dict[str, np.ndarray]:
    t: dict[str, np.ndarray] = {}
    q = rng.standard_normal((96, 40)).astype(np.float32)
    q[16:32] = 0  # a dead head, crossing block edges
    q[95] = 0
    t["q_proj.weight"] = q
    o = rng.standard_normal((40, 96)).astype(np.float32)
    o[:, 16:32] = 0
    o[:, 0] = 0
    t["o_proj.weight"] = o
    conv = rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    conv[2] = 0  # a dead output channel
    t["conv.weight"] = conv
    both = rng.standard_normal((30, 30)).astype(np.float32)
    both[::3] = 0  # many runs: more than MAX_RUNS? (10 runs here, and a column)
    both[:, 7] = 0
    both[1, 1] = np.nan  # NaN is not zero: its row is not a zero row
    t["sparse.weight"] = both
    many = rng.standard_normal((200, 4)).astype(np.float32)
    many[::2] = 0  # 100 runs: only MAX_RUNS listed, all counted
    t["many.weight"] = many
    t["norm.weight"] = np.ones(40, np.float32)  # constant
    t["scale"] = np.full((5, 5), -0.25, np.float32)  # constant matrix
    t["bias"] = np.array([0, 1, 0, 2], np.float32)  # a vector: no rows / columns
    t["zeros"] = np.zeros((4, 4), np.float32)
    t["one"] = np.array([3.0], np.float32)  # one element: not "constant"
    inf = rng.standard_normal((6, 6)).astype(np.float32)
    inf[0, 0] = np.inf
    t["inf.weight"] = inf
    return t


@pytest.mark.parametrize("block", [7, 1 << 22])
def test_scan_matches_numpy(tmp_path: Path, block: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scan, "SCAN_BLOCK_ELEMENTS", block)  # 7: one row per block
    tensors = _planted(np.random.default_rng(14))
    p = tmp_path / "m.safetensors"
    save_file(tensors, str(p))
    got = checkpoint_info([p], scan=True)["scan"]
    ref = _reference(tensors)
    assert {k: sorted(v, key=lambda r: r["name"]) for k, v in got.items()} == ref
    assert any(r["name"] == "many.weight" and r["count"] == 100 and len(r["runs"]) ==
               scan.MAX_RUNS for r in got["zero_rows"])


def test_the_demo_dead_head_is_reported(tmp_path: Path) -> None:
    d = write_demo_checkpoint(tmp_path / "demo")
    info = checkpoint_info([d], scan=True)
    layer, head = DEAD_HEAD
    hd = DEMO_CONFIG["hidden_size"] // DEMO_CONFIG["num_attention_heads"]
    rows = [r for r in info["scan"]["zero_rows"]
            if r["name"] == f"model.layers.{layer}.self_attn.q_proj.weight"]
    cols = [r for r in info["scan"]["zero_cols"]
            if r["name"] == f"model.layers.{layer}.self_attn.o_proj.weight"]
    assert rows and rows[0]["runs"] == [[head * hd, (head + 1) * hd]]
    assert cols and cols[0]["runs"] == [[head * hd, (head + 1) * hd]]
    text = format_info(info)
    assert (f"zero rows: model.layers.{layer}.self_attn.q_proj.weight: {hd} of "
            f"{DEMO_CONFIG['hidden_size']} (rows {head * hd}-{(head + 1) * hd - 1})") in text


def test_zero_runs_edges() -> None:
    assert scan.zero_runs(np.zeros(0, bool)) == []
    assert scan.zero_runs(np.ones(3, bool), 10) == [[10, 13]]
    assert scan.zero_runs(np.array([1, 0, 1, 0, 1], bool), limit=2) == [[0, 1], [2, 3]]
