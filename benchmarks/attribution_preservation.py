"""Does attribution matching keep the attributions that plain compression deforms, and at what cost?

One teacher (SmallCNN) is trained once and cached. For each compression algorithm it is fine-tuned
four ways under the same seeds: plain (naive), with NNCF's knowledge_distillation (kd), with
attribution_matching (wcam), and with both (kd_wcam); `--multilayer` adds wcam matching three layers
at once (wcam_multi). Each student is measured against the teacher:
  accuracy                    on the evaluation split;
  Grad-CAM agreement          at the matched layer (Pearson, Spearman, cosine, top-10 % IoU), teacher's top-1 class;
  Saliency / IG agreement     methods the loss was not trained on;
  pointing game / ROC-AUC     of upsampled Grad-CAM against digit masks on a cluttered set (true class);
  IR occlusion agreement      Occlusion through the exported OpenVINO IR vs the teacher's (PyTorch).
Data: the real MNIST test set in ../shared/data/mnist (first 8,000 images train, last 2,000
evaluate), else scikit-learn's digits, said in the output. Writes results.json, table.md, a map grid
PNG per algorithm (teacher / naive / wcam on the same inputs) and a bar chart of agreement.

    python benchmarks/attribution_preservation.py [--quick] [--algorithms int8 filter_pruning ...]
        [--seeds 0 1 2] [--epochs 1] [--multilayer] [--output DIR]
"""

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import nncf_wcam  # noqa: F401  (before nncf.torch)
import numpy as np
import torch
from tqdm import tqdm

from nncf_wcam.checkpoint import atomic_torch_save, atomic_write_text
from nncf_wcam.data import mnist_or_digits
from nncf_wcam.evaluation import attribution_maps, compare_ir_occlusion, map_agreement, summarize
from nncf_wcam.evaluation import localization_scores
from nncf_wcam.export import ExportError, export_ir
from nncf_wcam.localization import make_cluttered_dataset
from nncf_wcam.models import SmallCNN
from nncf_wcam.plotting import save_png, write_attribution_figure
from nncf_wcam.training import accuracy, compress, fine_tune, load_config, train_teacher

LAYER = SmallCNN.LAST_CONV_BLOCK
MULTI_LAYERS = ["features.2", "features.5", LAYER]


def _quantization(bits: int) -> dict:
    return {
        "algorithm": "quantization",
        "weights": {"bits": bits, "mode": "symmetric"},
        # symmetric: NNCF makes ReLU outputs unsigned; asymmetric ranges whose low end drifts below 0
        # after a ReLU break OpenVINO parity (see the saliency benchmark's notes)
        "activations": {"bits": bits, "mode": "symmetric"},
        # min-max ranges collapse low-bit activations (DESIGN.md): percentiles instead
        "initializer": {"range": {"num_init_samples": 512, "type": "percentile", "params": {"min_percentile": 0.1, "max_percentile": 99.9}}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 0}},
    }


ALGORITHMS = {
    "int8": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 512, "type": "mean_min_max"}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 0}}},
    "int4": _quantization(4),
    "int2": _quantization(2),
    "filter_pruning": {"algorithm": "filter_pruning", "pruning_init": 0.5, "params": {"schedule": "exponential", "pruning_target": 0.5, "pruning_steps": 1}},
    "magnitude_sparsity": {"algorithm": "magnitude_sparsity", "sparsity_init": 0.9, "params": {"schedule": "multistep", "multistep_steps": [], "multistep_sparsity_levels": [0.9], "sparsity_level_setting_mode": "global"}},
    "rb_sparsity": {"algorithm": "rb_sparsity", "sparsity_init": 0.3, "params": {"schedule": "exponential", "sparsity_target": 0.7, "sparsity_target_epoch": 1, "sparsity_freeze_epoch": 2}},
}
KD = {"algorithm": "knowledge_distillation", "type": "softmax", "temperature": 2}


def matching_block(weight: float, layers: list) -> dict:
    return {"algorithm": "attribution_matching", "layers": layers, "weight": weight, "stochastic_drop": 0.3}


def variants(args) -> dict:
    wcam = matching_block(args.weight, [LAYER])
    result = {"naive": [], "kd": [KD], "wcam": [wcam], "kd_wcam": [KD, wcam]}
    if args.multilayer:
        result["wcam_multi"] = [matching_block(args.weight, MULTI_LAYERS)]
    return result


