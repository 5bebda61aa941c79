"""Attribution matching on Intel Neural Compressor 3.7: INC's pruning (snip_momentum, 4x1, 70 %) and INC's FX
quantization-aware training (int8), naive against the default block, over seeds, on the attribution benchmark's
model and data (`attribution_preservation.py`: the same cached teacher, fine-tuning recipe and measures).

Each student runs INC's documented loop (`nncf_wcam.inc.fine_tune`: every callback in place) with the benchmark's
optimizer block (Adam 1e-3, cosine decay per epoch), batch 64. The pruning config prunes from the first step to the middle of training,
every `--pruning-frequency` steps, then fine-tunes with the masks fixed. Grad-CAM, Saliency and IG agreement are
measured on the fake-quantized model (QAT; Grad-CAM at the fused module that ends at the teacher's layer) or the
pruned model; accuracy on the model INC delivers (the converted int8 model, the pruned model), which is also
exported to OpenVINO IR (`nncf_wcam.inc.export_ir`, parity checked). Results: runs/*.json (resumable),
table.md, results.json and gradcam_grid_*.png in benchmarks/results/inc_attribution/.

    python benchmarks/inc_attribution.py [--quick] [--seeds 0 1 2] [--width 64] [--aggregate-only]
"""

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from records import settings_record
from tqdm import tqdm

import nncf_wcam  # noqa: F401
from attribution_preservation import LAYER
from attribution_preservation import TeacherMaps
from attribution_preservation import add_fine_tuning_args
from attribution_preservation import apply_quick
from attribution_preservation import measure
from attribution_preservation import optimizer_spec
from attribution_preservation import prepare_students
from student_tables import METHODS
from student_tables import SHORT
from student_tables import load_runs
from student_tables import main_table
from student_tables import summarize_runs
from neural_compressor.config import QuantizationAwareTrainingConfig
from neural_compressor.config import WeightPruningConfig
from nncf_wcam.evaluation.accuracy import accuracy
from nncf_wcam.evaluation.attributions import attribution_maps
from nncf_wcam.evaluation.figures import write_attribution_figure
from nncf_wcam.inc import AttributionMatchingConfig
from nncf_wcam.inc import end_training
from nncf_wcam.inc import export_ir
from nncf_wcam.inc import fine_tune
from nncf_wcam.inc import prepare_compression
from nncf_wcam.inc.statistics import conv_weight_sparsity
from nncf_wcam.io.atomic import atomic_write_text
from nncf_wcam.schema.blocks import ATTRIBUTION_MATCHING_DEFAULTS

ALGORITHMS = ("inc_pruning_70", "inc_qat_int8")
VARIANTS = ("naive", "am")
TARGET_GAP, TARGET_ACC_PT = 0.8, -0.5


