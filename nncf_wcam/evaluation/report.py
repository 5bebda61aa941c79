"""The report of a compression run: accuracies and teacher-vs-student attribution agreement, in PyTorch (Grad-CAM,
Occlusion) and through the deployed IR (Occlusion), with the figure."""

from pathlib import Path
from typing import Optional

import numpy as np
import torch

from nncf_wcam.deploy.parity import top1_agreement
from nncf_wcam.deploy.runtime import load_compiled
from nncf_wcam.deploy.runtime import run_compiled
from nncf_wcam.evaluation.accuracy import accuracy
from nncf_wcam.evaluation.agreement import map_agreement
from nncf_wcam.evaluation.agreement import summarize
from nncf_wcam.evaluation.attributions import attribution_maps
from nncf_wcam.evaluation.attributions import eval_mode
from nncf_wcam.evaluation.attributions import logits_forward
from nncf_wcam.evaluation.attributions import resolve_target
from nncf_wcam.evaluation.figures import write_attribution_figure
from nncf_wcam.evaluation.ir_attributions import OpenVINOForward
from nncf_wcam.evaluation.ir_attributions import ir_occlusion_maps
from nncf_wcam.zoo.datasets import DatasetSplit

FIGURE_SAMPLES = 8
OCCLUSION_BATCH = 16  # occluded copies per forward pass (fewer, larger passes: much faster through NNCF's wrapper)


def _agreement(teacher_maps, student_maps) -> dict:
    return summarize(map_agreement(teacher_maps, student_maps))


def _predictions(model: torch.nn.Module, inputs: torch.Tensor, logits_output=None) -> list:
    with torch.no_grad(), eval_mode(model):
        return logits_forward(model, logits_output)(inputs).argmax(1).tolist()


def _ir_entry(ir_dir: Path, device: str, data: DatasetSplit, samples, target, teacher_occlusion, student, label, logits_output) -> dict:
    """The IR's accuracy, its Occlusion agreement with the teacher, and (given its PyTorch student) their agreement."""
    compiled = load_compiled(ir_dir, device)
    ir_logits = run_compiled(compiled, data.test.tensors[0])
    entry = {
        "path": str(ir_dir),
        "device": device,
        "accuracy": float(np.mean(ir_logits.argmax(1) == data.test.tensors[1].numpy())),
        "occlusion_agreement": _agreement(teacher_occlusion, ir_occlusion_maps(OpenVINOForward(compiled), samples, target, perturbations_per_eval=OCCLUSION_BATCH)),
    }
    if student is not None:
        with torch.no_grad():
            was_training = student.training
            student.eval()
            torch_logits = logits_forward(student, logits_output)(data.test.tensors[0]).numpy()
            student.train(was_training)
        entry["top1_agreement_with_pytorch"] = top1_agreement(torch_logits, ir_logits)[0]
        entry["max_abs_logit_diff"] = float(np.abs(torch_logits - ir_logits).max())
        entry["student"] = label
    return entry


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
    student_layers: Optional[dict] = None,
) -> dict:
    """Accuracies and teacher-vs-student attribution agreement, in PyTorch and (optionally) for an IR.

    Grad-CAM at `layer` for the teacher's top-1 class on the first `num_samples` test images; the IR
    (of the student `ir_student`) is compared by Occlusion, which needs only forward passes.
    `student_layers`: {label: the student's name of `layer`} for students whose modules were renamed (a model
    fused by INC's quantization-aware training); the others use `layer`.
    """
    teacher.eval()
    samples = data.test.tensors[0][:num_samples]
    forward = logits_forward(teacher, logits_output)
    target = resolve_target(forward, samples, None)
    grad_cam = dict(method="grad_cam", target=target, layer=layer, logits_output=logits_output)
    occlusion = dict(method="occlusion", target=target, logits_output=logits_output, perturbations_per_eval=OCCLUSION_BATCH)
    teacher_cam = attribution_maps(teacher, samples, **grad_cam)
    teacher_occlusion = attribution_maps(teacher, samples, **occlusion)
    result = {
        "samples": int(len(samples)),
        "layer": layer,
        "target": "teacher top-1 class",
        "teacher": {"accuracy": accuracy(teacher, data.test, logits_output)},
        "students": {},
    }
    figure_rows, figure_predictions = {}, {}
    for label, student in students.items():
        student_cam = attribution_maps(student, samples, **{**grad_cam, "layer": (student_layers or {}).get(label, layer)})
        student_occlusion = attribution_maps(student, samples, **occlusion)
        result["students"][label] = {
            "accuracy": accuracy(student, data.test, logits_output),
            "grad_cam_agreement": _agreement(teacher_cam, student_cam),
            "occlusion_agreement": _agreement(teacher_occlusion, student_occlusion),
        }
        figure_rows[label] = student_cam[:FIGURE_SAMPLES]
        figure_predictions[label] = _predictions(student, samples[:FIGURE_SAMPLES], logits_output)
    if ir_dir is not None:
        result["ir"] = _ir_entry(ir_dir, device, data, samples, target, teacher_occlusion, students.get(ir_student), ir_student, logits_output)
    if figure is not None:
        count = min(FIGURE_SAMPLES, len(samples))
        write_attribution_figure(
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
