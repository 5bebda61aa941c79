"""Saliency-guided quantization (Rezabeyk et al., arXiv 2411.05858) on real MNIST: accuracy and interpretability.

For FP32 and for 4-bit, 2-bit and mixed 4/2-bit quantization-aware training, each plain,
saliency-guided (`saliency_guided`), attribution-matched (`attribution_matching`) and both, this
measures on the evaluation images:

- accuracy;
- saliency agreement with the FP32 model: per-sample Pearson correlation of |grad| maps
  (captum Saliency, abs=True) for the FP32 model's top-1 class, averaged;
- faithfulness: deletion curve of the model's own saliency (for its own top-1 class): accuracy as
  the most salient pixels are replaced, in steps of 5 % up to 50 %, by noise drawn uniformly from
  each image's own [min, max] (the replacement saliency-guided training uses; the same noise for
  every model); the area under it, normalized to [0, 1] (the mean accuracy over the curve). Lower =
  the saliency map points at pixels the model really uses. As accuracies differ, the table also gives
  the area divided by the clean accuracy, and the area with a random pixel order for reference.
  (Replacing with 0 measures little on MNIST: most pixels already are 0, and |grad| is often large on
  background pixels next to the strokes; in a first run the FP32 model lost *less* accuracy with
  salient-first than with random-order zeroing.)

All 13 models (the FP32 teacher and the 12 quantized ones) are exported to OpenVINO IR with
`nncf_wcam.export_ir` (parity check against PyTorch on 256 evaluation images); the parity,
and how many FakeQuantize ranges the export put back on NNCF's grid, are recorded in results.json.

Data: the real MNIST test set (the folder NNCF_WCAM_DATA_ROOT names): first 8,000 images train,
last 2,000 evaluate. `--fashion-root DIR` uses FashionMNIST IDX files instead. Without MNIST, it
falls back to scikit-learn's digits at 28 x 28 and says so.

Outputs (each written atomically) in --output (default benchmarks/results/saliency_quantization/):
results.json, results.md, saliency_<bits>.png per bit width, ir/<run>/ (IR exports), and the
cached FP32 teacher (teacher_*.pt, trained once, reused by later runs with the same settings).

    python benchmarks/saliency_quantization.py                 # full run
    python benchmarks/saliency_quantization.py --quick         # tiny smoke run (< 60 s)
"""

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from records import portable
from torch.utils.data import TensorDataset
from tqdm import tqdm

import nncf_wcam  # noqa: F401  (must precede nncf.torch)
from nncf_wcam.core.logits import select_logits
from nncf_wcam.core.training import train_teacher
from nncf_wcam.errors import ExportError
from nncf_wcam.evaluation.accuracy import accuracy
from nncf_wcam.evaluation.figures import write_attribution_figure
from nncf_wcam.io.atomic import atomic_torch_save
from nncf_wcam.io.atomic import atomic_write_bytes
from nncf_wcam.nncf2.export import export_ir
from nncf_wcam.nncf2.training import compress
from nncf_wcam.nncf2.training import fine_tune
from nncf_wcam.nncf2.training import load_config
from nncf_wcam.zoo.datasets import load_mnist
from nncf_wcam.zoo.datasets import mnist_or_digits
from nncf_wcam.zoo.models import SmallCNN

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"
DEFAULT_OUTPUT = REPO / "benchmarks" / "results" / "saliency_quantization"
BIT_WIDTHS = ("int4", "int2", "mixed42")
BIT_LABELS = {"fp32": "FP32", "int4": "4-bit", "int2": "2-bit", "mixed42": "mixed 4/2-bit"}
VARIANTS = ("plain", "sg", "am", "sg_am")
VARIANT_LABELS = {
    "fp32": "FP32 teacher",
    "plain": "plain QAT",
    "sg": "+ saliency-guided",
    "am": "+ attribution matching",
    "sg_am": "+ both",
}
DELETION_FRACTIONS = np.round(np.linspace(0.0, 0.5, 11), 4)
NUM_EXAMPLES = 8
PARITY_SAMPLES = 256


# --------------------------------------------------------------------------- data


