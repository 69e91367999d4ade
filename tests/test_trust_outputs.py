"""The output folder is atomic, exclusive and resumable, and interruptions end cleanly.

- one run per ``--out`` (a lock beside it: a second run fails at once; a dead run's lock is
  taken over; the lock file does not stay);
- SIGTERM / Ctrl-C at any moment: one line, exit 143 / 130, nothing left, no process left;
- SIGKILL at any moment: no process left; the next run on the same ``--out`` resumes the
  finished subtrees (same inputs and options) or removes the leftovers (others), and gives the
  same bytes as an uninterrupted run;
- a symlinked ``--out`` is followed; a failed run removes the parent folders it created;
- disk full, and failures injected at every stage: one line, exit 2, nothing left.
"""

from __future__ import annotations

import errno
import hashlib
import json
import multiprocessing as mp
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import pytest
from safetensors.numpy import load_file, save_file

import weightvis
from weightvis import painters, pyramid, values
from weightvis.cli import main
from weightvis.errors import FormatError
from weightvis.store import BUNDLE_ENTRIES

pytestmark = pytest.mark.skipif("fork" not in mp.get_all_start_methods() or os.name != "posix",
                                reason="signals, locks and forked workers")

ROOT = Path(weightvis.__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}


# -- inputs and helpers ------------------------------------------------------------------------

def _write(path: Path, layers: int, rows: int, cols: int, dtype: Any, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    save_file({f"model.layers.{i}.mlp.up_proj.weight":
               rng.standard_normal((rows, cols)).astype(dtype) for i in range(layers)}, str(path))
    return path


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Renders in about a second: 12 subtrees, 17 tiles, 3.4 MB."""
    return _write(tmp_path_factory.mktemp("small") / "m.safetensors", 6, 700, 600,
                  np.float32, 5)


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Renders in a few seconds with --workers 2: 35 subtrees, 611 tiles, 125 MB."""
    return _write(tmp_path_factory.mktemp("big") / "big.safetensors", 24, 2048, 2048,
                  np.float16, 7)


def _cli(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "weightvis", *map(str, args)]


def _run(*args: str | Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_cli(*args), capture_output=True, text=True, env=ENV,
                          timeout=timeout)


def _digest(bundle: Path) -> dict[str, str]:
    """Every file of a bundle by its path inside it."""
    return {str(p.relative_to(bundle)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(bundle.rglob("*")) if p.is_file()}


def _debris(folder: Path) -> list[str]:
    """Names a store makes beside --out (none may stay after a run that ended)."""
    return sorted(p.name for p in folder.iterdir() if ".weightvis-" in p.name)


def _records(out: Path) -> list[Path]:
    stage = out.parent / f".{out.name}.weightvis-staging"
    return sorted(stage.glob(".weightvis-resume/subtrees/*/*.npz"))


class BigRef:
    def __init__(self, big: Path, folder: Path) -> None:
        t0 = time.monotonic()
        r = _run(big, "--out", folder / "ref", "--workers", "2", "-q")
        assert r.returncode == 0, r.stderr
        self.seconds = time.monotonic() - t0
        self.bundle = folder / "ref"
        self.digest = _digest(self.bundle)
        doc = json.loads((self.bundle / "manifest.json").read_text("utf-8"))
        self.tiles = sum(1 for k in self.digest if k.startswith("tiles/") and not k.endswith(".js"))
        assert self.tiles > 300 and doc["scenes"][0]["max_zoom"] >= 5


@pytest.fixture(scope="module")
def big_ref(big: Path, tmp_path_factory: pytest.TempPathFactory) -> BigRef:
    return BigRef(big, tmp_path_factory.mktemp("big_ref"))


def _family(pid: int) -> list[psutil.Process]:
    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _survivors(known: list[psutil.Process], out: Path, wait: float = 10) -> list[str]:
    """Processes of the run still alive after ``wait`` seconds: those we saw (the killed
    process and its children) and any whose command line names ``out``."""
    deadline = time.monotonic() + wait
    while True:
        alive = []
        for p in known:
            with_status = _status(p)
            if with_status not in (None, psutil.STATUS_ZOMBIE):
                alive.append(f"{p.pid} {with_status}")
        for p in psutil.process_iter(["pid", "cmdline", "status"]):
            cmd = " ".join(p.info["cmdline"] or [])
            if str(out) in cmd and p.info["status"] != psutil.STATUS_ZOMBIE \
                    and p.pid != os.getpid():
                alive.append(f"{p.pid} {cmd}")
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.1)


def _status(p: psutil.Process) -> str | None:
    try:
        return str(p.status()) if p.is_running() else None
    except psutil.NoSuchProcess:
        return None


def _popen(*args: str | Path, group: bool = False) -> subprocess.Popen[str]:
    return subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=ENV, start_new_session=group)


