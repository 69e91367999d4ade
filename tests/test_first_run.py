"""A first run: numba's kernels compile in background processes while the checkpoint is read and
the plan made, the wait is a named progress stage, and the bundle is the same as without it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from weightvis import compiling


def _record(path: Path):  # type: ignore[no-untyped-def]
    def warm(group: str) -> None:
        with open(path, "a") as f:
            f.write(group + "\n")
    return warm


def test_background_groups_run_once_each_and_tick(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "groups.txt"
    monkeypatch.setattr(compiling, "_cached", lambda group: group == "reduce")
    monkeypatch.setattr(compiling, "_warm", _record(log))  # the forked processes inherit it
    monkeypatch.delenv("WEIGHTVIS_BACKGROUND_COMPILE", raising=False)
    ticks: list[tuple[str, int, int]] = []
    compiling.start(delta=True)
    compiling.start(delta=True)  # already running: no second set of processes
    compiling.wait(lambda stage, n, total: ticks.append((stage, n, total)))
    done = sorted(log.read_text().split())
    assert done == ["codes", "delta", "png", "values"]  # uncached groups only, each once
    assert ticks[0] == (compiling.COMPILE_STAGE, 0, 4)
    assert sum(n for _, n, _ in ticks) == 4 and {t for _, _, t in ticks} == {4}
    assert not compiling._running
    compiling.wait(lambda *a: ticks.append(a))  # nothing running: no stage shown
    assert len(ticks) == 5


def test_no_background_when_cached_or_disabled(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    log = tmp_path / "groups.txt"
    monkeypatch.setattr(compiling, "_warm", _record(log))
    monkeypatch.setattr(compiling, "_cached", lambda group: True)
    compiling.start()
    assert not compiling._running
    monkeypatch.setattr(compiling, "_cached", lambda group: False)
    monkeypatch.setenv("WEIGHTVIS_BACKGROUND_COMPILE", "0")
    compiling.start()
    assert not compiling._running and not log.exists()


def test_a_failing_group_leaves_the_compile_to_first_use(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    def warm(group: str) -> None:
        if group == "png":
            os._exit(3)  # the process dies mid-compile
    monkeypatch.setattr(compiling, "_cached", lambda group: False)
    monkeypatch.setattr(compiling, "_warm", warm)
    monkeypatch.delenv("WEIGHTVIS_BACKGROUND_COMPILE", raising=False)
    compiling.start()
    compiling.wait()  # returns (does not hang on the dead process)
    assert not compiling._running


@pytest.mark.slow
def test_first_demo_speaks_and_second_is_quiet(tmp_path: Path) -> None:
    """With an empty numba cache the demo says it compiles; with the cache filled it does not;
    both bundles are identical to one rendered without background compiling."""
    env = {k: v for k, v in os.environ.items() if k != "WEIGHTVIS_DEBUG"}
    env["NUMBA_CACHE_DIR"] = str(tmp_path / "numba")

    def demo(out: str, **extra: str) -> str:
        res = subprocess.run([sys.executable, "-m", "weightvis", "demo", "--out",
                              str(tmp_path / out), "--workers", "2"],
                             capture_output=True, text=True, env={**env, **extra}, timeout=900)
        assert res.returncode == 0, res.stderr
        return res.stderr

    first = demo("a")
    assert compiling.COMPILE_STAGE in first and "generating the demo checkpoint" in first
    assert compiling.COMPILE_STAGE not in demo("b")
    demo("c", WEIGHTVIS_BACKGROUND_COMPILE="0")
    for out in ("b", "c"):
        for f in sorted((tmp_path / "a").rglob("*")):
            if f.is_file():
                assert f.read_bytes() == (tmp_path / out / f.relative_to(tmp_path / "a"))\
                    .read_bytes(), f