def load_data(fashion_root, quick: bool):
    if fashion_root is not None:
        split = load_mnist(fashion_root, "fashion_mnist")
    else:
        split = mnist_or_digits()
        if split.name == "digits":
            print("The numbers are NOT the paper's MNIST setting.", file=sys.stderr)
    train, test = split.train, split.test
    if quick:
        train = TensorDataset(*(t[:256] for t in train.tensors))
        test = TensorDataset(*(t[:128] for t in test.tensors))
    return split, train, test


# --------------------------------------------------------------------------- metrics


def forward_of(model):
    return lambda inputs: select_logits(model(inputs))


def saliency_maps(model, images: torch.Tensor, target: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    """|d y_target / d x| (captum Saliency), summed over channels: N x H x W."""
    from captum.attr import Saliency

    was_training = model.training
    model.eval()
    saliency = Saliency(forward_of(model))
    maps = []
    try:
        for start in range(0, len(images), batch_size):
            x = images[start : start + batch_size]
            maps.append(saliency.attribute(x, target=target[start : start + batch_size], abs=True).detach().sum(dim=1))
    finally:
        model.train(was_training)
    return torch.cat(maps)


@torch.no_grad()
def predictions(model, images: torch.Tensor, batch_size: int = 500) -> torch.Tensor:
    was_training = model.training
    model.eval()
    out = torch.cat([select_logits(model(images[s : s + batch_size])).argmax(1) for s in range(0, len(images), batch_size)])
    model.train(was_training)
    return out


def pearson_per_sample(a: torch.Tensor, b: torch.Tensor) -> np.ndarray:
    a = a.flatten(1).double()
    b = b.flatten(1).double()
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    denominator = a.norm(dim=1) * b.norm(dim=1)
    r = (a * b).sum(1) / denominator
    r[denominator == 0] = float("nan")  # a constant map has no correlation
    return r.numpy()


def deletion_curve(model, images: torch.Tensor, labels: torch.Tensor, order: torch.Tensor, noise: torch.Tensor) -> list:
    """Accuracy after replacing the first `fraction` of each sample's pixels in `order` (N x HW) by `noise` (N x HW)."""
    flat = images.flatten(1)
    num_pixels = flat.shape[1]
    curve = []
    for fraction in DELETION_FRACTIONS:
        count = int(round(fraction * num_pixels))
        deleted = flat.clone()
        if count:
            index = order[:, :count]
            deleted.scatter_(1, index, noise.gather(1, index))
        correct = predictions(model, deleted.view_as(images)).eq(labels).float().mean().item()
        curve.append(correct)
    return curve


def curve_area(curve: list) -> float:
    """Area under the deletion curve over [0, max fraction], normalized to [0, 1]."""
    return float(np.trapezoid(curve, DELETION_FRACTIONS) / DELETION_FRACTIONS[-1])


def evaluate(model, test: TensorDataset, teacher_maps: torch.Tensor, teacher_pred: torch.Tensor, seed: int) -> dict:
    images, labels = test.tensors
    own_pred = predictions(model, images)
    maps_for_teacher_class = saliency_maps(model, images, teacher_pred)
    pearson = pearson_per_sample(maps_for_teacher_class, teacher_maps)
    own_maps = maps_for_teacher_class if torch.equal(own_pred, teacher_pred) else saliency_maps(model, images, own_pred)
    salient_first = own_maps.flatten(1).argsort(dim=1, descending=True, stable=True)
    generator = torch.Generator().manual_seed(seed)
    random_order = torch.stack([torch.randperm(salient_first.shape[1], generator=generator) for _ in range(len(images))])
    flat = images.flatten(1)
    low, high = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    noise = low + (high - low) * torch.rand(flat.shape, generator=generator)
    curve = deletion_curve(model, images, labels, salient_first, noise)
    random_curve = deletion_curve(model, images, labels, random_order, noise)
    accuracy_clean = accuracy(model, test)
    return {
        "accuracy": accuracy_clean,
        "saliency_pearson": float(np.nanmean(pearson)),
        "deletion_auc": curve_area(curve),
        "deletion_auc_relative": curve_area(curve) / accuracy_clean if accuracy_clean > 0 else float("nan"),
        "deletion_auc_random": curve_area(random_curve),
        "deletion_curve": curve,
        "example_maps": maps_for_teacher_class[:NUM_EXAMPLES].numpy(),
        "example_predictions": own_pred[:NUM_EXAMPLES].tolist(),
    }


# --------------------------------------------------------------------------- runs


def teacher_model(output: Path, dataset_name: str, train: TensorDataset, width: int, epochs: int, quick: bool):
    """The FP32 model, trained once and cached in the output folder (keyed by its settings)."""
    tag = f"teacher_{dataset_name}_n{len(train)}_w{width}_e{epochs}{'_quick' if quick else ''}.pt"
    path = output / tag
    torch.manual_seed(0)  # the same initial weights every time, so the cached teacher is reproducible
    model = SmallCNN(in_channels=1, num_classes=10, width=width)
    if path.is_file():
        model.load_state_dict(torch.load(path, map_location="cpu"))
        print(f"Loaded the cached FP32 teacher from {path}")
        return model.eval(), path, 0.0
    start = time.perf_counter()
    train_teacher(model, train, epochs=epochs, lr=2e-3, batch_size=64, seed=0, progress=True)
    seconds = time.perf_counter() - start
    atomic_torch_save(model.state_dict(), path)
    return model.eval(), path, seconds


def run_config(bits: str, variant: str, quick: bool, epochs) -> dict:
    config = json.loads((CONFIGS / f"mnist_{bits}_{variant}.json").read_text())
    if quick:
        config["compression"][0]["initializer"]["range"]["num_init_samples"] = 128
    if epochs is not None:
        config["epochs"] = epochs
    return config


def compress_and_train(teacher, config: dict, train: TensorDataset, seed: int, quick: bool):
    nncf_config = load_config(config)
    torch.manual_seed(seed)
    ctrl, model = compress(copy.deepcopy(teacher), nncf_config, train, batch_size=config["batch_size"])
    start = time.perf_counter()
    history = fine_tune(
        ctrl,
        model,
        train,
        epochs=config["epochs"],
        optimizer_spec=config["optimizer"],
        batch_size=config["batch_size"],
        seed=seed,
        max_steps=2 if quick else None,
    )
    seconds = time.perf_counter() - start
    return ctrl, model, history, seconds


def export_run(ctrl, model, config: dict, test: TensorDataset, output: Path) -> dict:
    try:
        result = export_ir(ctrl, model, output, test.tensors[0][:PARITY_SAMPLES], config=config)
    except ExportError as e:
        return {"ok": False, "error": str(e).splitlines()[0]}
    parity = result.manifest["parity"]
    return {
        "ok": True,
        "path": portable(output),
        "precision": result.manifest["precision"],
        "max_abs_diff": parity["max_abs_diff"],
        "top1_agreement": parity["top1_agreement"],
        "num_samples": parity["num_samples"],
        "fake_quantize_ranges_aligned": result.manifest["fake_quantize_ranges_aligned"],
    }


def export_fp32(teacher, test: TensorDataset, output: Path) -> dict:
    """The FP32 teacher through the same route (NNCF with no compression block), for the 13th row's parity."""
    with tempfile.TemporaryDirectory(prefix="nncf_log_") as log_dir:  # NNCF writes graph dumps there
        config = {"input_info": {"sample_size": [1, *test.tensors[0].shape[1:]]}, "compression": [], "log_dir": log_dir}
        ctrl, model = compress(copy.deepcopy(teacher), load_config(config), test, batch_size=64)
        return export_run(ctrl, model, config, test, output)


def summarize(rows: list) -> list:
    groups = {}
    for row in rows:
        groups.setdefault((row["bits"], row["variant"]), []).append(row)
    summary = []
    for (bits, variant), group in groups.items():
        entry = {"bits": bits, "variant": variant, "seeds": [r["seed"] for r in group]}
        for key in ("accuracy", "saliency_pearson", "deletion_auc", "deletion_auc_relative", "deletion_auc_random", "train_seconds"):
            values = np.array([r[key] for r in group], dtype=float)
            entry[key] = float(values.mean())
            entry[f"{key}_std"] = float(values.std()) if len(values) > 1 else 0.0
        exports = [r["export"] for r in group if r.get("export")]
        entry["export"] = exports[0] if exports else None
        summary.append(entry)
    return summary


def markdown_table(summary: list, settings: dict) -> str:
    multi = len(settings["seeds"]) > 1

    def fmt(entry, key, digits=3):
        text = f"{entry[key]:.{digits}f}"
        return text + (f" ± {entry[key + '_std']:.{digits}f}" if multi else "")

    lines = [
        f"Dataset: {settings['dataset']}. SmallCNN(width={settings['width']}), teacher {settings['teacher_epochs']} epochs, "
        f"QAT {settings['epochs_label']}, seeds {settings['seeds']}"
        + (" (mean ± std)" if multi else "")
        + ".",
        "",
        "| bits | variant | accuracy | saliency Pearson vs FP32 | deletion AUC (lower = more faithful) | AUC / accuracy | random-order AUC | QAT s/seed | IR parity (max abs diff, top-1) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for entry in summary:
        export = entry.get("export")
        if export is None:
            parity = "-"
        elif export["ok"]:
            parity = f"{export['max_abs_diff']:.2g}, {export['top1_agreement']:.3f}"
        else:
            parity = "failed: " + export["error"].split(" < ")[0].replace("IR parity check failed: ", "")
        lines.append(
            f"| {BIT_LABELS[entry['bits']]} | {VARIANT_LABELS[entry['variant']]} | {fmt(entry, 'accuracy')} | "
            f"{fmt(entry, 'saliency_pearson')} | {fmt(entry, 'deletion_auc')} | {fmt(entry, 'deletion_auc_relative')} | "
            f"{fmt(entry, 'deletion_auc_random')} | "
            f"{entry['train_seconds']:.0f} | {parity} |"
        )
    return "\n".join(lines) + "\n"


def saliency_figure(path: Path, bits: str, images: torch.Tensor, labels: torch.Tensor, teacher_pred: torch.Tensor, fp32: dict, examples: dict) -> None:
    """PNG: the inputs, the FP32 saliency maps, each variant's (with r and its prediction) and its difference from FP32."""
    write_attribution_figure(
        path,
        images[:NUM_EXAMPLES],
        fp32["example_maps"],
        {label: metrics["example_maps"] for label, metrics in examples.items()},
        reference_label="FP32",
        method=f"Saliency |dy/dx|, {BIT_LABELS[bits]}",
        target_rule="the FP32 model's top-1 class",
        explained_classes=teacher_pred[:NUM_EXAMPLES].tolist(),
        true_labels=labels[:NUM_EXAMPLES].tolist(),
        predictions={label: metrics["example_predictions"] for label, metrics in examples.items()},
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT, help="output folder (default: %(default)s)")
    parser.add_argument("--quick", action="store_true", help="tiny smoke run: few samples and steps (< 60 s)")
    parser.add_argument("--epochs", type=int, default=None, help="QAT epochs (default: the configs' \"epochs\")")
    parser.add_argument("--teacher-epochs", type=int, default=None, help="FP32 training epochs (default 12; 1 with --quick)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0], help="QAT seeds (default: 0)")
    parser.add_argument("--width", type=int, default=None, help="SmallCNN width (default 8)")
    parser.add_argument("--fashion-root", type=Path, default=None, help="folder with FashionMNIST IDX files")
    parser.add_argument("--no-export", action="store_true", help="skip the OpenVINO IR exports")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (default 1: on a 2-core machine more threads spin and run ~10x slower)"
    )
    args = parser.parse_args(argv)
    if args.epochs is not None and args.epochs < 1:
        parser.error("--epochs must be >= 1")

    wall_start = time.perf_counter()
    torch.set_num_threads(max(1, args.threads))
    output = args.output.resolve()
    output.mkdir(parents=True, exist_ok=True)
    width = args.width or 8
    teacher_epochs = args.teacher_epochs or (1 if args.quick else 12)
    split, train, test = load_data(args.fashion_root, args.quick)
    print(f"Data: {split.description}; using {len(train)} train / {len(test)} evaluation images.")

    teacher, teacher_path, teacher_seconds = teacher_model(output, split.name, train, width, teacher_epochs, args.quick)
    images = test.tensors[0]
    teacher_pred = predictions(teacher, images)
    teacher_maps = saliency_maps(teacher, images, teacher_pred)
    fp32 = evaluate(teacher, test, teacher_maps, teacher_pred, seed=0)
    fp32_export = None if args.no_export else export_fp32(teacher, test, output / "ir" / "fp32")
    rows = [{"seed": 0, "bits": "fp32", "variant": "fp32", "train_seconds": teacher_seconds, "export": fp32_export, **fp32}]

    runs = [(seed, bits, variant) for seed in args.seeds for bits in BIT_WIDTHS for variant in VARIANTS]
    if args.quick:  # a smoke test: every bit width (and its export), every variant once
        runs = [run for run in runs if run[2] == "plain" or (run[1] == "int4" and run[2] == "sg_am")]
    examples = {bits: {} for bits in BIT_WIDTHS}  # variant label -> example maps and predictions (first seed)
    bar = tqdm(runs, desc="QAT runs", unit="run")
    for seed, bits, variant in bar:
        bar.set_postfix_str(f"seed {seed} {bits} {variant}")
        config = run_config(bits, variant, args.quick, args.epochs)
        ctrl, model, history, seconds = compress_and_train(teacher, config, train, seed, args.quick)
        metrics = evaluate(model, test, teacher_maps, teacher_pred, seed)
        export = None
        # One export per bit width and variant (first seed); --quick exports the plain models only.
        if not args.no_export and seed == args.seeds[0] and (variant == "plain" or not args.quick):
            export = export_run(ctrl, model, config, test, output / "ir" / f"{bits}_{variant}")
        if seed == args.seeds[0]:
            examples[bits][VARIANT_LABELS[variant]] = metrics
        rows.append(
            {
                "seed": seed,
                "bits": bits,
                "variant": variant,
                "train_seconds": seconds,
                "steps": len(history),
                "final_task_loss": history[-1]["task_loss"],
                "final_compression_loss": history[-1]["compression_loss"],
                "export": export,
                **metrics,
            }
        )
        tqdm.write(
            f"seed {seed} {bits:8s} {variant:6s} acc {metrics['accuracy']:.4f}  pearson {metrics['saliency_pearson']:.3f}  "
            f"deletion AUC {metrics['deletion_auc']:.3f}  ({seconds:.0f} s QAT)"
        )

    wall_seconds = time.perf_counter() - wall_start
    settings = {
        "dataset": split.description,
        "train_images": len(train),
        "eval_images": len(test),
        "width": width,
        "teacher_epochs": teacher_epochs,
        "teacher_cache": portable(teacher_path),
        "epochs_label": f"{args.epochs} epochs" if args.epochs else "epochs from the configs" + (" (2 steps, --quick)" if args.quick else ""),
        "seeds": args.seeds,
        "quick": args.quick,
        "deletion_fractions": DELETION_FRACTIONS.tolist(),
        "deletion_replacement": "uniform noise in each image's [min, max], the same for every model",
        "saliency": "captum Saliency, abs=True, summed over channels, for the FP32 model's top-1 class (agreement) "
        "or the model's own top-1 class (deletion)",
        "configs": {f"{b}_{v}": f"configs/mnist_{b}_{v}.json" for b in BIT_WIDTHS for v in VARIANTS},
        "wall_seconds": wall_seconds,
        "torch_threads": torch.get_num_threads(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
    }
    summary = summarize(rows)
    for row in rows:
        row.pop("example_maps", None)
        row.pop("example_predictions", None)
    results = {"settings": settings, "summary": summary, "runs": rows}
    atomic_write_bytes(output / "results.json", json.dumps(results, indent=2).encode())
    table = markdown_table(summary, settings)
    atomic_write_bytes(output / "results.md", (f"# Saliency-guided quantization\n\n{table}\nWall time: {wall_seconds:.0f} s.\n").encode())
    for bits in BIT_WIDTHS:
        saliency_figure(output / f"saliency_{bits}.png", bits, images, test.tensors[1], teacher_pred, fp32, examples[bits])
    print(table)
    print(f"Wrote {output}/results.json, results.md, saliency_*.png in {wall_seconds:.0f} s.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
