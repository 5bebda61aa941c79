"""Attribution matching in NNCF 3.x's quantization-aware training (or pruning) flow, with and without the matcher.

NNCF 3.x's documented PyTorch flow (docs/usage/training_time_compression/quantization_aware_training/Usage.md):
`nncf.quantize(model, calibration_dataset)`, fine-tune in your own loop, `ov.convert_model(model, example_input=...)`.
Pruning (docs/usage/training_time_compression/pruning/Usage.md): `nncf.prune(model, mode=..., ratio=...,
examples_inputs=...)`, then fine-tune. The attribution matcher is one more loss term in that loop.

For each seed the same teacher is compressed twice, fine-tuned with the same data order, once with the task
loss alone ("naive") and once with the task loss plus `matcher.loss()` ("wcam"); both are exported to IR and
checked against PyTorch. Prints a table and writes results.json to --output.

    NNCF_WCAM_DATA_ROOT=/path/to/mnist python examples/nncf3_qat.py --output runs/nncf3_qat   # int8 QAT on MNIST
    python examples/nncf3_qat.py --algorithm pruning --ratio 0.7 --output runs/nncf3_prune
    python examples/nncf3_qat.py --quick --output /tmp/q                       # a smoke run (tests)

Needs NNCF 3.4 (in a clone: pip install -e ".[nncf3]"). Without NNCF_WCAM_DATA_ROOT it runs on scikit-learn's digits.
"""

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import nncf
import numpy as np
import torch
from torch.utils.data import DataLoader
from torch.utils.data import Subset
from torch.utils.data import TensorDataset

from nncf_wcam import AttributionMatcher
from nncf_wcam import frozen_copy
from nncf_wcam.core.saliency import SaliencyGuidedRegularizer
from nncf_wcam.evaluation.accuracy import accuracy
from nncf_wcam.evaluation.agreement import compare_attributions
from nncf_wcam.evaluation.agreement import summarize
from nncf_wcam.io.atomic import atomic_write_text
from nncf_wcam.nncf3.data import calibration_dataset
from nncf_wcam.nncf3.export import export_ir
from nncf_wcam.nncf3.training import fine_tune
from nncf_wcam.zoo.datasets import load_digits
from nncf_wcam.zoo.datasets import mnist_or_digits
from nncf_wcam.zoo.models import SmallCNN

LAYER = SmallCNN.LAST_CONV_BLOCK


def load_data(args):
    data = load_digits(image_size=16) if args.quick else mnist_or_digits()
    train, test = data.train, data.test
    if args.train_samples:
        train = TensorDataset(*(t[: args.train_samples] for t in train.tensors))
    test = TensorDataset(*(t[: args.test_samples] for t in test.tensors))
    return data.description, train, test


def compress(teacher, train, args, seed):
    """A copy of the teacher, compressed by NNCF 3.x (the calibration draws its own samples from `train`)."""
    model = copy.deepcopy(teacher).train()
    example = train.tensors[0][:1]
    if args.algorithm == "int8":
        loader = DataLoader(Subset(train, range(min(len(train), args.calibration_samples))), batch_size=args.batch_size)
        return nncf.quantize(model, calibration_dataset(loader), subset_size=len(loader))  # subset_size counts batches
    return nncf.prune(model, mode=nncf.PruneMode.UNSTRUCTURED_MAGNITUDE_GLOBAL, ratio=args.ratio, examples_inputs=example)


