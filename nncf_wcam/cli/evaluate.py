"""`nncf-wcam evaluate`: teacher-vs-student attribution agreement of a checkpoint, in PyTorch and through its IR."""

import json
from pathlib import Path
from typing import Optional

from nncf_wcam.cli.console import emit_json
from nncf_wcam.cli.console import quiet_nncf
from nncf_wcam.cli.console import result
from nncf_wcam.cli.console import say
from nncf_wcam.cli.errors import UsageError
from nncf_wcam.cli.inputs import check_checkpoint_flag
from nncf_wcam.cli.inputs import check_layers
from nncf_wcam.cli.inputs import check_output_file
from nncf_wcam.cli.inputs import restored_checkpoint
from nncf_wcam.cli.run_config import check_flags
from nncf_wcam.core.layers import AUTO
from nncf_wcam.deploy.devices import check_device
from nncf_wcam.deploy.runtime import XML_NAME
from nncf_wcam.evaluation.report import evaluate_models
from nncf_wcam.evaluation.report import summary_lines
from nncf_wcam.io.atomic import atomic_write_text
from nncf_wcam.io.jsonable import to_jsonable
from nncf_wcam.nncf2.statistics import compression_statistics
from nncf_wcam.schema.validation import logits_output_of

IR_DIR_NAME = "ir"


def _ir_dir(args) -> Optional[Path]:
    """--ir, else ir/ beside the checkpoint when it holds an IR, else None."""
    if args.ir:
        ir_dir = Path(args.ir)
        if not (ir_dir / XML_NAME).is_file() and not (ir_dir.suffix == ".xml" and ir_dir.is_file()):
            raise UsageError(f"No OpenVINO IR at {args.ir}: pass the folder written by `nncf-wcam export` ({XML_NAME} inside).")
        return ir_dir
    beside = Path(args.checkpoint).parent / IR_DIR_NAME
    return beside if (beside / XML_NAME).is_file() else None


def _layer(args, checkpoint: dict, teacher, sample) -> str:
    """--layer (checked before any attribution: unknown and non-spatial layers are errors, never scores), else the matched one."""
    if args.layer:
        return check_layers(teacher, sample, [args.layer] if args.layer != AUTO else AUTO)[0]
    return (checkpoint.get("matched_layers") or check_layers(teacher, sample, AUTO))[0]


def cmd_evaluate(args) -> int:
    quiet_nncf(args.verbose)
    check_flags(args)
    device = check_device(args.device)
    check_checkpoint_flag(args.checkpoint)
    check_output_file(args.output, "--output")
    check_output_file(args.figure, "--figure")
    ir_dir = _ir_dir(args)
    with restored_checkpoint(args.checkpoint) as (checkpoint, data, compression_ctrl, model, teacher):
        layer = _layer(args, checkpoint, teacher, data.test.tensors[0][:2])
        label = checkpoint.get("label", "student")
        say(f"Evaluating {args.checkpoint} at layer {layer} on {args.eval_samples} test samples ...")
        evaluated = evaluate_models(
            teacher,
            {label: model},
            data,
            layer,
            args.eval_samples,
            logits_output=logits_output_of(checkpoint["config"]),
            ir_dir=ir_dir,
            ir_student=label,
            device=device,
            figure=Path(args.figure) if args.figure else None,
        )
        evaluated.update(checkpoint=str(args.checkpoint), epoch=checkpoint["epoch"], compression=compression_statistics(compression_ctrl))
    if args.output:
        atomic_write_text(args.output, json.dumps(to_jsonable(evaluated), indent=2))
    result(f"nncf-wcam evaluate: {args.checkpoint} (epoch {checkpoint['epoch']}/{checkpoint['epochs']})")
    for line in summary_lines(evaluated):
        result(line)
    if args.output:
        result(f"Report: {args.output}")
    if args.figure:
        result(f"Figure: {args.figure}")
    emit_json({"command": "evaluate", "report": args.output, **{k: v for k, v in evaluated.items() if k != "compression"}})
    return 0