# -- what a bundle holds -------------------------------------------------------------------------

def test_bundle_entries_cover_every_bundle(small: Path, tmp_path: Path) -> None:
    """``--overwrite`` refuses a bundle holding anything weightvis does not write: every kind
    of bundle must stay within BUNDLE_ENTRIES (add a new top-level file there)."""
    other = _write(tmp_path / "b.safetensors", 6, 700, 600, np.float32, 6)
    r = weightvis.render([small], tmp_path / "r", workers=1)
    h = weightvis.render([small], tmp_path / "h", workers=1, layout="hilbert",
                         hilbert_unit="byte")
    d = weightvis.render_diff([small], [other], tmp_path / "d", workers=1,
                              scenes=("a", "b", "delta"), svd=False)
    for res in (r, h, d):
        names = {p.name for p in res.out.iterdir()}
        assert {"index.html", "manifest.json", "tiles"} <= names <= BUNDLE_ENTRIES
        assert res.tiles_reused == 0
    assert (d.out / "diff.json").exists()
    assert _debris(tmp_path) == []


# -- one run per --out ---------------------------------------------------------------------------

@pytest.mark.slow
def test_second_render_on_the_same_out_fails_at_once(big: Path, small: Path, tmp_path: Path,
                                                     big_ref: BigRef) -> None:
    out = tmp_path / "out"
    first = _popen(big, "--out", out, "--workers", "2", "-q")
    lock = tmp_path / ".out.weightvis-lock"
    deadline = time.monotonic() + 60
    while not lock.exists():
        assert first.poll() is None and time.monotonic() < deadline, first.stderr
        time.sleep(0.02)
    t0 = time.monotonic()
    second = _run(small, "--out", out, "--workers", "1", "-q", "--overwrite")
    took = time.monotonic() - t0
    assert first.poll() is None, "the second run must fail while the first still runs"
    assert second.returncode == 2
    err = second.stderr.strip().splitlines()
    assert len(err) == 1, second.stderr
    assert err[0] == (f"weightvis: error: {out}: another weightvis run (pid {first.pid}) is "
                      "writing this bundle; wait for it to end or choose another --out")
    assert took < 15  # the start-up of Python; it does not wait for the lock
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert _digest(out) == big_ref.digest  # the first run's bundle, untouched
    assert _debris(tmp_path) == []


_HOLD = """
import fcntl, os, sys, time
fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT)
fcntl.flock(fd, fcntl.LOCK_EX)
os.write(fd, str(os.getpid()).encode())
print("locked", flush=True)
time.sleep(600)
"""


