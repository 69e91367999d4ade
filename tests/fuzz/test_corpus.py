"""Every input a fuzz campaign or an attack ever broke weightvis with, replayed: ``info`` and a
render with two workers each keep the promises (exit 0 or 2, one line, no traceback, no hang,
bounded memory) and leave nothing beside the output folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from .common import CORPUS, broken_promise, remove, run_cli, scratch

ENTRIES = sorted(p for p in CORPUS.glob("*/*") if not p.name.startswith("."))


@pytest.mark.parametrize("entry", ENTRIES, ids=[f"{p.parent.name}/{p.name}" for p in ENTRIES])
def test_corpus_entry_keeps_the_promises(entry: Path) -> None:
    work = scratch()
    try:
        o = run_cli(["info", str(entry)])
        assert broken_promise(o) is None, f"info {entry}: {broken_promise(o)}"
        out = work / "bundle"
        o = run_cli([str(entry), "--out", str(out), "--workers", "2", "-q"])
        assert broken_promise(o) is None, f"render {entry}: {broken_promise(o)}"
        left = sorted(p.name for p in work.iterdir())
        assert left == (["bundle"] if o.returncode == 0 else []), left
    finally:
        remove(work)


def test_corpus_is_not_empty() -> None:
    assert ENTRIES, f"no regression inputs under {CORPUS}"
