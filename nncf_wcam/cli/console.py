"""What the command line shows: stage messages and progress bars (not with --quiet or --json), the result
summary (not with --json), and with --json one JSON object on stdout, everything else on stderr.

Only rank 0 of a torchrun job writes to the terminal.
"""

import contextlib
import json
import logging
import os
import sys
import warnings
from typing import Optional

import nncf
import torch
from tqdm import tqdm

from nncf_wcam.cli import distributed
from nncf_wcam.io.jsonable import to_jsonable


class Console:
    """The terminal settings of the running command (set once by `main`)."""

    quiet = False
    json = False
    summary: Optional[dict] = None

    @classmethod
    def configure(cls, args) -> None:
        cls.json = bool(getattr(args, "json", False))
        cls.quiet = bool(getattr(args, "quiet", False)) or cls.json
        cls.summary = None


def say(message: str = "") -> None:
    """A stage message (rank 0; none with --quiet or --json)."""
    if distributed.is_main() and not Console.quiet:
        tqdm.write(message, file=sys.stdout)


def result(message: str = "") -> None:
    """A line of the result summary (none with --json, which prints the summary as JSON instead)."""
    if distributed.is_main() and not Console.json:
        print(message, flush=True)


def stage_bar(desc: str, total: int) -> tqdm:
    """One progress bar for a whole stage (all its epochs), with an ETA; none with --quiet or --json."""
    return tqdm(total=total, desc=desc, unit="step", leave=False, dynamic_ncols=True, disable=Console.quiet or total == 0 or not distributed.is_main())


@contextlib.contextmanager
def json_stdout(enabled: bool):
    """With --json, stdout holds only the summary: everything else written to it (NNCF's log, prints) goes to stderr."""
    if not enabled:
        yield
        return
    sys.stdout.flush()
    real = os.dup(1)
    os.dup2(2, 1)  # also what C++ code and subprocesses write
    try:
        with contextlib.redirect_stdout(sys.stderr):
            yield
    finally:
        sys.stderr.flush()
        os.dup2(real, 1)
        os.close(real)


def emit_json(summary: dict) -> None:
    """The command's JSON summary, printed by `main` once stdout is the terminal's again."""
    Console.summary = to_jsonable(summary)


def print_json_summary() -> None:
    if Console.json and Console.summary is not None and distributed.is_main():
        print(json.dumps(Console.summary, allow_nan=False), flush=True)


def quiet_nncf(verbose: bool) -> None:
    """NNCF's info messages and known warnings only with --verbose."""
    if verbose:
        return
    nncf.set_log_level(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*create_compressed_model' function is deprecated.*")
    warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
    warnings.filterwarnings("ignore", message=r".*tensor\.detach\(\) first.*")


def parity_text(manifest: dict) -> str:
    """The IR's parity with PyTorch as checked, and at the device's default precision when that differs."""
    checked, default = manifest["parity"], manifest.get("parity_at_device_default")
    at = f" at {checked['inference_precision']}" if checked.get("inference_precision") else ""
    text = f"parity with PyTorch (on {checked['device']}{at}): max |logit diff| {checked['max_abs_diff']:.2g}, top-1 agreement {checked['top1_agreement']:.4f}"
    if default and default.get("inference_precision") != checked.get("inference_precision"):
        text += (
            f"; at {checked['device']}'s default precision ({default['inference_precision']}, what compile_model gives without a hint): "
            f"max |logit diff| {default['max_abs_diff']:.2g}, top-1 agreement {default['top1_agreement']:.4f}"
        )
    return text