def test_a_dead_runs_lock_is_taken_over(small: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    lock = tmp_path / ".out.weightvis-lock"
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        # alive: refused at once, and its lock file stays (it is not ours)
        assert main([str(small), "--out", str(out), "-q", "--workers", "1"]) == 2
        assert lock.exists() and not out.exists()
    finally:
        holder.kill()
        holder.wait()
    # killed (SIGKILL: it could not remove its file): the file is stale, taken over, removed
    assert lock.exists()
    res = weightvis.render([small], out, workers=1)
    assert (res.out / "manifest.json").exists()
    assert _debris(tmp_path) == []


def test_one_process_cannot_render_twice_into_one_out(small: Path, tmp_path: Path) -> None:
    from weightvis.errors import OutputError
    from weightvis.store import StagedFolderStore

    first = StagedFolderStore(tmp_path / "out")
    with pytest.raises(OutputError, match=f"pid {os.getpid()}"):
        weightvis.render([small], tmp_path / "out", workers=1)
    first.close()
    assert _debris(tmp_path) == []
    weightvis.render([small], tmp_path / "out", workers=1)
    assert _debris(tmp_path) == []


# -- signals ---------------------------------------------------------------------------------------

def _kill_at(proc: subprocess.Popen[str], out: Path, delay: float, sig: int, group: bool
             ) -> list[psutil.Process]:
    """Send ``sig`` ``delay`` s after the run took its --out (unless it ended); returns the
    processes of the run seen until then. (Before that, Python is still starting: a signal
    there is the interpreter's, and the run has made nothing.)"""
    lock = out.parent / f".{out.name}.weightvis-lock"
    while not lock.exists() and proc.poll() is None:
        time.sleep(0.005)
    deadline = time.monotonic() + delay
    seen: dict[int, psutil.Process] = {}
    while time.monotonic() < deadline and proc.poll() is None:
        for p in _family(proc.pid):
            seen.setdefault(p.pid, p)
        time.sleep(0.02)
    for p in _family(proc.pid):
        seen.setdefault(p.pid, p)
    if proc.poll() is None:
        if group:
            os.killpg(proc.pid, sig)
        else:
            os.kill(proc.pid, sig)
    return list(seen.values())


@pytest.mark.slow
@pytest.mark.parametrize("sig, group, code, words", [
    (signal.SIGTERM, False, 143, "weightvis: terminated"),
    (signal.SIGTERM, True, 143, "weightvis: terminated"),   # systemd stops the whole group
    (signal.SIGINT, True, 130, "weightvis: interrupted"),   # Ctrl-C in a terminal
])
def test_stop_signal_at_random_points(big: Path, tmp_path: Path, big_ref: BigRef, sig: int,
                                      group: bool, code: int, words: str) -> None:
    rnd = random.Random(f"{sig}{group}")
    for trial in range(2):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        out = folder / "out"
        proc = _popen(big, "--out", out, "--workers", "2", "-q", group=group)
        delay = rnd.uniform(0, big_ref.seconds)
        known = _kill_at(proc, out, delay, sig, group)
        _, stderr = proc.communicate(timeout=120)
        assert _survivors(known, out) == []
        if proc.returncode == 0:  # finished first
            assert _digest(out) == big_ref.digest
            continue
        assert proc.returncode == code, (delay, stderr)
        assert stderr.strip().splitlines() == [words], (delay, stderr)
        assert _debris(folder) == [], delay
        # nothing left, or (a signal that came as the bundle was moved into place) all of it
        assert not out.exists() or _digest(out) == big_ref.digest, delay
        r = _run(big, "--out", out, "--workers", "2", "-q", "--overwrite")
        assert r.returncode == 0, r.stderr
        assert _digest(out) == big_ref.digest and _debris(folder) == []


@pytest.mark.slow
def test_sigkill_at_random_points_then_rerun(big: Path, tmp_path: Path,
                                             big_ref: BigRef) -> None:
    rnd = random.Random(9)
    for trial in range(3):
        folder = tmp_path / f"t{trial}"
        folder.mkdir()
        out = folder / "out"
        proc = _popen(big, "--out", out, "--workers", "2", "-q")
        delay = rnd.uniform(0, big_ref.seconds)
        known = _kill_at(proc, out, delay, signal.SIGKILL, False)
        proc.communicate(timeout=120)
        # workers and the scale helper notice at once that their parent is gone
        assert _survivors(known, out, wait=5) == [], delay
        r = _run(big, "--out", out, "--workers", "2", "-q", "--overwrite")
        assert r.returncode == 0, r.stderr
        assert _digest(out) == big_ref.digest, delay
        assert _debris(folder) == [], delay


@pytest.mark.slow
def test_resume_after_a_kill_at_half_redoes_little(big: Path, tmp_path: Path,
                                                   big_ref: BigRef) -> None:
    """Killed once half the subtrees are kept, the rerun renders at most 60 % of the tiles
    of a whole run, and the bundle is byte for byte the uninterrupted one."""
    roots = len(_geometry(big, 2).subtree_roots(2)[1])
    out = tmp_path / "out"
    proc = _popen(big, "--out", out, "--workers", "2", "-q")
    while proc.poll() is None and len(_records(out)) < roots / 2:
        time.sleep(0.005)
    known = _family(proc.pid)
    proc.kill()
    proc.communicate(timeout=60)
    kept = len(_records(out))
    assert roots / 2 <= kept < roots
    assert _survivors(known, out, wait=5) == []
    res = weightvis.render([big], out, workers=2)
    assert res.tiles_written == big_ref.tiles
    rendered = res.tiles_written - res.tiles_reused
    assert 0 < rendered <= 0.6 * big_ref.tiles, (kept, roots, res.tiles_reused)
    assert _digest(out) == big_ref.digest
    assert _debris(tmp_path) == []


def _geometry(src: Path, workers: int) -> Any:
    """The tile geometry a render of ``src`` uses (its subtrees: ``subtree_roots``)."""
    from weightvis.executors import local_executor
    from weightvis.formats import open_checkpoint
    from weightvis.options import RenderOptions
    from weightvis.scenes import plan_render

    reader = open_checkpoint([str(src)])
    try:
        plan = plan_render(reader, [str(src)], RenderOptions(), local_executor(workers),
                           lambda *a: None)
        return plan.scenes[0].geometry
    finally:
        reader.close()


_KILLED_BEFORE_COMMIT = """
import os, sys
from weightvis import store
store.StagedFolderStore.commit = lambda self: os._exit(9)  # as if killed right there
from weightvis.cli import main
main(sys.argv[1:])
"""


def _killed_run(*args: str | Path) -> None:
    r = subprocess.run([sys.executable, "-c", _KILLED_BEFORE_COMMIT, *map(str, args)],
                       env=ENV, capture_output=True, text=True)
    assert r.returncode == 9, r.stderr


@pytest.mark.parametrize("workers", [1, 2])
def test_leftovers_are_resumed_or_removed(small: Path, tmp_path: Path, workers: int) -> None:
    ref = weightvis.render([small], tmp_path / "ref", workers=workers)
    want = _digest(ref.out)
    out = tmp_path / "out"
    args = (small, "--out", out, "--workers", str(workers), "-q")

    # same inputs and options: every subtree is reused (only the levels above them are
    # drawn again), the bundle is the same
    _killed_run(*args)
    geo = _geometry(small, workers)
    split, roots = geo.subtree_roots(workers)
    assert len(_records(out)) == len(roots) >= 8  # one worker splits too
    res = weightvis.render([small], out, workers=workers, overwrite=True)
    above = sum(len(geo.occupied[z]) for z in range(split))
    assert res.tiles_written - res.tiles_reused == above and _digest(out) == want

    # a torn record and a missing tile: those subtrees are rendered again
    shutil.rmtree(out)
    _killed_run(*args)
    recs = _records(out)
    recs[0].write_bytes(recs[0].read_bytes()[:100])
    stage = out.parent / ".out.weightvis-staging"
    max_tiles = sorted((stage / "tiles" / "main").iterdir(), key=lambda p: int(p.name))[-1]
    next(p for p in max_tiles.rglob("*.png")).unlink()
    res2 = weightvis.render([small], out, workers=workers)
    assert 0 < res2.tiles_reused < res.tiles_reused and _digest(out) == want

    # other options, or an input changed since: the leftovers are removed, nothing reused
    shutil.rmtree(out)
    _killed_run(*args)
    res3 = weightvis.render([small], out, workers=workers, title="another title")
    assert res3.tiles_reused == 0
    shutil.rmtree(out)
    _killed_run(*args)
    st = small.stat()
    os.utime(small, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    res4 = weightvis.render([small], out, workers=workers)
    assert res4.tiles_reused == 0 and _digest(out) == want
    assert _debris(tmp_path) == []


def test_a_killed_diff_resumes_every_scene(small: Path, tmp_path: Path) -> None:
    b = tmp_path / "b.safetensors"
    t = load_file(str(small))
    t["model.layers.2.mlp.up_proj.weight"][10] = 0
    t["model.layers.3.mlp.up_proj.weight"][5, 7] += 0.5
    save_file(t, str(b))
    ref = weightvis.render_diff([small], [b], tmp_path / "ref", workers=2, svd=False,
                                scenes=("a", "b", "delta"))
    out = tmp_path / "out"
    _killed_run("diff", small, b, "--out", out, "--scenes", "a,b,delta", "--no-svd",
                "--workers", "2", "-q")
    assert {p.parent.name for p in _records(out)} == {"a", "b", "delta"}
    res = weightvis.render_diff([small], [b], out, workers=2, svd=False,
                                scenes=("a", "b", "delta"))
    assert res.tiles_reused > res.tiles_written / 2
    assert _digest(out) == _digest(ref.out)  # tiles, manifest.json, diff.json, index.html
    assert _debris(tmp_path) == []


def test_a_run_killed_while_replacing_a_bundle_gives_it_back(small: Path,
                                                            tmp_path: Path) -> None:
    """Killed between moving the previous bundle aside and its own in: the next run puts the
    previous one back first (and then, without --overwrite, refuses to replace it)."""
    out = tmp_path / "out"
    weightvis.render([small], out, workers=1)
    before = _digest(out)
    out.rename(tmp_path / ".out.weightvis-old")
    assert main([str(small), "--out", str(out), "-q", "--workers", "1"]) == 2
    assert _digest(out) == before and _debris(tmp_path) == []


# -- where the bundle goes -------------------------------------------------------------------------

def test_symlinked_out_is_followed(small: Path, tmp_path: Path) -> None:
    real = tmp_path / "disk" / "real"
    real.mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(real)
    res = weightvis.render([small], link, workers=1)
    assert res.out == link and link.is_symlink() and os.readlink(link) == str(real)
    assert (real / "manifest.json").exists()
    first = _digest(real)
    res = weightvis.render([small], link, workers=2, overwrite=True)
    assert link.is_symlink() and _digest(real) == first
    assert _debris(tmp_path) == [] and _debris(real.parent) == []
    # the same folder by two names is one --out: one lock
    from weightvis.errors import OutputError
    from weightvis.store import StagedFolderStore

    holder = StagedFolderStore(real, overwrite=True)
    with pytest.raises(OutputError, match="another weightvis run"):
        weightvis.render([small], link, workers=1, overwrite=True)
    holder.close()
    # a link to a folder that is not a bundle is refused like the folder itself
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    (tmp_path / "link2").symlink_to(tmp_path / "mine")
    assert main([str(small), "--out", str(tmp_path / "link2"), "-q", "--overwrite"]) == 2
    assert [p.name for p in (tmp_path / "mine").iterdir()] == ["notes.txt"]
    # a dangling link: its target is created
    (tmp_path / "link3").symlink_to(tmp_path / "new" / "place")
    weightvis.render([small], tmp_path / "link3", workers=1)
    assert (tmp_path / "new" / "place" / "manifest.json").exists()
    assert _debris(tmp_path) == [] and _debris(tmp_path / "new") == []


def test_overwrite_rules(small: Path, tmp_path: Path,
                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out"
    weightvis.render([small], out, workers=1)
    before = _digest(out)

    def refused(*extra: str) -> str:
        assert main([str(small), "--out", str(out), "-q", "--workers", "1", *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1
        return err[0]

    assert "pass --overwrite" in refused()
    (out / "README.md").write_text("my notes")  # e.g. a Space's card
    (out / ".git").mkdir()
    assert "holds .git, README.md, which weightvis did not write" in refused("--overwrite")
    assert (out / "README.md").read_text() == "my notes"
    (out / "README.md").unlink()
    (out / ".git").rmdir()
    (out / ".DS_Store").write_bytes(b"")  # a file browser's litter is not the user's work
    assert main([str(small), "--out", str(out), "-q", "--workers", "1", "--overwrite"]) == 0
    assert _digest(out) == before
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "a.txt").write_text("x")
    assert main([str(small), "--out", str(tmp_path / "notes"), "-q", "--overwrite"]) == 2
    assert "not a weightvis bundle" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(small), "--out", str(tmp_path / "empty"), "-q", "--workers", "1"]) == 0
    assert _debris(tmp_path) == []


# -- failures ------------------------------------------------------------------------------------

def _no_children_left() -> bool:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if not mp.active_children():
            return True
        time.sleep(0.05)
    return False


def _in_workers(parent: int, fail: Any) -> Any:
    def wrap(original: Any) -> Any:
        def f(*args: Any, **kwargs: Any) -> Any:
            if os.getpid() != parent:
                fail()
            return original(*args, **kwargs)
        return f
    return wrap


def _format_error() -> None:
    raise FormatError("m.safetensors", "injected failure", tensor="t", offset=8)


def _disk_full() -> None:
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.fixture
def truncated(small: Path, tmp_path: Path) -> Path:
    p = tmp_path / "cut.safetensors"
    p.write_bytes(small.read_bytes()[:5000])
    return p


STAGES = ["open", "value pass", "tile", "subtree reduce", "manifest", "store finish"]


@pytest.mark.parametrize("stage", STAGES)
@pytest.mark.parametrize("workers", [1, 2])
def test_a_failure_at_any_stage_ends_the_run_cleanly(
        stage: str, workers: int, small: Path, truncated: Path, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """One line, exit 2, within seconds; no process, no staging, no lock, no created parent
    left; a bundle that was there (replaced with --overwrite) is still there, whole."""
    old = tmp_path / "old"  # an existing bundle to replace: it must survive the failure
    weightvis.render([small], old / "bundle", workers=1)
    old_digest = _digest(old / "bundle")
    me = os.getpid()
    src, extra = small, []
    if stage == "open":
        src = truncated
    elif stage == "value pass":  # a global scale needs every tensor's sample before the tiles
        extra = ["--scale", "global"]
        monkeypatch.setattr(values, "_scale_of", _in_workers(me, _format_error)(values._scale_of)
                            if workers > 1 else _raising(_format_error))
    elif stage == "tile":
        monkeypatch.setattr(painters.ValuesPainter, "rect",
                            _in_workers(me, _format_error)(painters.ValuesPainter.rect)
                            if workers > 1 else _raising(_format_error))
    elif stage == "subtree reduce":  # the levels above the subtrees, in this process
        original = pyramid.TileWorker.parent

        def parent(self: Any, kids: Any, a: Any) -> Any:
            if os.getpid() == me and a.z < 2:
                _disk_full()
            return original(self, kids, a)

        monkeypatch.setattr(pyramid.TileWorker, "parent", parent)
    elif stage == "manifest":
        from weightvis import bundle

        monkeypatch.setattr(bundle, "write_viewer", _raising(_disk_full))
    elif stage == "store finish":
        real_replace = os.replace

        def replace(a: Any, b: Any, **kw: Any) -> None:
            if str(a).endswith(".weightvis-staging"):
                raise OSError(errno.EXDEV, os.strerror(errno.EXDEV))
            real_replace(a, b, **kw)

        monkeypatch.setattr(os, "replace", replace)
    new = tmp_path / "new" / "a" / "b" / "bundle"  # parents this run creates
    capsys.readouterr()
    for out, more in ((old / "bundle", ["--overwrite"]), (new, [])):
        t0 = time.monotonic()
        code = main([str(src), "--out", str(out), "--workers", str(workers), "-q", *extra,
                     *more])
        assert time.monotonic() - t0 < 30
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and err[0].startswith("weightvis: error: "), err
        assert _no_children_left()
    assert not (tmp_path / "new").exists()
    assert _digest(old / "bundle") == old_digest and _debris(old) == []


def _raising(fail: Any) -> Any:
    def f(*args: Any, **kwargs: Any) -> Any:
        fail()
    return f


@pytest.fixture
def tiny_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB tmpfs (root in a container may mount one), else skip."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.decode(errors='replace').strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.mark.parametrize("workers", ["1", "2"])
def test_disk_full_fails_in_one_line_and_leaves_nothing(small: Path, tiny_disk: Path,
                                                       workers: str) -> None:
    # (--no-space-check: the refusal before the tiles, tests/test_disk.py, would come first)
    r = _run(small, "--out", tiny_disk / "a" / "b" / "bundle", "--workers", workers, "-q",
             "--no-space-check", timeout=60)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1, r.stderr
    assert err[0].startswith(f"weightvis: error: {tiny_disk}/a/b/bundle: cannot write ")
    assert err[0].endswith(": No space left on device")
    assert list(tiny_disk.iterdir()) == []
