"""The `nncf-wcam` command line (NNCF 2.19): parser and exit codes, console, one module per command, the run's
settings and checks, and the distributed launch. `nncf-wcam` and `python -m nncf_wcam.cli` call `main`."""

from nncf_wcam.generation import require_nncf_generation

require_nncf_generation(2, "The nncf-wcam command line")  # NNCF 3.x: see nncf_wcam.nncf3

import nncf_wcam.nncf2  # noqa: E402,F401  (legacy tracing and the algorithms, before anything imports nncf.torch)
from nncf_wcam.cli.main import main  # noqa: E402

__all__ = ["main"]