def load_data(quick: bool):
    data = mnist_or_digits()
    if quick:
        data.train.tensors = tuple(t[:512] for t in data.train.tensors)
    return data


def cached_teacher(data, args) -> SmallCNN:
    """Trains the FP32 teacher once per (data, width, epochs) and caches it in the output folder."""
    path = (args.teacher_cache or args.output) / f"teacher_w{args.width}_e{args.teacher_epochs}_{len(data.train)}.pt"
    teacher = SmallCNN(width=args.width)
    if path.is_file() and not args.fresh_teacher:
        teacher.load_state_dict(torch.load(path))
        print(f"teacher: cached {path}")
        return teacher.eval()
    torch.manual_seed(0)
    train_teacher(teacher, data.train, epochs=args.teacher_epochs, lr=2e-3, progress=True)
    atomic_torch_save(teacher.state_dict(), path)
    return teacher.eval()


class TeacherMaps:
    """The teacher's maps per method, computed once and reused for every student."""

    def __init__(self, teacher, x, target, ig_samples: int):
        self.teacher, self.x, self.target = teacher, x, target
        self.ig_samples = ig_samples
        self._maps = {}

    def options(self, method: str) -> dict:
        return {"grad_cam": {"layer": LAYER}, "integrated_gradients": {"n_steps": 16}}.get(method, {})

    def inputs(self, method: str):
        n = self.ig_samples if method == "integrated_gradients" else len(self.x)
        return self.x[:n], self.target[:n]

    def agreement(self, student, method: str) -> dict:
        x, target = self.inputs(method)
        if method not in self._maps:
            self._maps[method] = attribution_maps(self.teacher, x, method, target=target, **self.options(method))
        student_maps = attribution_maps(student, x, method, target=target, **self.options(method))
        return summarize(map_agreement(self._maps[method], student_maps))


def evaluate_student(teacher_maps: TeacherMaps, student, ctrl, data, cluttered, args, ir_dir: Path) -> dict:
    teacher, x = teacher_maps.teacher, teacher_maps.x
    result = {"accuracy": accuracy(student, data.test)}
    for method in ("grad_cam", "saliency", "integrated_gradients"):
        result[method] = teacher_maps.agreement(student, method)
    maps = attribution_maps(student, cluttered.images, "grad_cam", target=cluttered.labels, layer=LAYER, upsample_to_input=True)
    result["localization"] = summarize(localization_scores(maps, cluttered.masks))
    x_ir = x[: args.ir_samples]
    try:
        export = export_ir(ctrl, student, ir_dir, x_ir, min_top1_agreement=0.9)
    except ExportError as error:  # recorded, not fatal: one bad export must not end a long run
        tqdm.write(f"IR export failed: {error}")
        result["ir_export_failed"] = 1.0
        return result
    result["ir_export_failed"] = 0.0
    result["ir_parity"] = export.manifest["parity"]
    result["ir_occlusion"] = summarize(compare_ir_occlusion(teacher, export.xml_path, x_ir, window=4, stride=2))
    return result


def run_one(teacher, blocks, data, seed, args) -> tuple:
    size = data.image_shape[-1]
    config = {"input_info": {"sample_size": [1, 1, size, size]}, "compression": blocks, "log_dir": str(args.output / "nncf_logs")}
    if any(b.get("algorithm") == "quantization" and b.get("weights", {}).get("bits", 8) < 8 for b in blocks):
        config["target_device"] = "TRIAL"
    torch.manual_seed(seed)
    ctrl, student = compress(copy.deepcopy(teacher), load_config(config), data.train)
    fine_tune(ctrl, student, data.train, epochs=args.epochs, batch_size=64, seed=seed, max_steps=args.max_steps)
    return ctrl, student.eval()


def mean_std(values) -> dict:
    values = np.asarray([v for v in values if v is not None and not np.isnan(v)], dtype=np.float64)
    return {"mean": float(values.mean()) if len(values) else float("nan"), "std": float(values.std()) if len(values) else float("nan")}


