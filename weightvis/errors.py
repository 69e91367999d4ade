"""Typed errors. Every failure a user can cause is one of these; `cli.py` turns them into words.

A message names the thing: file, tensor, byte offset, expected vs found.
"""

from __future__ import annotations

__all__ = [
    "WeightvisError",
    "FormatError",
    "UnsupportedDtypeError",
    "InputError",
    "OutputError",
    "BundleError",
    "MissingExtraError",
    "WorkerError",
    "HubError",
    "WeightvisWarning",
    "MoEError",
]


class WeightvisError(Exception):
    """Base of every error weightvis raises on purpose."""

    def __reduce__(self) -> tuple[object, ...]:
        # pickled as (class, message, attributes): a worker process's error reaches the main
        # process as the same type with the same words, whatever its __init__ takes
        return (_restore, (type(self), str(self), dict(self.__dict__)))


def _restore(cls: type[WeightvisError], message: str, state: dict[str, object]
             ) -> WeightvisError:
    e = cls.__new__(cls)
    Exception.__init__(e, message)
    e.__dict__.update(state)
    return e


class FormatError(WeightvisError):
    """A checkpoint file is malformed (truncated, bad header, offsets out of range, ...)."""

    def __init__(self, path: object, problem: str, *, tensor: str | None = None,
                 offset: int | None = None) -> None:
        where = f"{path}"
        if tensor is not None:
            where += f": tensor {tensor!r}"
        if offset is not None:
            where += f" at byte {offset}"
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.tensor = tensor
        self.offset = offset
        self.problem = problem


class UnsupportedDtypeError(FormatError):
    """A tensor's element type cannot be decoded."""


class InputError(WeightvisError):
    """The inputs named on the command line / API do not make a checkpoint."""


class OutputError(WeightvisError):
    """The output location cannot be written (exists and is not ours, no --overwrite, ...)."""


class BundleError(WeightvisError):
    """An existing bundle is unreadable (e.g. for --regen-html)."""


class MissingExtraError(WeightvisError):
    """An optional dependency is needed; the message names the extra to install."""

    def __init__(self, module: str, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional package {module!r}: "
            f"pip install 'weightvis[{extra}]'"
        )


class WorkerError(WeightvisError):
    """A worker process ended without finishing its task (killed, out of memory)."""


class HubError(InputError):
    """The Hugging Face Hub refused or could not answer (not found, gated, rate limited,
    offline and not cached, ...), or the local disk cannot hold what it would download. The
    message names the ``hf://`` location and what to do; it never holds a token or a signed
    URL."""


class WeightvisWarning(UserWarning):
    """Something optional was unusable and is ignored (a broken ``config.json`` or model card):
    the run goes on. ``cli.py`` shows these as ``weightvis: warning: ...`` lines when the run
    succeeds."""


class MoEError(WeightvisError):
    """A Mixture-of-Experts layout cannot be read unambiguously (the message names the tensor
    and what would decide it)."""
