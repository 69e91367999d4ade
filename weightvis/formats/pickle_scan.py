"""What a pickle from a file may make ``pickle.Unpickler`` do before the restricted unpickler's
own code runs: a stream that hands the unpickler only opcodes it has checked, and watches memory.

The C unpickler acts on some opcodes without calling back into Python, so ``find_class`` alone
cannot stop them:

- a memo index (``PUT`` / ``LONG_BINPUT``) sizes the memo array: 12 bytes naming index 10^9 make
  the unpickler allocate and clear 16 GB. Indices must be below the opcode's offset in the pickle
  (a pickler numbers its memo 0, 1, 2, ...: each ``PUT`` takes at least two bytes).
- ``EXT1/2/4`` resolve through ``copyreg``'s extension cache, which may hold any object another
  unpickler in the process resolved, without ``find_class``: refused (torch never writes them).
- tuples nested ~150,000 deep crash CPython when hashed (a dict key, a set member): the stream
  follows the nesting of tuples and frozensets and refuses more than ``MAX_NESTING``.
- ``BYTEARRAY8`` allocates its declared size before reading (and CPython 3.11 prints an error
  of its own when that fails): a payload may not declare more than the memory bound.
- one-byte opcodes build objects of up to ~230 bytes (``EMPTY_SET``): the resident memory of the
  process is sampled each time the unpickler asks for more input (every 128 KiB of pickle) and
  may grow by at most ``max_pickle_memory()`` while the pickle is read.

Only bytes up to the ``STOP`` opcode are handed out, so a legacy file's next pickle starts at
``PickleStream.end``. The opcode table is pickletools'.
"""

from __future__ import annotations

import mmap
import pickletools
import struct
from collections.abc import Callable

__all__ = ["PickleStream", "PickleRefused", "resident_bytes", "MAX_NESTING"]

PREFETCH = 1 << 17
"""Bytes fetched at a time (the C unpickler peeks 128 KiB ahead)."""
_MAX_FETCH = 16 << 20

MAX_NESTING = 10_000
"""Deepest nesting of tuples and frozensets (the unpickler hashes them as dict keys and set
members, and CPython's tuple hash recurses without a guard: ~150,000 levels crash the process).
A pickler refuses to write past its recursion limit (1,000 by default)."""

# an opcode's step: > 0, its whole length (fixed-size argument); <= 0, how to find it
_LINE, _LINE2, _LEN1, _LEN4, _LEN4U, _LEN8U, _BAD = range(0, -7, -1)
# what it does to the stack, as far as the nesting of hashable containers goes
(_NOTHING, _PUSH, _PUT, _GET, _MARK, _TUPLE, _FROM_MARK, _TO_MARK, _TUPLE1, _TUPLE2, _TUPLE3,
 _POP1, _POP2, _REDUCE, _POP2_PUSH, _POP3_PUSH, _DUP, _EMPTY_TUPLE, _MEMOIZE, _EXT,
 _STOP) = range(21)
_U32 = struct.Struct("<I").unpack_from


def _tables() -> tuple[list[int], list[int]]:
    step, act = [_BAD] * 256, [_NOTHING] * 256
    by_n = {pickletools.UP_TO_NEWLINE: _LINE, pickletools.TAKEN_FROM_ARGUMENT1: _LEN1,
            pickletools.TAKEN_FROM_ARGUMENT4: _LEN4, pickletools.TAKEN_FROM_ARGUMENT4U: _LEN4U,
            pickletools.TAKEN_FROM_ARGUMENT8U: _LEN8U}
    for op in pickletools.opcodes:
        n = 0 if op.arg is None else op.arg.n
        code = ord(op.code)
        step[code] = 1 + n if n >= 0 else by_n[n]
        if not op.stack_before and len(op.stack_after) == 1:
            act[code] = _PUSH  # literals, empty containers, GLOBAL, PERSID
    step[ord("c")] = step[ord("i")] = _LINE2  # GLOBAL, INST: module and name lines
    acts = {"p": _PUT, "q": _PUT, "r": _PUT, "g": _GET, "h": _GET, "j": _GET, "(": _MARK,
            "t": _TUPLE, "\x91": _TUPLE, "l": _FROM_MARK, "d": _FROM_MARK, "i": _FROM_MARK,
            "o": _FROM_MARK, "e": _TO_MARK, "u": _TO_MARK, "\x90": _TO_MARK, "1": _TO_MARK,
            "\x85": _TUPLE1, "\x86": _TUPLE2, "\x87": _TUPLE3, "0": _POP1, "a": _POP1,
            "b": _POP1, "s": _POP2, "R": _REDUCE, "\x81": _POP2_PUSH, "\x93": _POP2_PUSH,
            "\x92": _POP3_PUSH, "2": _DUP, ")": _EMPTY_TUPLE, "\x94": _MEMOIZE, ".": _STOP,
            "\x82": _EXT, "\x83": _EXT, "\x84": _EXT, "Q": _NOTHING, "\x98": _NOTHING}
    for name, a in acts.items():
        act[ord(name)] = a
    return step, act


