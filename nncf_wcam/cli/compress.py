"""`nncf-wcam compress`: train the teacher, compress with the config (and, with --compare-naive, without its
attribution_matching block), export the IR, evaluate attributions, write the report and the figure.

Output folder:
    run.json              the run's resolved settings (config and its hash, epochs, seed, teacher, data, ...)
    teacher.pt            the uncompressed teacher (trained here, or a copy of --teacher's weights)
    checkpoint.pt         the compressed student, written after every epoch (--resume continues from it)
    naive/checkpoint.pt   with --compare-naive: the same compression without attribution_matching
    ir/                   OpenVINO IR of the student (model.xml, model.bin, manifest.json)
    report.json           accuracies, attribution agreement, compression statistics, timings, dataset
    attribution_maps.png  Grad-CAM maps of teacher and student(s) over test samples
    nncf_logs/            NNCF's graph dumps
    .nncf-wcam.lock       while a run works in the folder (a second run is refused)
"""

import contextlib
import json
import time
from pathlib import Path

from nncf_wcam.cli import distributed
from nncf_wcam.cli import inc_run
from nncf_wcam.cli.console import emit_json
from nncf_wcam.cli.console import parity_text
from nncf_wcam.cli.console import quiet_nncf
from nncf_wcam.cli.console import result
from nncf_wcam.cli.console import say
from nncf_wcam.cli.devices import openvino_device
from nncf_wcam.cli.inputs import build_checked_model
from nncf_wcam.cli.resolve import NAIVE_DIR_NAME
from nncf_wcam.cli.resolve import Run
from nncf_wcam.cli.resolve import check_compress_flags
from nncf_wcam.cli.resolve import check_model_settings
from nncf_wcam.cli.resolve import resolve_run
from nncf_wcam.cli.run_folder import naive_folder_lock
from nncf_wcam.cli.run_folder import run_folder_lock
from nncf_wcam.cli.run_settings import write_run_settings
from nncf_wcam.cli.training_run import run_compression
from nncf_wcam.cli.training_run import teacher_stage
from nncf_wcam.evaluation.report import evaluate_models
from nncf_wcam.evaluation.report import summary_lines
from nncf_wcam.io.atomic import atomic_write_text
from nncf_wcam.io.jsonable import to_jsonable
from nncf_wcam.nncf2.checkpoint import CHECKPOINT_NAME
from nncf_wcam.nncf2.checkpoint import TEACHER_NAME
from nncf_wcam.nncf2.export import export_ir
from nncf_wcam.inc.export import export_ir as inc_export_ir
from nncf_wcam.nncf2.statistics import algorithm_names
from nncf_wcam.nncf2.statistics import compression_statistics
from nncf_wcam.errors import NncfWcamError
from nncf_wcam.schema.blocks import ATTRIBUTION_MATCHING

FIGURE_NAME = "attribution_maps.png"
REPORT_NAME = "report.json"
IR_DIR_NAME = "ir"
NAIVE = "naive"


def cmd_compress(args) -> int:
    total_start = time.perf_counter()
    distributed.init_from_env()
    quiet_nncf(args.verbose)
    output = Path(args.output)
    with contextlib.ExitStack() as held:
        run, refusal = None, None
        try:
            check_compress_flags(args)
            run = _locked_run(args, output, held)
        except (NncfWcamError, OSError) as e:
            refusal = e
        # Under torchrun, a refusal on one rank stops every rank here, before any collective.
        distributed.share_refusal(refusal)
        world = distributed.world_size()
        say(
            f"nncf-wcam compress: {run.settings.config_path} -> {output} ({run.data.description}; model {run.spec['name']}; "
            f"{run.settings.epochs} epochs; seed {run.settings.seed}; {world} process{'es' if world > 1 else ''})"
            + (" (resumed)" if run.resume else "")
        )
        say(run.layer_note)
        return _compress(run, total_start)


def _locked_run(args, output: Path, held: contextlib.ExitStack) -> Run:
    """The run's folder locked (one run at a time; rank 0 holds the lock for all ranks) and its settings resolved."""
    if distributed.is_main():
        lock = held.enter_context(run_folder_lock(output, args.compare_naive))
        if getattr(lock, "taken_over", None):
            gone = "whose host released it" if lock.taken_over_elsewhere else "that is no longer running"
            say(f"note: took over the lock of a run {gone} ({lock.taken_over})")
    run = resolve_run(args, output)
    check_model_settings(run)
    if run.inc:
        inc_run.refuse_unsupported(run)
        inc_run.quiet_inc(args.verbose)
    return run


def _train(run: Run, timings: dict) -> list:
    """The teacher, then the student (and the naive student): their RunResults, the main one first."""
    distributed.barrier()  # every rank has read the folder's state before rank 0 writes run.json
    if distributed.is_main():
        write_run_settings(run.output, run.settings)
    distributed.barrier()
    _, timings["teacher_s"] = teacher_stage(run)
    if run.inc:
        runs = inc_run.train_inc_students(run)
        timings.update({f"{trained.label}_training_s": trained.train_seconds for trained in runs})
        return runs
    label = ATTRIBUTION_MATCHING if run.matching else "compressed"
    runs = [run_compression(label, run.config, run.raw, run, run.output / CHECKPOINT_NAME)]
    timings[f"{label}_training_s"] = runs[0].train_seconds
    if run.naive_config is not None:
        naive_path = run.output / NAIVE_DIR_NAME / CHECKPOINT_NAME
        with naive_folder_lock(run.output) if distributed.is_main() else contextlib.nullcontext():
            runs.append(run_compression(NAIVE, run.naive_config, dict(run.naive_config), run, naive_path, default_layers=runs[0].layers))
        timings[f"{NAIVE}_training_s"] = runs[1].train_seconds
    return runs