def run_variant(variant, teacher, train, test, args, seed, output):
    torch.manual_seed(seed)
    student = compress(teacher, train, args, seed)
    losses = []
    matcher = None
    if variant in ("wcam", "sg_wcam"):
        options = {} if args.beta is None else {"weight": args.beta}
        matcher = AttributionMatcher(frozen_copy(teacher), student, [LAYER], stochastic_drop=args.drop, seed=seed, **options)
        losses.append(matcher.loss)
    if variant.startswith("sg"):
        losses.append(SaliencyGuidedRegularizer(student, mask_fraction=0.5, weight=1.0, seed=seed).loss)
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(seed))
    optimizer = torch.optim.Adam(student.parameters(), lr=args.lr)
    start = time.perf_counter()
    history = fine_tune(student, loader, optimizer, losses, epochs=args.epochs)
    seconds = time.perf_counter() - start
    samples = test.tensors[0][: args.eval_samples]
    grad_cam = summarize(compare_attributions(teacher, student, samples, "grad_cam", layer=LAYER))
    exported = export_ir(student, output / f"ir_{variant}_seed{seed}", test.tensors[0][: args.parity_samples])
    return {
        "accuracy": accuracy(student, test),
        "grad_cam_pearson": grad_cam["pearson"],
        "ir_parity": exported.manifest["parity"],
        "ir_precisions": exported.manifest["runtime_precisions"],
        "beta": matcher.weight if matcher else None,
        "history": history,
        "training_s": seconds,
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="folder for results.json and the IRs")
    parser.add_argument("--algorithm", choices=("int8", "pruning"), default="int8")
    parser.add_argument("--ratio", type=float, default=0.7, help="pruning ratio (--algorithm pruning)")
    parser.add_argument("--variants", nargs="+", default=["naive", "wcam"], choices=("naive", "wcam", "sg", "sg_wcam"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--beta", type=float, default=None, help="matching weight (default: AttributionMatcher's)")
    parser.add_argument("--drop", type=float, default=0.3, help="stochastic channel drop of the teacher's maps")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--teacher-epochs", type=int, default=3)
    parser.add_argument("--lr", type=float, default=1e-4, help="fine-tuning learning rate (Adam)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--train-samples", type=int, default=None, help="first N training images (default: all)")
    parser.add_argument("--test-samples", type=int, default=500)
    parser.add_argument("--eval-samples", type=int, default=200, help="test images for Grad-CAM agreement")
    parser.add_argument("--parity-samples", type=int, default=200, help="test images for the IR parity check")
    parser.add_argument("--calibration-samples", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="digits 16x16 (1,348 train / 64 test), one seed (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.test_samples = args.seeds[:1], 64
        args.eval_samples = args.parity_samples = 64
        args.calibration_samples, args.teacher_epochs = 128, 4
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)

    description, train, test = load_data(args)
    print(f"NNCF {nncf.__version__}; {description}; train {len(train)} / test {len(test)}; algorithm {args.algorithm}")
    torch.manual_seed(0)
    teacher = SmallCNN(in_channels=train.tensors[0].shape[1])
    teacher_loader = DataLoader(train, batch_size=32, shuffle=True, generator=torch.Generator().manual_seed(0))
    fine_tune(teacher, teacher_loader, torch.optim.Adam(teacher.parameters(), lr=3e-3), epochs=args.teacher_epochs)
    teacher.eval()
    results = {"teacher_accuracy": accuracy(teacher, test), "runs": {}}
    print(f"teacher accuracy {results['teacher_accuracy']:.4f}")
    for seed in args.seeds:
        for variant in args.variants:
            result = run_variant(variant, teacher, train, test, args, seed, output)
            results["runs"][f"{variant}/seed{seed}"] = result
            print(
                f"seed {seed} {variant:8s} accuracy {result['accuracy']:.4f}  Grad-CAM r {result['grad_cam_pearson']:.4f}  "
                f"IR top-1 parity {result['ir_parity']['top1_agreement']:.4f} (max |diff| {result['ir_parity']['max_abs_diff']:.2g})"
            )
    results["summary"] = {}
    for variant in args.variants:
        runs = [results["runs"][f"{variant}/seed{s}"] for s in args.seeds]
        summary = {
            key: [float(np.mean(values)), float(np.std(values))]
            for key, values in (
                ("accuracy", [r["accuracy"] for r in runs]),
                ("grad_cam_pearson", [r["grad_cam_pearson"] for r in runs]),
                ("ir_top1_parity", [r["ir_parity"]["top1_agreement"] for r in runs]),
            )
        }
        results["summary"][variant] = summary
        print(
            f"{variant:8s} mean over seeds {args.seeds}: accuracy {summary['accuracy'][0]:.4f} ± {summary['accuracy'][1]:.4f}, "
            f"Grad-CAM r {summary['grad_cam_pearson'][0]:.4f} ± {summary['grad_cam_pearson'][1]:.4f}, "
            f"IR top-1 parity {summary['ir_top1_parity'][0]:.4f}"
        )
    results["args"] = vars(args)
    results["versions"] = {"nncf": nncf.__version__, "torch": torch.__version__}
    atomic_write_text(output / "results.json", json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
