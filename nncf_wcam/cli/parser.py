"""The `nncf-wcam` argument parser: one subcommand per module (compress, export, evaluate, configs)."""

import argparse

from nncf_wcam.cli.compress import cmd_compress
from nncf_wcam.cli.configs import cmd_configs
from nncf_wcam.cli.errors import EXIT_USAGE
from nncf_wcam.cli.evaluate import cmd_evaluate
from nncf_wcam.cli.export import cmd_export
from nncf_wcam.cli.run_settings import DEFAULT_EVAL_SAMPLES
from nncf_wcam.cli.run_settings import DEFAULT_TEACHER_EPOCHS
from nncf_wcam.zoo.datasets import DATA_ROOT_ENV

PROG = "nncf-wcam"


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, exit code 2 (argparse prints the whole usage)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _add_output_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quiet", action="store_true", help="no progress bars or stage messages: only the result summary and errors")
    parser.add_argument("--json", action="store_true", help="print only a machine-readable JSON summary on stdout (implies --quiet)")
    parser.add_argument("--verbose", action="store_true", help="NNCF's info messages")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Attribution-preserving compression with NNCF: train, export, evaluate.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    compress = commands.add_parser("compress", help="train the teacher, compress with the config, export the IR, report")
    compress.add_argument("--config", help="NNCF JSON config with an attribution_matching block: a path, or a shipped config's name (nncf-wcam configs); with --resume, the run's own by default")
    compress.add_argument("--output", required=True, help="output folder (run.json, teacher.pt, checkpoint.pt, ir/, report.json, PNG)")
    compress.add_argument("--teacher", help="teacher weights (teacher.pt, checkpoint.pt or a state_dict); trained here when absent")
    compress.add_argument("--compare-naive", action="store_true", help="also compress without attribution_matching (same seeds) and compare")
    compress.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint, with the run's own settings")
    compress.add_argument("--epochs", type=int, help="compression epochs (default: the config's \"epochs\", else 4)")
    compress.add_argument("--teacher-epochs", type=int, help=f"teacher training epochs (default {DEFAULT_TEACHER_EPOCHS})")
    compress.add_argument("--max-steps", type=int, help="at most this many training steps per epoch (smoke tests)")
    compress.add_argument("--seed", type=int, help="seed of data order and initialization (default: the config's \"seed\" or 0)")
    compress.add_argument("--device", help="cuda or cuda:N: train on that CUDA GPU (the IR is checked on OpenVINO's CPU); CPU, GPU, NPU, AUTO: the OpenVINO device for the IR, training on the CPU (default CPU)")
    compress.add_argument("--eval-samples", type=int, help=f"test samples for attribution agreement (default {DEFAULT_EVAL_SAMPLES})")
    compress.add_argument("--data-root", help=f"folder of the IDX files of a config's mnist / fashion_mnist dataset that names no \"root\" (default: ${DATA_ROOT_ENV})")
    _add_output_flags(compress)
    compress.set_defaults(func=cmd_compress)

    export = commands.add_parser("export", help="export a checkpoint's compressed model to OpenVINO IR")
    export.add_argument("--checkpoint", required=True, help="checkpoint.pt written by compress")
    export.add_argument("--output", required=True, help="IR folder (model.xml, model.bin, manifest.json), replaced as a whole")
    export.add_argument("--static-shape", action="store_true", help="static batch of 1 (NPU needs it; implied for NPU)")
    export.add_argument("--device", default="CPU", help="OpenVINO device to check the IR on: CPU, GPU, NPU, AUTO (default CPU)")
    export.add_argument("--target-device", help="device the IR is meant for, which may be absent here: NPU gives a static batch of 1 and NCHW layout, compiled only where an NPU exists (default: --device)")
    export.add_argument("--eval-samples", type=int, default=DEFAULT_EVAL_SAMPLES, help="test samples for the parity check")
    _add_output_flags(export)
    export.set_defaults(func=cmd_export)

    configs = commands.add_parser("configs", help="list the configs shipped with the package (usable by name in --config)")
    configs.set_defaults(func=cmd_configs)

    evaluate = commands.add_parser("evaluate", help="teacher vs student attribution agreement, PyTorch and IR")
    evaluate.add_argument("--checkpoint", required=True, help="checkpoint.pt written by compress")
    evaluate.add_argument("--ir", help="IR folder to evaluate (default: ir/ beside the checkpoint, if present)")
    evaluate.add_argument("--device", default="CPU", help="OpenVINO device for the IR (default CPU)")
    evaluate.add_argument("--layer", help="Grad-CAM layer with a spatial output (default: the matched layer; \"auto\": the last spatial one)")
    evaluate.add_argument("--eval-samples", type=int, default=DEFAULT_EVAL_SAMPLES, help=f"test samples (default {DEFAULT_EVAL_SAMPLES})")
    evaluate.add_argument("--output", help="write the results as JSON to this file")
    evaluate.add_argument("--figure", help="write a PNG of teacher and student Grad-CAM maps to this file")
    _add_output_flags(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)
    return parser
