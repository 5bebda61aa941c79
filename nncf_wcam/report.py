"""The `compress` / `evaluate` report: teacher-vs-student attribution agreement, in PyTorch and through the IR."""

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nncf_wcam import evaluation
from nncf_wcam import plotting
from nncf_wcam.attribution import last_spatial_layer
from nncf_wcam.attribution import record_output_shapes
from nncf_wcam.attribution import user_layer_names
from nncf_wcam.data import DatasetSplit
from nncf_wcam.export import load_compiled
from nncf_wcam.export import run_compiled
from nncf_wcam.export import to_jsonable
from nncf_wcam.training import accuracy

FIGURE_SAMPLES = 8
OCCLUSION_BATCH = 16  # occluded copies per forward pass (fewer, larger passes: much faster through NNCF's wrapper)


def compression_statistics(compression_ctrl) -> dict:
    statistics = compression_ctrl.statistics()
    return {
        "algorithms": {name: to_jsonable(stats) for name, stats in statistics},
        "text": statistics.to_str(),
    }


def default_layer(teacher: torch.nn.Module, data: DatasetSplit) -> str:
    """The last spatial feature map (what "layers": "auto" picks), for checkpoints without attribution_matching."""
    sample = data.test.tensors[0][:1]
    shapes = record_output_shapes(teacher, lambda: teacher(sample), user_layer_names(teacher))
    return last_spatial_layer(shapes)


def _agreement(teacher_maps, student_maps) -> dict:
    return evaluation.summarize(evaluation.map_agreement(teacher_maps, student_maps))


def _predictions(model: torch.nn.Module, inputs: torch.Tensor, logits_output=None) -> list:
    with torch.no_grad(), evaluation.eval_mode(model):
        return evaluation.logits_forward(model, logits_output)(inputs).argmax(1).tolist()


def evaluate_models(
    teacher: torch.nn.Module,
    students: dict,
    data: DatasetSplit,
    layer: str,
    num_samples: int,
    logits_output=None,
    ir_dir: Optional[Path] = None,
    ir_student: Optional[str] = None,
    device: str = "CPU",
    figure: Optional[Path] = None,
) -> dict:
    """Accuracies and teacher-vs-student attribution agreement, in PyTorch and (optionally) for an IR.

    Grad-CAM at `layer` for the teacher's top-1 class on the first `num_samples` test images; the IR
    (of the student `ir_student`) is compared by Occlusion, which needs only forward passes.
    """
    teacher.eval()
    samples = data.test.tensors[0][:num_samples]
    forward = evaluation.logits_forward(teacher, logits_output)
    target = evaluation.resolve_target(forward, samples, None)
    grad_cam = dict(method="grad_cam", target=target, layer=layer, logits_output=logits_output)
    occlusion = dict(method="occlusion", target=target, logits_output=logits_output, perturbations_per_eval=OCCLUSION_BATCH)
    teacher_cam = evaluation.attribution_maps(teacher, samples, **grad_cam)
    teacher_occlusion = evaluation.attribution_maps(teacher, samples, **occlusion)
    result = {
        "samples": int(len(samples)),
        "layer": layer,
        "target": "teacher top-1 class",
        "teacher": {"accuracy": accuracy(teacher, data.test, logits_output)},
        "students": {},
    }
    figure_rows, figure_predictions = {}, {}
    for label, student in students.items():
        student_cam = evaluation.attribution_maps(student, samples, **grad_cam)
        student_occlusion = evaluation.attribution_maps(student, samples, **occlusion)
        result["students"][label] = {
            "accuracy": accuracy(student, data.test, logits_output),
            "grad_cam_agreement": _agreement(teacher_cam, student_cam),
            "occlusion_agreement": _agreement(teacher_occlusion, student_occlusion),
        }
        figure_rows[label] = student_cam[:FIGURE_SAMPLES]
        figure_predictions[label] = _predictions(student, samples[:FIGURE_SAMPLES], logits_output)
    if ir_dir is not None:
        compiled = load_compiled(ir_dir, device)
        ir_logits = run_compiled(compiled, data.test.tensors[0])
        ir_entry = {
            "path": str(ir_dir),
            "device": device,
            "accuracy": float(np.mean(ir_logits.argmax(1) == data.test.tensors[1].numpy())),
            "occlusion_agreement": _agreement(
                teacher_occlusion,
                evaluation.ir_occlusion_maps(evaluation.OpenVINOForward(compiled), samples, target, perturbations_per_eval=OCCLUSION_BATCH),
            ),
        }
        if ir_student in students:
            with torch.no_grad():
                student = students[ir_student]
                was_training = student.training
                student.eval()
                torch_logits = evaluation.logits_forward(student, logits_output)(data.test.tensors[0]).numpy()
                student.train(was_training)
            ir_entry["top1_agreement_with_pytorch"] = float(np.mean(torch_logits.argmax(1) == ir_logits.argmax(1)))
            ir_entry["max_abs_logit_diff"] = float(np.abs(torch_logits - ir_logits).max())
            ir_entry["student"] = ir_student
        result["ir"] = ir_entry
    if figure is not None:
        count = min(FIGURE_SAMPLES, len(samples))
        plotting.write_attribution_figure(
            figure,
            samples[:count],
            teacher_cam[:count],
            figure_rows,
            layer=layer,
            explained_classes=target[:count].tolist(),
            true_labels=data.test.tensors[1][:count].tolist(),
            predictions=figure_predictions,
        )
        result["figure"] = str(figure)
    return result


def summary_lines(evaluated: dict) -> list:
    """A small table: accuracy, Grad-CAM and Occlusion agreement (Pearson) per model."""
    lines = [f"{'model':<24}{'accuracy':>10}{'Grad-CAM r':>12}{'Occlusion r':>13}"]
    lines.append(f"{'teacher':<24}{evaluated['teacher']['accuracy']:>10.4f}{'-':>12}{'-':>13}")
    for label, entry in evaluated["students"].items():
        lines.append(
            f"{label:<24}{entry['accuracy']:>10.4f}{entry['grad_cam_agreement']['pearson']:>12.4f}"
            f"{entry['occlusion_agreement']['pearson']:>13.4f}"
        )
    if "ir" in evaluated:
        ir = evaluated["ir"]
        lines.append(f"{'IR (' + ir['device'] + ')':<24}{ir['accuracy']:>10.4f}{'-':>12}{ir['occlusion_agreement']['pearson']:>13.4f}")
    lines.append(f"(agreement with the teacher, Pearson r, {evaluated['samples']} test samples, layer {evaluated['layer']})")
    return lines
