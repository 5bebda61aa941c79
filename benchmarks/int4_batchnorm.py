"""Why int4 accuracy jumps between seeds and epochs, and what steadies it.

The students of attribution_preservation.py train BatchNorm in train mode (batch statistics) and are
evaluated in eval mode (running statistics). Under 4-bit activation quantizers the small difference
between the two moves activations across quantization levels, so eval-mode accuracy can drop by tens
of points after an epoch whose training loss fell. This script fine-tunes int4 students as
attribution_preservation.py does and records the eval-mode accuracy after every epoch, with two
recipes, the same for naive and for the default block:
  plain       BatchNorm trains in train mode throughout;
  freeze_bn   the running statistics are frozen for the last `--freeze-epochs` epochs (BatchNorm
              normalizes with them while the weights go on training; `training.freeze_batchnorm_statistics`,
              the config's "freeze_bn_epochs"), as PyTorch's QAT recipe does (`freeze_bn_stats`): the
              network that trains is then the one that is evaluated.

    python benchmarks/int4_batchnorm.py [--quick] [--seeds 0 1 2] [--epochs 8] [--freeze-epochs 2] [--output DIR]
"""

import argparse
import json
from pathlib import Path

import numpy as np
from attribution_preservation import ALGORITHMS
from attribution_preservation import DEFAULT_BLOCK
from attribution_preservation import LAYER
from attribution_preservation import RESULTS
from attribution_preservation import TeacherMaps
from attribution_preservation import add_fine_tuning_args
from attribution_preservation import apply_quick
from attribution_preservation import optimizer_spec
from attribution_preservation import prepare_students
from attribution_preservation import train_student
from records import settings_record
from tqdm import tqdm

import nncf_wcam  # noqa: F401  (before nncf.torch)
from nncf_wcam.evaluation.accuracy import accuracy
from nncf_wcam.evaluation.figures import save_png
from nncf_wcam.io.atomic import atomic_write_text

VARIANTS = {"naive": [], "am": [DEFAULT_BLOCK]}
RECIPES = ("plain", "freeze_bn")


def run_one(teacher, data, train_data, blocks, recipe, seed, args) -> dict:
    """One int4 student, its eval-mode accuracy recorded after every epoch."""
    eval_accuracy = []
    student, _, train_s = train_student(
        teacher, [ALGORITHMS["int4"], *blocks], data, train_data, seed, args,
        freeze_bn_epochs=args.freeze_epochs if recipe == "freeze_bn" else 0,
        after_epoch=lambda _epoch, model: eval_accuracy.append(accuracy(model.eval(), data.test)),
    )
    return {"eval_accuracy_per_epoch": eval_accuracy, "accuracy": eval_accuracy[-1], "train_s": train_s, "student": student}


def summary_table(results: dict) -> str:
    lines = ["| recipe | variant | seeds | accuracy % (mean ± std) | worst seed % | Grad-CAM r | eval accuracy % after each epoch (seed by seed) |", "|---|---|---|---|---|---|---|"]
    for (recipe, variant), runs in results.items():
        acc = np.array([r["accuracy"] for r in runs]) * 100
        r_cam = np.array([r["grad_cam"] for r in runs])
        traces = "; ".join(" ".join(f"{a * 100:.0f}" for a in r["eval_accuracy_per_epoch"]) for r in runs)
        lines.append(f"| {recipe} | {variant} | {len(runs)} | {acc.mean():.2f} ± {acc.std():.2f} | {acc.min():.2f} | {r_cam.mean():.3f} ± {r_cam.std():.3f} | {traces} |")
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(RECIPES), figsize=(5 * len(RECIPES), 3.6), sharey=True, squeeze=False)
    for ax, recipe in zip(axes[0], RECIPES):
        for variant, color in (("naive", "black"), ("am", "tab:blue")):
            for i, run in enumerate(results.get((recipe, variant), [])):
                trace = np.array(run["eval_accuracy_per_epoch"]) * 100
                ax.plot(np.arange(1, len(trace) + 1), trace, "-o", ms=3, color=color, alpha=0.8, label=variant if i == 0 else None)
        ax.set_title(f"int4, {recipe}")
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("eval-mode accuracy %")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path, dpi=120)
    plt.close(fig)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_fine_tuning_args(parser, "int4_batchnorm")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--freeze-epochs", type=int, default=2)
    parser.set_defaults(teacher_cache=RESULTS / "attribution_preservation")  # the teacher of attribution_preservation.py
    args = parser.parse_args()
    if args.quick:
        apply_quick(args)
        args.seeds, args.freeze_epochs = args.seeds[:1], 1
    return args


def main() -> None:
    args = parse_args()
    data, train_data, teacher = prepare_students(args)
    teacher_maps = TeacherMaps(teacher, data.test.tensors[0][: args.eval_samples], ig_samples=0, ig_steps=1)
    jobs = [(recipe, variant, seed) for seed in args.seeds for recipe in RECIPES for variant in VARIANTS]
    results = {}
    for recipe, variant, seed in tqdm(jobs, desc="int4 students"):
        run = run_one(teacher, data, train_data, VARIANTS[variant], recipe, seed, args)
        run["grad_cam"] = float(teacher_maps.agreement(run.pop("student"), "grad_cam")["pearson"])
        results.setdefault((recipe, variant), []).append({"seed": seed, **run})
        tqdm.write(f"{recipe} {variant} seed {seed}: accuracy per epoch {[round(a, 3) for a in run['eval_accuracy_per_epoch']]}, Grad-CAM r {run['grad_cam']:.3f}")
    header = (
        f"{data.description}; int4 (symmetric, percentile ranges, TRIAL) students fine-tuned on the first {len(train_data)} images, "
        f"{args.epochs} epochs, batch 64, {json.dumps(optimizer_spec(args))}; freeze_bn freezes the BatchNorm statistics for the last "
        f"{args.freeze_epochs} epochs; accuracy on the held-out images in eval mode; Grad-CAM r at {LAYER} on {args.eval_samples} held-out images.\n\n"
    )
    markdown = header + summary_table(results)
    records = [{"recipe": recipe, "variant": variant, **run} for (recipe, variant), runs in results.items() for run in runs]
    atomic_write_text(args.output / "table.md", markdown)
    atomic_write_text(args.output / "results.json", json.dumps({"settings": settings_record(args), "runs": records}, indent=2))
    plot(results, args.output / "eval_accuracy_per_epoch.png")
    print(markdown)


if __name__ == "__main__":
    main()