_STEP, _ACT = _tables()
_NAMES = {ord(op.code): op.name for op in pickletools.opcodes}


class PickleRefused(Exception):
    """An opcode this stream will not hand to the unpickler, or memory past the bound. Not an
    ``UnpicklingError``: the C unpickler reports those, raised while it reads, as "Ran out of
    input"."""


def resident_bytes() -> int | None:
    """This process's resident memory (Linux ``/proc/self/statm``; else the peak so far from
    ``getrusage``, which bounds growth as well; None where neither exists)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * mmap.PAGESIZE
    except (OSError, ValueError, IndexError):
        pass
    try:
        import resource
        import sys
    except ImportError:  # pragma: no cover - not POSIX
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) * (1 if sys.platform == "darwin" else 1024)


class _Scanner:
    """Checks opcodes one after another; ``pos`` is the absolute offset up to which every byte
    belongs to a checked opcode (a payload announced by a checked length counts as checked).

    The unpickler's stack is followed as far as the nesting depth of tuples and frozensets goes
    (``depths``: one entry per stack item, 0 for anything else; ``marks``; ``memo``: the
    non-zero depths stored). A REDUCE's result counts as deep as its arguments (a stand-in may
    return them: ``torch.Size``, ``builtins.frozenset``)."""

    __slots__ = ("start", "pos", "max_payload", "stopped", "dead", "depths", "marks", "memo",
                 "memoized", "lines")

    def __init__(self, start: int, max_payload: int = 1 << 62) -> None:
        self.start = self.pos = start
        self.max_payload = max_payload
        self.stopped = False  # STOP reached: nothing after it is handed out
        self.dead = False     # an opcode the unpickler will refuse: nothing after it either
        self.depths: list[int] = []
        self.marks: list[int] = []
        self.memo: dict[int, int] = {}
        self.memoized = 0     # deepest item stored by MEMOIZE (whose index is implicit)
        self.lines = (-1, 0, -1)  # a line search under way (see _line_end)

    def advance(self, buf: bytearray, base: int) -> None:
        """Check the complete opcodes of ``buf`` (whose first byte is at offset ``base``)."""
        i, n = self.pos - base, len(buf)
        steps, acts, u32, first = _STEP, _ACT, _U32, self.start - base
        depths, marks, memo = self.depths, self.marks, self.memo
        push = depths.append
        while i < n:
            op = buf[i]
            k = steps[op]
            if k > 0:  # the common case: an opcode with a fixed-size argument
                j = i + k
                if j > n:
                    break
            elif k == _LEN4U:  # BINUNICODE, BINBYTES: the payload is data, handed out unseen
                if i + 5 > n:
                    break
                j = i + 5 + u32(buf, i + 1)[0]
                if j - i > self.max_payload:
                    self._too_big(j - i - 5, op, base + i)
            elif k == _LEN1:
                if i + 2 > n:
                    break
                j = i + 2 + buf[i + 1]
            elif k == _LINE or k == _LINE2:
                e = self._line_end(buf, base, i, k == _LINE2)
                if e < 0:
                    break
                j = e + 1
            elif k == _LEN4 or k == _LEN8U:
                h = 4 if k == _LEN4 else 8
                if i + 1 + h > n:
                    break
                size = int.from_bytes(buf[i + 1:i + 1 + h], "little", signed=(k == _LEN4))
                if size < 0:
                    self.dead = True
                    i += 1 + h
                    break
                if size > self.max_payload:  # the unpickler allocates a BYTEARRAY8 first
                    self._too_big(size, op, base + i)
                j = i + 1 + h + size
            else:  # not an opcode: handed out alone, the unpickler refuses it
                self.dead = True
                i += 1
                break
            a = acts[op]
            if a == _PUSH:
                push(0)
            elif a == _PUT:
                if op == 0x72:  # LONG_BINPUT
                    idx = u32(buf, i + 1)[0]
                elif op == 0x71:  # BINPUT
                    idx = buf[i + 1]
                else:  # PUT: a decimal line
                    idx = self._index(bytes(buf[i + 1:j - 1]), base + i)
                if idx > i - first:  # a pickler numbers its memo 0, 1, 2, ...
                    self._out_of_sequence(idx, base + i)
                d = depths[-1] if depths else 0
                if d:
                    memo[idx] = d
                elif memo:
                    memo.pop(idx, None)
            elif a == _GET:
                if op == 0x68:  # BINGET
                    push(memo.get(buf[i + 1], 0) if memo else 0)
                elif op == 0x6A:  # LONG_BINGET
                    push(memo.get(u32(buf, i + 1)[0], 0) if memo else 0)
                else:
                    push(memo.get(self._index(bytes(buf[i + 1:j - 1]), base + i), 0))
                if self.memoized and depths[-1] < self.memoized:
                    depths[-1] = self.memoized
            elif a == _MARK:
                marks.append(len(depths))
            elif a == _TUPLE:
                m = marks.pop() if marks else 0
                d = max(depths[m:], default=0) + 1
                del depths[m:]
                push(d)
                if d > MAX_NESTING:
                    self._too_deep(base + i)
            elif a == _TUPLE2 or a == _TUPLE1 or a == _TUPLE3:
                c = 2 if a == _TUPLE2 else 1 if a == _TUPLE1 else 3
                d = max(depths[-c:], default=0) + 1
                del depths[-c:]
                push(d)
                if d > MAX_NESTING:
                    self._too_deep(base + i)
            elif a == _REDUCE:
                d = depths.pop() if depths else 0
                if depths:
                    depths[-1] = d
            elif a == _EMPTY_TUPLE:
                push(1)
            elif a == _FROM_MARK:
                m = marks.pop() if marks else 0
                del depths[m:]
                push(0)
            elif a == _TO_MARK:
                m = marks.pop() if marks else 0
                del depths[m:]
            elif a == _POP1:
                del depths[-1:]
            elif a == _POP2:
                del depths[-2:]
            elif a == _POP2_PUSH or a == _POP3_PUSH:
                del depths[-(2 if a == _POP2_PUSH else 3):]
                push(0)
            elif a == _DUP:
                push(depths[-1] if depths else 0)
            elif a == _MEMOIZE:
                if depths and depths[-1] > self.memoized:
                    self.memoized = depths[-1]
            elif a == _EXT:
                raise PickleRefused(f"extension-code opcode (EXT) at pickle byte "
                                    f"{base + i - self.start}: not allowed")
            elif a == _STOP:
                i = j
                self.stopped = True
                break
            i = j
        self.pos = base + i

    def _line_end(self, buf: bytearray, base: int, i: int, two: bool) -> int:
        """Where the line argument (``two``: the second of two) of the opcode at ``i`` ends, or
        -1 while not in ``buf`` yet. A search resumes where the last one stopped: a long line
        arrives over many fetches, and searching it again from its start each time would take
        time quadratic in its length."""
        if self.lines[0] == base + i:  # (opcode, searched up to, first newline or -1)
            frm = self.lines[1] - base
            nl = self.lines[2] - base if self.lines[2] >= 0 else -1
        else:
            frm, nl = i + 1, -1
        if two and nl < 0:
            nl = buf.find(b"\n", frm)
            if nl < 0:
                self.lines = (base + i, base + len(buf), -1)
                return -1
            frm = nl + 1
        e = buf.find(b"\n", frm)
        if e < 0:
            self.lines = (base + i, base + len(buf), base + nl if two else -1)
        return e

    def _index(self, text: bytes, at: int) -> int:
        try:
            return int(text)
        except ValueError:
            raise PickleRefused(f"memo index {text[:40]!r} at pickle byte {at - self.start} "
                                "is not a number") from None

    def _out_of_sequence(self, idx: int, at: int) -> None:
        raise PickleRefused(f"memo index {idx} at pickle byte {at - self.start} is out of "
                            "sequence (a pickler numbers its memo from 0)")

    def _too_big(self, size: int, op: int, at: int) -> None:
        raise PickleRefused(f"a {size:,}-byte {_NAMES[op]} at pickle byte {at - self.start}: more "
                            "than the memory allowed for the pickle")

    def _too_deep(self, at: int) -> None:
        raise PickleRefused(f"tuples nested more than {MAX_NESTING:,} deep at pickle byte "
                            f"{at - self.start}")


class PickleStream:
    """A read-only file for ``pickle.Unpickler`` over ``fetch(n)`` (the next up to ``n`` bytes
    of the pickle, b"" at its end) that hands out only checked opcodes and watches memory.

    ``end`` is the offset just after ``STOP`` once the unpickler has finished; offsets count
    from ``start``, where the first fetched byte is."""

    def __init__(self, fetch: Callable[[int], bytes], *, start: int = 0,
                 max_memory: int | None = None) -> None:
        self._fetch = fetch
        self._buf = bytearray()
        self._base = start      # offset of _buf[0]
        self._eof = False
        self._scan = _Scanner(start, (1 << 62) if max_memory is None else max_memory)
        self._max_memory = max_memory
        self._rss0 = resident_bytes() if max_memory is not None else None

    @property
    def end(self) -> int:
        return self._scan.pos

    @property
    def stopped(self) -> bool:
        return self._scan.stopped

    def _ready(self) -> int:
        """Bytes at the front of the buffer that may be handed out."""
        return max(0, min(self._scan.pos - self._base, len(self._buf)))

    def _fill(self, want: int) -> int:
        """Fetch and check until ``want`` bytes are ready or no more can be; the ready count."""
        scan = self._scan
        while (ready := self._ready()) < want and not self._eof:
            if scan.stopped or scan.dead:
                # a checked payload may still be on its way; nothing after the opcode is
                missing = scan.pos - self._base - len(self._buf)
                if missing <= 0:
                    return ready
            else:
                missing = 0
            chunk = self._fetch(min(_MAX_FETCH, max(PREFETCH, want - ready, missing)))
            if not chunk:
                self._eof = True
                break
            self._buf += chunk
            if not (scan.stopped or scan.dead):
                scan.advance(self._buf, self._base)
            self._check_memory()
        return self._ready()

    def _check_memory(self) -> None:
        if self._max_memory is None or self._rss0 is None:
            return
        now = resident_bytes()
        if now is not None and now - self._rss0 > self._max_memory:
            raise PickleRefused(
                f"reading it grew memory by {(now - self._rss0) >> 20} MiB by pickle byte "
                f"{self._base + len(self._buf) - self._scan.start}, past the "
                f"{self._max_memory >> 20} MiB allowed")

    def _head(self, n: int) -> bytes:
        with memoryview(self._buf) as mv:
            return mv[:n].tobytes()

    def _take(self, n: int) -> bytes:
        out = self._head(n)
        del self._buf[:n]
        self._base += n
        return out

    # -- the file interface the unpickler uses ---------------------------------------------------
    def read(self, n: int = -1) -> bytes:
        if n is None or n < 0:
            n = 1 << 62
        return self._take(min(n, self._fill(min(n, 1 << 62))))

    def readinto(self, b: bytearray | memoryview) -> int:
        mv = memoryview(b).cast("B")
        data = self.read(len(mv))
        mv[:len(data)] = data
        return len(data)

    def peek(self, n: int = 1) -> bytes:
        ready = self._fill(max(1, n))
        return self._head(min(ready, max(n, PREFETCH)))

    def readline(self) -> bytes:
        while True:
            ready = self._ready()
            e = self._buf.find(b"\n", 0, ready)
            if e >= 0:
                return self._take(e + 1)
            if self._fill(ready + 1) == ready:
                return self._take(ready)

    def drain(self) -> None:
        """Read what is left after ``STOP`` (checking memory, not opcodes) until ``fetch`` ends:
        a zip entry's CRC covers every byte."""
        self._buf.clear()
        while self._fetch(PREFETCH):
            pass