def _export_and_evaluate(run: Run, runs: list, timings: dict) -> tuple:
    """(export result, evaluation) of the trained students, on the CPU (training may have used a GPU)."""
    for trained in runs:
        trained.model.to("cpu")
    main_run, settings, output = runs[0], run.settings, run.output
    device = openvino_device(settings.device)
    samples = run.data.test.tensors[0][: settings.eval_samples]
    say(f"Exporting the OpenVINO IR to {output / IR_DIR_NAME} ...")
    start = time.perf_counter()
    if run.inc:
        exported = inc_export_ir(main_run.delivered, output / IR_DIR_NAME, samples, device=device, logits_output=run.logits_output, matched_layers=main_run.layers)
    else:
        exported = export_ir(main_run.compression_ctrl, main_run.model, output / IR_DIR_NAME, samples, config=run.raw, device=device, logits_output=run.logits_output, matched_layers=main_run.layers)
    timings["export_s"] = time.perf_counter() - start
    say(f"Evaluating attributions on {settings.eval_samples} test samples ...")
    start = time.perf_counter()
    teacher = build_checked_model(run.spec)
    teacher.load_state_dict(run.teacher_state)
    evaluated = evaluate_models(
        teacher,
        {trained.label: trained.model for trained in runs},
        run.data,
        main_run.layers[0] if main_run.layers else run.report_layer,
        settings.eval_samples,
        logits_output=run.logits_output,
        ir_dir=output / IR_DIR_NAME,
        ir_student=main_run.label,
        device=device,
        figure=output / FIGURE_NAME,
        student_layers={trained.label: trained.student_layer for trained in runs if getattr(trained, "student_layer", None)},
    )
    timings["evaluation_s"] = time.perf_counter() - start
    return exported, evaluated


def _add_training_records(evaluated: dict, run: Run, runs: list, exported) -> None:
    for trained in runs:
        entry = evaluated["students"][trained.label]
        if run.inc:
            inc_run.inc_records(entry, trained)
            entry.update(resumed_from_epoch=None, steps=sum(h["steps"] for h in trained.history), final_losses=trained.history[-1], training_s=trained.train_seconds)
            continue
        entry["algorithms"] = algorithm_names(trained.compression_ctrl, run.raw if trained is runs[0] else dict(run.naive_config))
        entry["compression"] = compression_statistics(trained.compression_ctrl)
        entry["checkpoint"] = str(trained.checkpoint)
        entry["resumed_from_epoch"] = trained.resumed_from_epoch
        entry["steps"] = len(trained.history)
        entry["final_losses"] = trained.history[-1] if trained.history else None
        entry["training_s"] = trained.train_seconds
    for key in ("parity", "parity_at_device_default", "precision"):
        evaluated["ir"][key] = exported.manifest[key]
    evaluated["ir"]["manifest"] = str(exported.manifest_path)


def _report(run: Run, runs: list, evaluated: dict, timings: dict, exported) -> dict:
    settings, data, output, teacher = run.settings, run.data, run.output, run.settings.teacher
    return {
        "command": "compress",
        "config": settings.config_path,
        "config_sha256": settings.config_sha256,
        "output": str(output),
        "dataset": {"name": data.name, "description": data.description, "image_shape": list(data.image_shape), "train_samples": len(data.train), "test_samples": len(data.test)},
        "model": run.spec,
        "teacher": {
            "source": teacher["source"],
            "path": teacher.get("path") or str(output / TEACHER_NAME),
            "epochs": settings.teacher_epochs if teacher["source"] == "trained" else None,
            "sha256": teacher.get("sha256"),
        },
        "matched_layers": runs[0].layers,
        "epochs": settings.epochs,
        "max_steps_per_epoch": settings.max_steps,
        "seed": settings.seed,
        "world_size": distributed.world_size(),
        "evaluation": evaluated,
        "timings": timings,
        "versions": exported.manifest.get("versions"),
    }


def _print_summary(run: Run, runs: list, evaluated: dict, timings: dict, exported) -> None:
    output = run.output
    result()
    for line in summary_lines(evaluated):
        result(line)
    result(
        f"IR: {exported.xml_path} ({exported.manifest['precision']}; {parity_text(exported.manifest)})"
    )
    result(f"Report: {output / REPORT_NAME}   Figure: {output / FIGURE_NAME}")
    parts = [f"{name[:-2].replace('_', ' ')} {seconds:.0f} s" for name, seconds in timings.items() if name != "total_s"]
    result(f"Time: {', '.join(parts)}; total {timings['total_s']:.0f} s")
    students = {label: {k: v for k, v in entry.items() if k != "compression"} for label, entry in evaluated["students"].items()}
    emit_json(
        {
            "command": "compress",
            "output": str(output),
            "report": str(output / REPORT_NAME),
            "figure": str(output / FIGURE_NAME),
            "ir": str(exported.xml_path),
            "matched_layers": runs[0].layers,
            "evaluation": {k: v for k, v in evaluated.items() if k != "students"} | {"students": students},
            "timings": timings,
        }
    )


def _compress(run: Run, total_start: float) -> int:
    timings = {}
    runs = _train(run, timings)
    if not distributed.is_main():
        return 0
    exported, evaluated = _export_and_evaluate(run, runs, timings)
    timings["total_s"] = time.perf_counter() - total_start
    _add_training_records(evaluated, run, runs, exported)
    report = _report(run, runs, evaluated, timings, exported)
    atomic_write_text(run.output / REPORT_NAME, json.dumps(to_jsonable(report), indent=2))
    _print_summary(run, runs, evaluated, timings, exported)
    return 0
