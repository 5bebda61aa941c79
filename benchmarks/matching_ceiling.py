"""What limits the Grad-CAM gap that attribution matching closes for filter pruning and sparsity?

For each compression level, one student per variant, fine-tuned as in attribution_preservation.py:
  naive        the compression block alone;
  default      + {"algorithm": "attribution_matching"} (beta 10);
  beta_1000    + the block at beta 1000, where the matching loss outweighs the task loss ~100 to 1.
If beta 1000 reaches no higher Grad-CAM agreement than the default, a larger weight cannot close the
rest of the gap: what is left is what the compressed network can represent (its capacity at that
level), not a weak loss. Agreement is measured on held-out images and on training images: equal values
rule out overfitting the training maps. `distance` is the matching loss of the last epoch divided by
beta (2 (1 - cos), averaged over the epoch's training batches, in train-mode BatchNorm).

    python benchmarks/matching_ceiling.py [--quick] [--epochs 8] [--train-samples 8000] [--output DIR]
"""

import argparse
import copy
import json
from pathlib import Path

import numpy as np
from attribution_preservation import ALGORITHMS
from attribution_preservation import LAYER
from attribution_preservation import RESULTS
from attribution_preservation import add_fine_tuning_args
from attribution_preservation import apply_quick
from attribution_preservation import optimizer_spec
from attribution_preservation import prepare_students
from attribution_preservation import train_student
from records import settings_record
from tqdm import tqdm

import nncf_wcam  # noqa: F401  (before nncf.torch)
from nncf_wcam.evaluation.accuracy import accuracy
from nncf_wcam.evaluation.agreement import map_agreement
from nncf_wcam.evaluation.agreement import summarize
from nncf_wcam.evaluation.attributions import attribution_maps
from nncf_wcam.evaluation.figures import save_png
from nncf_wcam.io.atomic import atomic_write_text
from nncf_wcam.schema.blocks import ATTRIBUTION_MATCHING_DEFAULTS

LEVELS = {"filter_pruning": [0.25, 0.5], "magnitude_sparsity": [0.7, 0.9]}
VARIANTS = {"naive": None, "default": {}, "beta_1000": {"weight": 1000.0}}


def compression_block(algorithm: str, level: float) -> dict:
    """The benchmark's block for the algorithm, at another pruning or sparsity level."""
    block = copy.deepcopy(ALGORITHMS[algorithm])
    if algorithm == "filter_pruning":
        block["pruning_init"] = level
        block["params"]["pruning_target"] = level
    else:
        block["sparsity_init"] = level
        block["params"]["multistep_sparsity_levels"] = [level]
    return block


def grad_cam_r(teacher, student, x) -> float:
    target = teacher(x).argmax(1)
    maps = [attribution_maps(m, x, "grad_cam", target=target, layer=LAYER) for m in (teacher, student)]
    return float(summarize(map_agreement(*maps))["pearson"])


def run_one(teacher, data, train_data, algorithm, level, overrides, args) -> dict:
    blocks = [compression_block(algorithm, level)]
    if overrides is not None:
        blocks.append({"algorithm": "attribution_matching", **overrides})
    student, history, train_s = train_student(teacher, blocks, data, train_data, 0, args)
    last = [h for h in history if h["epoch"] == history[-1]["epoch"]]
    beta = None if overrides is None else overrides.get("weight", ATTRIBUTION_MATCHING_DEFAULTS["weight"])
    return {
        "accuracy": accuracy(student, data.test),
        "grad_cam_r_heldout": grad_cam_r(teacher, student, data.test.tensors[0][: args.eval_samples]),
        "grad_cam_r_train": grad_cam_r(teacher, student, train_data.tensors[0][: args.eval_samples]),
        "distance": None if beta is None else float(np.mean([h["attribution_loss"] for h in last])) / beta,
        "train_s": train_s,
    }


def gap_closed(r: float, r_naive: float) -> float:
    return (r - r_naive) / (1.0 - r_naive)


