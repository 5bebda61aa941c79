"""`nncf-wcam export`: a checkpoint's compressed model to OpenVINO IR, for this machine's device or another one's
(`--target-device NPU` from a machine without an NPU)."""

from pathlib import Path

from nncf_wcam.cli.console import emit_json
from nncf_wcam.cli.console import parity_text
from nncf_wcam.cli.console import quiet_nncf
from nncf_wcam.cli.console import result
from nncf_wcam.cli.console import say
from nncf_wcam.cli.inputs import check_output_folder
from nncf_wcam.cli.inputs import restored_checkpoint
from nncf_wcam.cli.run_config import check_flags
from nncf_wcam.deploy.devices import check_device
from nncf_wcam.nncf2.export import export_ir
from nncf_wcam.schema.validation import logits_output_of


def cmd_export(args) -> int:
    quiet_nncf(args.verbose)
    check_flags(args)
    device = check_device(args.device)
    # The device the IR is for may be absent here (export on a workstation, deploy on an NPU machine).
    target_device = check_device(args.target_device, must_be_present=False) if args.target_device else None
    output = Path(args.output)
    check_output_folder(output)
    with restored_checkpoint(args.checkpoint) as (checkpoint, data, compression_ctrl, model, _):
        say(f"Exporting {args.checkpoint} to {output} ...")
        exported = export_ir(
            compression_ctrl,
            model,
            output,
            data.test.tensors[0][: args.eval_samples],
            config=checkpoint["config"],
            dynamic_batch=not args.static_shape,
            device=device,
            target_device=target_device,
            logits_output=logits_output_of(checkpoint["config"]),
            matched_layers=checkpoint.get("matched_layers"),
        )
    manifest = exported.manifest
    parity = manifest["parity"]
    result(
        f"Exported {args.checkpoint} (epoch {checkpoint['epoch']}/{checkpoint['epochs']}) to {exported.xml_path} for {manifest['target_device']}: "
        f"{manifest['precision']}, input shape {manifest['input_shape']}, {parity_text(manifest)}."
    )
    emit_json(
        {
            "command": "export",
            "checkpoint": str(args.checkpoint),
            "ir": str(exported.xml_path),
            "manifest": str(exported.manifest_path),
            "device": device,
            "target_device": manifest["target_device"],
            "precision": manifest["precision"],
            "input_shape": manifest["input_shape"],
            "parity": parity,
            "parity_at_device_default": manifest.get("parity_at_device_default"),
            "matched_layers": manifest.get("matched_layers"),
            "notes": manifest.get("notes", []),
        }
    )
    return 0