def aggregate(runs: list) -> dict:
    """Mean and std over seeds of every numeric leaf of the per-run results."""
    def leaves(d, prefix=""):
        for k, v in d.items():
            if isinstance(v, dict):
                yield from leaves(v, f"{prefix}{k}.")
            elif isinstance(v, (int, float)):
                yield f"{prefix}{k}", v

    keys = list(dict.fromkeys(k for r in runs for k, _ in leaves(r)))  # union: a failed export lacks IR keys
    return {key: mean_std([dict(leaves(r)).get(key) for r in runs]) for key in keys}


def table(summary: dict, teacher_scores: dict, variant_names: list) -> str:
    def cell(stats, key, scale=1.0, digits=3):
        s = stats.get(key)
        return "-" if s is None or np.isnan(s["mean"]) else f"{s['mean'] * scale:.{digits}f} ± {s['std'] * scale:.{digits}f}"

    lines = [
        f"Teacher: accuracy {teacher_scores['accuracy'] * 100:.2f} %, pointing game {teacher_scores['localization']['pointing_game']:.3f}, ROC-AUC {teacher_scores['localization']['roc_auc']:.3f}.",
        "",
        "| algorithm | variant | accuracy % | Grad-CAM r | Grad-CAM IoU | Saliency r | IG r | pointing | ROC-AUC | IR occlusion r | gap closed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for algorithm, per_variant in summary.items():
        naive_gap = 1 - per_variant["naive"]["grad_cam.pearson"]["mean"]
        for variant in variant_names:
            s = per_variant[variant]
            gap = 1 - s["grad_cam.pearson"]["mean"]
            closed = "-" if variant in ("naive", "kd") or naive_gap <= 0 else f"{(naive_gap - gap) / naive_gap * 100:.0f} %"
            lines.append(
                f"| {algorithm} | {variant} | {cell(s, 'accuracy', 100, 2)} | {cell(s, 'grad_cam.pearson')} | {cell(s, 'grad_cam.iou')} | "
                f"{cell(s, 'saliency.pearson')} | {cell(s, 'integrated_gradients.pearson')} | {cell(s, 'localization.pointing_game')} | "
                f"{cell(s, 'localization.roc_auc')} | {cell(s, 'ir_occlusion.pearson')} | {closed} |"
            )
    return "\n".join(lines) + "\n"


def bar_chart(summary: dict, variant_names: list, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    algorithms = list(summary)
    width = 0.8 / len(variant_names)
    fig, ax = plt.subplots(figsize=(1.6 * len(algorithms) + 2, 3.6))
    for i, variant in enumerate(variant_names):
        means = [summary[a][variant]["grad_cam.pearson"]["mean"] for a in algorithms]
        stds = [summary[a][variant]["grad_cam.pearson"]["std"] for a in algorithms]
        ax.bar(np.arange(len(algorithms)) + i * width, means, width, yerr=stds, label=variant, capsize=2)
    ax.set_xticks(np.arange(len(algorithms)) + width * (len(variant_names) - 1) / 2, algorithms)
    ax.set_ylabel(f"Grad-CAM Pearson r vs teacher ({LAYER})")
    ax.set_ylim(min(0.0, ax.get_ylim()[0]), 1.0)
    ax.legend(fontsize=8, ncol=len(variant_names))
    fig.tight_layout()
    save_png(fig, path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--algorithms", nargs="+", choices=list(ALGORITHMS), default=list(ALGORITHMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs per student")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--teacher-epochs", type=int, default=6)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--weight", type=float, default=100.0, help="beta of attribution_matching")
    parser.add_argument("--multilayer", action="store_true", help=f"also match {MULTI_LAYERS} at once")
    parser.add_argument("--eval-samples", type=int, default=500)
    parser.add_argument("--ig-samples", type=int, default=100, help="samples for Integrated Gradients (16 steps each)")
    parser.add_argument("--ir-samples", type=int, default=32)
    parser.add_argument("--cluttered-samples", type=int, default=300)
    parser.add_argument("--fresh-teacher", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (1 runs small models best; run two processes on two cores)")
    parser.add_argument("--teacher-cache", type=Path, default=None, help="folder holding the cached teacher (default: --output)")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "attribution_preservation")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.algorithms = args.algorithms if len(args.algorithms) < len(ALGORITHMS) else ["int8"]
        args.seeds, args.max_steps, args.teacher_epochs, args.width = args.seeds[:1], 4, 1, 4
        args.eval_samples, args.ir_samples, args.cluttered_samples, args.ig_samples = 16, 2, 16, 4
    (args.output / "nncf_logs").mkdir(parents=True, exist_ok=True)
    started = time.time()
    data = load_data(args.quick)
    print(f"data: {data.description}")
    cluttered = make_cluttered_dataset(data.test, 2 * data.image_shape[-1], num_clutter=3, seed=0, num_samples=args.cluttered_samples)
    teacher = cached_teacher(data, args)
    cluttered_maps = attribution_maps(teacher, cluttered.images, "grad_cam", target=cluttered.labels, layer=LAYER, upsample_to_input=True)
    teacher_scores = {"accuracy": accuracy(teacher, data.test), "localization": summarize(localization_scores(cluttered_maps, cluttered.masks))}
    print(f"teacher: accuracy {teacher_scores['accuracy']:.4f}, localization {teacher_scores['localization']}")

    x_eval = data.test.tensors[0][: args.eval_samples]
    teacher_maps = TeacherMaps(teacher, x_eval, teacher(x_eval).argmax(1), args.ig_samples)
    variant_blocks = variants(args)
    if args.quick:
        variant_blocks = {name: variant_blocks[name] for name in ("naive", "wcam")}
    grid_inputs = data.test.tensors[0][:8]
    grid_target = teacher(grid_inputs).argmax(1)
    runs, summary = {}, {}
    jobs = [(a, v, s) for a in args.algorithms for v in variant_blocks for s in args.seeds]
    with tempfile.TemporaryDirectory(prefix="nncf_wcam_irs_") as ir_root:
        for algorithm, variant, seed in tqdm(jobs, desc="students"):
            ctrl, student = run_one(teacher, [ALGORITHMS[algorithm], *variant_blocks[variant]], data, seed, args)
            result = evaluate_student(teacher_maps, student, ctrl, data, cluttered, args, Path(ir_root) / f"{algorithm}_{variant}_{seed}")
            runs.setdefault(algorithm, {}).setdefault(variant, []).append(result)
            tqdm.write(f"{algorithm:>18} {variant:>10} seed {seed}: acc {result['accuracy']:.4f}, Grad-CAM r {result['grad_cam']['pearson']:.3f}, saliency r {result['saliency']['pearson']:.3f}")
            if seed == args.seeds[0]:
                grid = runs.setdefault("_grid", {}).setdefault(algorithm, {})
                grid[variant] = attribution_maps(student, grid_inputs, "grad_cam", target=grid_target, layer=LAYER)
                with torch.no_grad():
                    grid[variant + "/pred"] = student.eval()(grid_inputs).argmax(1).tolist()
        for algorithm in args.algorithms:
            summary[algorithm] = {variant: aggregate(runs[algorithm][variant]) for variant in variant_blocks}
            grid = runs["_grid"][algorithm]
            shown = [name for name in ("naive", "wcam", "wcam_multi") if name in grid]
            write_attribution_figure(
                args.output / f"gradcam_grid_{algorithm}.png",
                grid_inputs,
                attribution_maps(teacher, grid_inputs, "grad_cam", target=grid_target, layer=LAYER),
                {name: grid[name] for name in shown},
                method=f"Grad-CAM ({algorithm}, seed {args.seeds[0]})",
                layer=LAYER,
                explained_classes=grid_target.tolist(),
                true_labels=data.test.tensors[1][: len(grid_inputs)].tolist(),
                predictions={name: grid[name + "/pred"] for name in shown},
            )
    runs.pop("_grid")
    variant_names = list(variant_blocks)
    bar_chart(summary, variant_names, args.output / "gradcam_agreement.png")
    markdown = table(summary, teacher_scores, variant_names)
    elapsed = time.time() - started
    header = f"{data.description}; SmallCNN(width={args.width}), matched layer {LAYER}, beta {args.weight}; seeds {args.seeds}; {args.epochs} fine-tuning epoch(s); wall time {elapsed / 60:.1f} min.\n\n"
    atomic_write_text(args.output / "table.md", header + markdown)
    atomic_write_text(args.output / "results.json", json.dumps({"settings": {k: str(v) for k, v in vars(args).items()}, "data": data.description, "teacher": teacher_scores, "summary": summary, "runs": runs}, indent=2))
    print(header + markdown)


if __name__ == "__main__":
    main()
