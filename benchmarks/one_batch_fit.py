"""What can a compressed student draw at all? The one-batch fit diagnostic beside the width-16 rows.

For each algorithm the teacher is compressed as in attribution_preservation.py (its block, masks fixed at
creation: 50 % filter pruning, 90 % magnitude sparsity) and the student is trained on ONE fixed batch with the
matching loss ALONE (the default block's distance, no channel drop, no task loss) for many steps. Where it stops
on that very batch is the most of the teacher's maps that compressed network can draw: if a width-16 student
stays far from its teacher even there, no weight or schedule of the block can close the benchmark's gap, and
the limit is the model's room. Reported per algorithm: the final distance (2 (1 - cos), in [0, 4]) and
Grad-CAM r on the batch, for --width (run it once per width); curves.png draws every width run so far.

    python benchmarks/one_batch_fit.py [--quick] [--width 16] [--steps 600] [--batch 256] [--output DIR]
"""

import argparse
import copy
import json
import time

import torch
from attribution_preservation import ALGORITHMS
from attribution_preservation import LAYER
from attribution_preservation import RESULTS
from attribution_preservation import add_fine_tuning_args
from attribution_preservation import apply_quick
from attribution_preservation import prepare_students
from matching_ceiling import grad_cam_r
from records import settings_record
from tqdm import tqdm

import nncf_wcam  # noqa: F401  (before nncf.torch)
from nncf_wcam.core.matcher import AttributionMatcher
from nncf_wcam.core.matcher import frozen_copy
from nncf_wcam.evaluation.accuracy import accuracy
from nncf_wcam.evaluation.figures import save_png
from nncf_wcam.io.atomic import atomic_write_text
from nncf_wcam.nncf2.training import compress
from nncf_wcam.nncf2.training import load_config

FITTED = ("filter_pruning", "magnitude_sparsity")


def fit_one_batch(teacher, algorithm: str, x: torch.Tensor, train_data, args) -> dict:
    size = x.shape[-1]
    config = {"input_info": {"sample_size": [1, 1, size, size]}, "compression": [ALGORITHMS[algorithm]], "log_dir": str(args.output / "nncf_logs")}
    torch.manual_seed(0)
    _, student = compress(copy.deepcopy(teacher), load_config(config), train_data)
    matcher = AttributionMatcher(frozen_copy(teacher), student, [LAYER], stochastic_drop=0.0)
    optimizer = torch.optim.Adam(student.parameters(), lr=args.lr)
    student.train()
    started, curve = time.time(), []
    for step in tqdm(range(args.steps), desc=f"{algorithm} w{args.width}", leave=False):
        optimizer.zero_grad()
        student(x)
        loss = matcher.loss()
        loss.backward()
        optimizer.step()
        if step % max(1, args.steps // 10) == 0 or step == args.steps - 1:
            curve.append([step + 1, float(loss.detach()) / matcher.weight])
    matcher.remove()
    student.eval()
    return {"distance": curve[-1][1], "curve": curve, "grad_cam_r_on_batch": grad_cam_r(teacher, student, x), "seconds": time.time() - started}


def plot_curves(output, path) -> None:
    """The distance on the batch against the step, one line per algorithm and width (every width*.json in `output`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    runs = sorted(output.glob("width*.json"), key=lambda p: int(p.stem[5:]))
    for run, color in zip(runs, ("black", "tab:blue", "tab:green", "tab:orange")):
        for name, result in json.loads(run.read_text())["results"].items():
            steps, distance = zip(*result["curve"])
            style = "-o" if name == "filter_pruning" else "--s"
            ax.plot(steps, distance, style, ms=3, color=color, label=f"{name}, width {run.stem[5:]}")
    ax.set_yscale("log")
    ax.set_xlabel("step (one fixed batch)")
    ax.set_ylabel("distance to the teacher's maps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    save_png(fig, path, dpi=120)
    plt.close(fig)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_fine_tuning_args(parser, "one_batch_fit")
    parser.set_defaults(teacher_cache=RESULTS / "attribution_preservation")  # the teacher of attribution_preservation.py
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--batch", type=int, default=256, help="the one fixed batch: the first N training images")
    parser.add_argument("--algorithms", nargs="+", choices=FITTED, default=list(FITTED))
    args = parser.parse_args()
    if args.quick:
        apply_quick(args)
        args.steps, args.batch = 3, 16
    return args


def main() -> None:
    args = parse_args()
    data, train_data, teacher = prepare_students(args)
    x = train_data.tensors[0][: args.batch]
    results = {name: fit_one_batch(teacher, name, x, train_data, args) for name in args.algorithms}
    lines = ["| algorithm | width | steps | distance on the batch | Grad-CAM r on the batch |", "|---|---|---|---|---|"]
    lines += [f"| {name} | {args.width} | {args.steps} | {r['distance']:.4f} | {r['grad_cam_r_on_batch']:.3f} |" for name, r in results.items()]
    teacher_acc = 100 * accuracy(teacher, data.test)
    table = f"{data.description}; teacher SmallCNN width {args.width}, {teacher_acc:.2f} % held out; one batch of {len(x)} training images; matching loss alone (distance, drop 0), Adam {args.lr:g}.\n\n" + "\n".join(lines) + "\n"
    atomic_write_text(args.output / f"width{args.width}.md", table)
    atomic_write_text(args.output / f"width{args.width}.json", json.dumps({"settings": settings_record(args), "teacher_accuracy": teacher_acc, "results": results}, indent=2))
    plot_curves(args.output, args.output / "curves.png")
    print(table)


if __name__ == "__main__":
    main()