def inc_config(algorithm: str, total_steps: int, args):
    if algorithm == "inc_qat_int8":
        return QuantizationAwareTrainingConfig()
    end = max(1, total_steps // 2)
    return WeightPruningConfig(target_sparsity=0.7, pruning_type="snip_momentum", pattern="4x1", start_step=0, end_step=end, pruning_frequency=min(args.pruning_frequency, end))


def train_inc_student(teacher, algorithm, variant, data, train_data, seed, args):
    """One student: INC's loop (the default block as one more config for `am`), measured before INC converts it."""
    steps_per_epoch = min(-(-len(train_data) // 64), args.max_steps or 10**9)
    confs = [inc_config(algorithm, args.epochs * steps_per_epoch, args)]
    if variant != "naive":  # "am": the default block; "beta_<b>": the default block at another weight
        weight = float(variant[5:]) if variant.startswith("beta_") else ATTRIBUTION_MATCHING_DEFAULTS["weight"]
        confs.append(AttributionMatchingConfig(layers=[LAYER], seed=seed, weight=weight))
    torch.manual_seed(seed)
    manager = prepare_compression(copy.deepcopy(teacher), confs)
    started = time.time()
    history = fine_tune(manager, train_data, epochs=args.epochs, optimizer_spec=optimizer_spec(args), batch_size=64, seed=seed, max_steps=args.max_steps, end=False, freeze_bn_epochs=args.freeze_bn_epochs)
    train_s = time.time() - started
    maps_model, student_layer, delivered = end_training(manager, teacher, LAYER)
    return maps_model, student_layer, delivered, {"train_s": train_s, "last_epoch_task_loss": history[-1]["task_loss"]}


def run_one(teacher, teacher_maps, algorithm, variant, seed, data, train_data, args) -> tuple:
    maps_model, student_layer, delivered, info = train_inc_student(teacher, algorithm, variant, data, train_data, seed, args)
    result = measure(teacher_maps, maps_model, data, student_layer)
    result["accuracy_fake_quantized"] = result["accuracy"]
    result["accuracy"] = accuracy(delivered, data.test)
    result["conv_sparsity"] = conv_weight_sparsity(delivered)
    result["student_layer"] = student_layer
    export = export_ir(delivered, args.output / "ir" / f"{algorithm}_{variant}_{seed}", data.test.tensors[0][:64])
    result["ir_parity"] = export.manifest["parity"]
    result["ir_runtime_precisions"] = export.manifest["runtime_precisions"]
    result.update(info)
    return result, maps_model, student_layer


def targets(summary: dict) -> str:
    lines = [f"| algorithm | Grad-CAM gap closed ≥ {TARGET_GAP:.0%} at acc ≥ naive {TARGET_ACC_PT:+.1f} pt |", "|---|---|"]
    for algorithm, per_variant in summary.items():
        am = per_variant.get("am", {})
        if "gap_closed" not in am:
            continue
        ok = am["gap_closed"]["grad_cam"] >= TARGET_GAP and am["accuracy_vs_naive_pt"] >= TARGET_ACC_PT
        lines.append(f"| {algorithm} | {'met' if ok else 'missed'}: {am['gap_closed']['grad_cam'] * 100:.0f} %, {am['accuracy_vs_naive_pt']:+.2f} pt |")
    return "\n".join(lines) + "\n"


def extras_table(runs: dict) -> str:
    lines = ["| algorithm | variant | conv weights pruned | IR top-1 parity (min) | IR max abs diff (max) | IR runtime precisions | train s (mean) |", "|---|---|---|---|---|---|---|"]
    for algorithm, per_variant in runs.items():
        for variant, results in per_variant.items():
            parity = [r["ir_parity"] for r in results]
            pruned = f"{np.mean([r['conv_sparsity'] for r in results]):.3f}" if "pruning" in algorithm else "-"
            lines.append(
                f"| {algorithm} | {variant} | {pruned} | {min(p['top1_agreement'] for p in parity):.3f} | {max(p['max_abs_diff'] for p in parity):.1e} | "
                f"{json.dumps(results[0]['ir_runtime_precisions'])} | {np.mean([r['train_s'] for r in results]):.0f} |"
            )
    return "\n".join(lines) + "\n"


def write_reports(args, header: str) -> None:
    runs = load_runs(args.output / "runs")
    summary = summarize_runs(runs)
    markdown = header + "\n## Naive against the default block (mean ± std over seeds)\n\n" + main_table(summary, list(VARIANTS))
    swept = sorted({v for per in summary.values() for v in per if v.startswith("beta_")}, key=lambda v: float(v[5:]))
    if swept:  # compared on the sweep's own seed: seeds differ more than the betas do
        first = summarize_runs(load_runs(args.output / "runs", seed=args.seeds[0]))
        markdown += f"\n## β sweep (seed {args.seeds[0]} only; `am` is the default β = {ATTRIBUTION_MATCHING_DEFAULTS['weight']:g})\n\n" + main_table(first, ["naive", "am", *swept])
    markdown += "\n## What INC delivered\n\n" + extras_table(runs) + "\n## Targets\n\n" + targets(summary)
    atomic_write_text(args.output / "table.md", markdown)
    atomic_write_text(args.output / "results.json", json.dumps({"settings": settings_record(args), "summary": summary}, indent=2))
    print(markdown)


def write_grids(args, teacher, data, grid_models: dict) -> None:
    grid_x = data.test.tensors[0][:8]
    grid_target = teacher(grid_x).argmax(1)
    teacher_maps = attribution_maps(teacher, grid_x, "grad_cam", target=grid_target, layer=LAYER)
    for algorithm, models in grid_models.items():
        maps = {v: attribution_maps(m, grid_x, "grad_cam", target=grid_target, layer=layer) for v, (m, layer) in models.items()}
        with torch.no_grad():
            predictions = {v: m(grid_x).argmax(1).tolist() for v, (m, _) in models.items()}
        write_attribution_figure(
            args.output / f"gradcam_grid_{algorithm}.png", grid_x, teacher_maps, maps, method=f"Grad-CAM ({algorithm}, seed {args.seeds[0]})", layer=LAYER,
            explained_classes=grid_target.tolist(), true_labels=data.test.tensors[1][:8].tolist(), predictions=predictions,
        )


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_fine_tuning_args(parser, "inc_attribution")
    parser.set_defaults(width=64, teacher_cache=Path(__file__).parent / "results" / "attribution_preservation")
    parser.add_argument("--algorithms", nargs="+", choices=ALGORITHMS, default=list(ALGORITHMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--betas", nargs="*", type=float, default=[], help="the default block at these weights too (first seed): what limits the gap closed")
    parser.add_argument("--freeze-bn-epochs", type=int, default=0, help="BatchNorm statistics frozen for the last epochs (as the configs' \"freeze_bn_epochs\")")
    parser.add_argument("--pruning-frequency", type=int, default=25, help="steps between INC's pruning updates")
    parser.add_argument("--ig-samples", type=int, default=64)
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--aggregate-only", action="store_true", help="rebuild the tables from runs/*.json")
    args = parser.parse_args()
    if args.quick:
        apply_quick(args)
        args.seeds, args.ig_samples, args.ig_steps, args.pruning_frequency = args.seeds[:1], 4, 4, 1
    return args


def main() -> None:
    args = parse_args()
    (args.output / "runs").mkdir(parents=True, exist_ok=True)
    header_path = args.output / "header.txt"
    if args.aggregate_only:
        write_reports(args, header_path.read_text() if header_path.is_file() else "")
        return
    started = time.time()
    data, train_data, teacher = prepare_students(args)
    teacher_acc = accuracy(teacher, data.test)
    teacher_maps = TeacherMaps(teacher, data.test.tensors[0][: args.eval_samples], args.ig_samples, args.ig_steps)
    grid_models = {}
    jobs = [(a, v, s) for s in args.seeds for a in args.algorithms for v in VARIANTS]
    jobs += [(a, f"beta_{beta:g}", args.seeds[0]) for beta in args.betas for a in args.algorithms]
    for algorithm, variant, seed in tqdm(jobs, desc="INC students"):
        path = args.output / "runs" / f"{algorithm}_{variant}_{seed}.json"
        if path.is_file():
            continue
        result, maps_model, layer = run_one(teacher, teacher_maps, algorithm, variant, seed, data, train_data, args)
        atomic_write_text(path, json.dumps({"algorithm": algorithm, "variant": variant, "seed": seed, "result": result}, indent=2))
        tqdm.write(f"{algorithm:>15} {variant:>6} seed {seed}: acc {result['accuracy']:.4f}, " + ", ".join(f"{SHORT[m]} r {result[m]['pearson']:.3f}" for m in METHODS) + f" ({result['train_s']:.0f} s)")
        if seed == args.seeds[0] and variant in VARIANTS:
            grid_models.setdefault(algorithm, {})[variant] = (maps_model, layer)
    write_grids(args, teacher, data, grid_models)
    header = (
        f"{data.description}; teacher SmallCNN(width={args.width}) ({args.teacher_epochs} epochs on all {len(data.train)} training images), accuracy {teacher_acc * 100:.2f} %; "
        f"students fine-tuned on the first {len(train_data)} with INC {nncf_wcam.inc.installed_inc_version()}'s loop: {args.epochs} epochs, batch 64, {json.dumps(optimizer_spec(args))}; "
        f"pruning snip_momentum 4x1 to 70 % over the first half, every {args.pruning_frequency} steps; QAT: INC's FX default (int8); BatchNorm statistics frozen for the last {args.freeze_bn_epochs} epochs; matched layer {LAYER}; "
        f"seeds {args.seeds}; Grad-CAM and Saliency on {args.eval_samples} held-out images, IG ({args.ig_steps} steps) on {args.ig_samples}; this invocation {(time.time() - started) / 60:.1f} min.\n"
    )
    atomic_write_text(header_path, header)
    write_reports(args, header)


if __name__ == "__main__":
    main()
