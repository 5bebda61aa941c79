"""The one base class of the errors nncf-wcam raises for its users, and the helpers that keep them one line.

Every refusal (a bad config key, a missing data file, an unsupported device, a folder that is not ours)
is an `NncfWcamError` whose message is one line naming the problem and the fix; every export failure is
an `ExportError` (its refusals of bad inputs, such as an output folder that is not ours, are subclasses). The command line prints
that line and exits with the error's `exit_code` (2: fix the input; 1: the work itself failed). The
subclasses also derive from the built-in exception their callers expect (`ValueError`, `RuntimeError`,
`ImportError`, ...), so `except ValueError` keeps working.
"""

import reprlib
from typing import Any
from typing import Optional
from typing import Sequence


def one_line(text: str) -> str:
    """Line breaks (from reprs of user objects, tracebacks) shown as a visible '\\n'."""
    return "\\n".join(str(text).splitlines())


class NncfWcamError(Exception):
    """An error for the user: one line that names the problem and the fix."""

    exit_code = 2  # the command line's exit code: 2 = fix the input

    def __init__(self, message: Any = "", *args: Any):
        super().__init__(one_line(message), *args)


class ExportError(NncfWcamError, RuntimeError):
    """An export could not produce a faithful result; nothing was written (refusals of its inputs are subclasses)."""

    exit_code = 1  # the work failed (the input may be fine)


_REPR = reprlib.Repr()
_REPR.maxstring = _REPR.maxother = 80
_REPR.maxlist = _REPR.maxtuple = _REPR.maxdict = _REPR.maxset = _REPR.maxfrozenset = 8
_REPR.maxlevel = 3


def short_repr(value: Any) -> str:
    """repr() of a user's value on one line, at most about a hundred characters (hostile values can be huge)."""
    try:
        return one_line(_REPR.repr(value))
    except Exception:  # a user object whose __repr__ fails must not hide the error being reported
        return f"<{type(value).__name__}>"


def error_summary(error: BaseException, limit: int = 300, prefer: Optional[Sequence[str]] = None, with_type: bool = True) -> str:
    """"Type: first line" of a third-party exception (torch, NNCF, OpenVINO messages run over many lines).

    `prefer`: words that mark the useful line (OpenVINO puts it after a file:line prefix); the first line
    holding one of them is taken, else the first non-empty line.
    """
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    useful = [line for line in lines if any(word.lower() in line.lower() for word in prefer or ())]
    text = (useful or lines or [""])[0][:limit]
    return f"{type(error).__name__}: {text}" if with_type else text or type(error).__name__
