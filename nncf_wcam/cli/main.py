"""The `nncf-wcam` command line: compress, export, evaluate, configs.

    nncf-wcam compress --config quantization_int8_wcam --output runs/int8 [--compare-naive]
    nncf-wcam configs                                  (the shipped configs, usable by name in --config)
    nncf-wcam compress --output runs/int8 --resume     # continue that run with its own settings (run.json)
    nncf-wcam export   --checkpoint runs/int8/checkpoint.pt --output runs/int8/ir_npu --target-device NPU
    nncf-wcam evaluate --checkpoint runs/int8/checkpoint.pt [--ir runs/int8/ir]

`compress` under torchrun (`torchrun --nproc_per_node N -m nncf_wcam.cli compress ...`) trains with
DistributedDataParallel; rank 0 alone writes the teacher, checkpoints, IR and report.

Every refusal (an `NncfWcamError`: bad flags, a missing or malformed config, an unknown dataset, model or
layer, missing data, an unsupported device, an unreadable checkpoint, a resume that disagrees with its run,
a folder in use; permission, read-only or full-disk errors) prints one line on stderr and exits with code 2;
a failed export exits with 1.
"""

import json
import sys
from typing import Optional

from nncf_wcam.cli import distributed
from nncf_wcam.cli.console import Console
from nncf_wcam.cli.console import json_stdout
from nncf_wcam.cli.console import print_json_summary
from nncf_wcam.cli.errors import EXIT_FAILURE
from nncf_wcam.cli.errors import EXIT_INTERRUPTED
from nncf_wcam.cli.errors import EXIT_USAGE
from nncf_wcam.cli.parser import PROG
from nncf_wcam.cli.parser import build_parser
from nncf_wcam.cli.run_config import ENVIRONMENT_ERRNOS
from nncf_wcam.cli.run_config import environment_error_line
from nncf_wcam.errors import ExportError
from nncf_wcam.errors import NncfWcamError
from nncf_wcam.nncf_common.extension_cache import allow_slow_extension_builds
from nncf_wcam.nncf_common.extension_cache import check_extension_cache
from nncf_wcam.nncf_common.extension_cache import extension_timeout_line
from nncf_wcam.nncf_common.extension_cache import forget_abandoned_extension_loader
from nncf_wcam.nncf_common.extension_cache import is_extension_timeout

NNCF_COMMANDS = ("compress", "export", "evaluate")  # the commands that may compile NNCF's C++ extension


def _fail(command: str, line: str, code: int, kind: str = "error", error: Optional[BaseException] = None) -> int:
    """The one line on stderr; with --json also one JSON object on stdout, so a script always reads one.

    Under torchrun a refusal every rank shares is printed by rank 0 alone."""
    if not getattr(error, "said_on_rank0", False):
        print(f"{PROG} {command}: {kind}: {line}", file=sys.stderr)
    if Console.json and distributed.is_main():
        print(json.dumps({"command": command, "error": line, "exit_code": code}), flush=True)
    return code


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)
    Console.configure(args)
    timed_out = False
    try:
        if args.command in NNCF_COMMANDS:
            allow_slow_extension_builds()
            check_extension_cache()
        with json_stdout(Console.json):
            code = args.func(args)
        print_json_summary()
    except NncfWcamError as e:
        failed = isinstance(e, ExportError) and e.exit_code == EXIT_FAILURE  # not a refusal of the input
        return _fail(args.command, str(e), e.exit_code, "export failed" if failed else "error", error=e)
    except RecursionError:
        return _fail(args.command, "the config nests too deeply to read. Fix: NNCF configs need 6 levels or fewer; check the file.", EXIT_USAGE)
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRNOS:
            raise
        return _fail(args.command, environment_error_line(e), EXIT_USAGE, error=e)
    except Exception as e:
        if not is_extension_timeout(e):
            raise
        timed_out = True
    except KeyboardInterrupt:
        hint = " (the last completed epoch's checkpoint is kept: continue with --resume)" if args.command == "compress" else ""
        print(f"{PROG} {args.command}: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        distributed.cleanup()
    if timed_out:
        forget_abandoned_extension_loader()
        return _fail(args.command, extension_timeout_line(), EXIT_USAGE)
    return code
