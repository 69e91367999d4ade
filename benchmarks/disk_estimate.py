#!/usr/bin/env python3
"""How close the expected bundle size (weightvis.disk.estimate_bytes, printed before a render)
comes to the bundle's real size, on the checkpoints given.

    python benchmarks/disk_estimate.py CKPT [CKPT ...] --work /dev/shm/x \\
        --out-json benchmarks/results/disk-estimate.json

Each checkpoint is rendered (``--workers 2``) into ``--work``; the JSON has, per checkpoint,
the estimate, the bytes written (every file of the bundle), their ratio, and the bytes per
part (tiles by zoom, sidecars, manifest, page, assets) the model's factors come from.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT))


def parts(bundle: Path) -> dict[str, int]:
    """Bytes of a bundle by part: ``tiles/<scene>/z<z>.<ext>`` and the top-level entries."""
    out: dict[str, int] = defaultdict(int)
    for root, _dirs, files in os.walk(bundle):
        for f in files:
            p = Path(root, f)
            rel = p.relative_to(bundle).parts
            key = (f"tiles/{rel[1]}/z{rel[2]}.{f.rsplit('.', 1)[-1]}"
                   if rel[0] == "tiles" and len(rel) >= 5 else rel[0])
            out[key] += p.stat().st_size
    return dict(sorted(out.items()))


def measure(src: str, work: Path, values: str) -> dict[str, Any]:
    from weightvis import bundle

    said: list[str] = []
    out = work / (Path(src).name + ".bundle")
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    import weightvis.disk as disk

    estimates: list[int] = []
    real_estimate = disk.estimate_bytes

    def spy(plan: Any, *a: Any, **k: Any) -> int:
        n = real_estimate(plan, *a, **k)
        estimates.append(n)
        return n

    bundle.estimate_bytes = spy  # type: ignore[attr-defined]
    try:
        res = bundle.render([src], out, workers=2, notice=said.append, values=values)  # type: ignore[arg-type]
    finally:
        bundle.estimate_bytes = real_estimate  # type: ignore[attr-defined]
    by_part = parts(out)
    actual = sum(by_part.values())
    shutil.rmtree(out, ignore_errors=True)
    return {"checkpoint": src, "elements": res.elements, "tensors": len(res.manifest.get(
        "tensors", [])), "values": values, "estimate_bytes": estimates[0],
            "actual_bytes": actual, "estimate_over_actual": round(estimates[0] / actual, 3),
            "notice": said, "seconds": round(time.perf_counter() - t0, 1), "parts": by_part}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--work", type=Path, required=True, help="where the bundles are written")
    ap.add_argument("--values", default="auto")
    ap.add_argument("--out-json", type=Path)
    a = ap.parse_args(argv)
    a.work.mkdir(parents=True, exist_ok=True)
    rows = []
    for c in a.checkpoints:
        rows.append(measure(c, a.work, a.values))
        r = rows[-1]
        print(f"{r['checkpoint']}: estimate {r['estimate_bytes']:,} actual {r['actual_bytes']:,}"
              f" ratio {r['estimate_over_actual']}", flush=True)
    doc = {"when": time.strftime("%Y-%m-%dT%H:%M:%S"), "rows": rows}
    if a.out_json:
        a.out_json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