def table(results: dict) -> str:
    lines = [
        "| algorithm | level | variant | accuracy % | Δ acc vs naive (pt) | Grad-CAM r held-out | Grad-CAM r train | gap closed | last-epoch distance |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, per_variant in results.items():
        algorithm, level = key.rsplit("@", 1)
        naive = per_variant.get("naive")
        for variant, r in per_variant.items():
            delta = gap = "-"
            if naive is not None and variant != "naive":
                delta = f"{100 * (r['accuracy'] - naive['accuracy']):+.2f}"
                gap = f"{100 * gap_closed(r['grad_cam_r_heldout'], naive['grad_cam_r_heldout']):.0f} %"
            distance = "-" if r["distance"] is None else f"{r['distance']:.3f}"
            lines.append(
                f"| {algorithm} | {level} | {variant} | {100 * r['accuracy']:.2f} | {delta} | {r['grad_cam_r_heldout']:.3f} | "
                f"{r['grad_cam_r_train']:.3f} | {gap} | {distance} |"
            )
    return "\n".join(lines) + "\n"


def plot(results: dict, path: Path) -> None:
    """Held-out Grad-CAM r per level: naive, the default block, beta 1000."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.6))
    keys = list(results)
    for i, (variant, color) in enumerate((("naive", "black"), ("default", "tab:blue"), ("beta_1000", "tab:red"))):
        values = [results[k].get(variant, {}).get("grad_cam_r_heldout", np.nan) for k in keys]
        ax.bar(np.arange(len(keys)) + (i - 1) * 0.27, values, width=0.27, color=color, label=variant)
    ax.set_xticks(np.arange(len(keys)), [k.replace("@", "\n") for k in keys], fontsize=8)
    lowest = np.nanmin([r.get("grad_cam_r_heldout", np.nan) for per in results.values() for r in per.values()])
    ax.set_ylim(min(0.7, np.floor(lowest * 10) / 10), 1.0)  # from 0 the differences would not show
    ax.set_ylabel(f"Grad-CAM r vs teacher ({LAYER})")
    ax.set_title("Agreement that a larger β does not buy: the compressed network's ceiling")
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    save_png(fig, path, dpi=120)
    plt.close(fig)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_fine_tuning_args(parser, "matching_ceiling")
    parser.set_defaults(teacher_cache=RESULTS / "attribution_preservation")  # the teacher of attribution_preservation.py
    args = parser.parse_args()
    if args.quick:
        apply_quick(args)
        args.epochs = 1
    return args


def main() -> None:
    args = parse_args()
    data, train_data, teacher = prepare_students(args)
    levels = {"filter_pruning": [0.5]} if args.quick else LEVELS
    jobs = [(a, level, v) for a, ls in levels.items() for level in ls for v in VARIANTS]
    results = {}
    for algorithm, level, variant in tqdm(jobs, desc="students"):
        result = run_one(teacher, data, train_data, algorithm, level, VARIANTS[variant], args)
        results.setdefault(f"{algorithm}@{level:g}", {})[variant] = result
        tqdm.write(f"{algorithm} {level:g} {variant}: acc {result['accuracy']:.4f}, Grad-CAM r held-out {result['grad_cam_r_heldout']:.3f}, train {result['grad_cam_r_train']:.3f}")
    header = (
        f"{data.description}; students fine-tuned on the first {len(train_data)} training images, {args.epochs} epochs, batch 64, "
        f"{json.dumps(optimizer_spec(args))}, seed 0; Grad-CAM at {LAYER} on {args.eval_samples} held-out and {args.eval_samples} training images.\n\n"
    )
    markdown = header + table(results)
    atomic_write_text(args.output / "table.md", markdown)
    atomic_write_text(args.output / "results.json", json.dumps({"settings": settings_record(args), "results": results}, indent=2))
    plot(results, args.output / "ceiling.png")
    print(markdown)


if __name__ == "__main__":
    main()
