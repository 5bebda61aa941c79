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


def _fail(command: str, line: str, code: int, kind: str = "error") -> int:
    print(f"{PROG} {command}: {kind}: {line}", file=sys.stderr)
    return code


def main(argv: Optional[list] = None) -> int:
    args = build_parser().parse_args(argv)
    Console.configure(args)
    try:
        with json_stdout(Console.json):
            code = args.func(args)
        print_json_summary()
    except NncfWcamError as e:
        failed = isinstance(e, ExportError) and e.exit_code == EXIT_FAILURE  # not a refusal of the input
        return _fail(args.command, str(e), e.exit_code, "export failed" if failed else "error")
    except RecursionError:
        return _fail(args.command, "the config nests too deeply to read. Fix: NNCF configs need 6 levels or fewer; check the file.", EXIT_USAGE)
    except OSError as e:
        if e.errno not in ENVIRONMENT_ERRNOS:
            raise
        return _fail(args.command, environment_error_line(e), EXIT_USAGE)
    except KeyboardInterrupt:
        hint = " (the last completed epoch's checkpoint is kept: continue with --resume)" if args.command == "compress" else ""
        print(f"{PROG} {args.command}: interrupted{hint}", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        distributed.cleanup()
    return code
