"""Runs many `nncf-wcam` command lines, each in its own process, paying the import of torch and NNCF once.

    python cli_fork_runner.py cases.json results.json

cases.json: a list of argument lists. Each case runs `nncf_wcam.cli.main(argv)` in a child forked
after the imports, with its stdout and stderr going to files, exactly as `python -m nncf_wcam.cli`
would exit. results.json: per case {"argv", "code", "stdout", "stderr"}.
"""

import json
import os
import sys
import tempfile
import time

import nncf_wcam.cli  # noqa: F401  (imported once, before forking)

CASE_TIMEOUT_S = 180


def run_case(argv: list) -> dict:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        pid = os.fork()
        if pid == 0:  # the child: becomes `python -m nncf_wcam.cli ARGV`
            os.dup2(out.fileno(), 1)
            os.dup2(err.fileno(), 2)
            code = 99
            try:
                code = nncf_wcam.cli.main(argv)
            except SystemExit as e:  # argparse
                code = e.code if isinstance(e.code, int) else 1
            except BaseException:  # noqa: BLE001  (a traceback is what the test must see)
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os._exit(code)
        deadline = time.monotonic() + CASE_TIMEOUT_S
        while True:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() > deadline:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
                status = 124 << 8
                break
            time.sleep(0.05)
        out.seek(0)
        err.seek(0)
        return {"argv": argv, "code": os.waitstatus_to_exitcode(status), "stdout": out.read().decode(errors="replace"), "stderr": err.read().decode(errors="replace")}


if __name__ == "__main__":
    with open(sys.argv[1]) as f:
        cases = json.load(f)
    results = [run_case(argv) for argv in cases]
    with open(sys.argv[2], "w") as f:
        json.dump(results, f)
