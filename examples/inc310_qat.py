"""Attribution matching in Intel Neural Compressor 3.10's quantization-aware training, with and without the matcher.

INC 3.8 removed training-time compression (`neural_compressor.training`: pruning, FX QAT, distillation); INC 3.10
keeps one training-time route, `neural_compressor.torch.quantization.quantize.prepare_qat(model)`: on a model in
train() mode it swaps every `nn.Linear` in place (same object, same name) for a `QuantLinear` whose weight and
input pass through MX fake quantizers (MXFP8 by default, MXFP4 with `mapping={nn.Linear: "MXFP4"}`; the
quantizers come from the auto-round package) and returns None. Convolutions are left as they are, so the
matched layer keeps its name. Training is the user's own loop: the matcher is one more loss term,
`F.cross_entropy(model(x), y) + matcher.loss()`. The teacher is a frozen copy taken before `prepare_qat`.
The fake-quantized model converts to OpenVINO IR as plain f32 operations (Log, Floor, Power, ...): no int8 or
MX kernels, so the IR runs in f32 and matches PyTorch exactly; the trace fixes the batch, so the IR's batch is 1.

    python examples/inc310_qat.py --output runs/inc310_qat                 # MXFP8, digits (embedded), about a minute on 2 cores
    python examples/inc310_qat.py --scheme MXFP4 --output runs/inc310_mxfp4
    python examples/inc310_qat.py --quick --output runs/quick              # a smoke run (tests)

Needs neural-compressor-pt 3.10 and auto-round (pip install "neural-compressor-pt==3.10.*" auto-round).
"""

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from neural_compressor.torch.quantization.quantize import prepare_qat
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data import TensorDataset

from nncf_wcam import AttributionMatcher
from nncf_wcam import frozen_copy
from nncf_wcam.core.training import train_teacher
from nncf_wcam.evaluation.accuracy import accuracy
from nncf_wcam.evaluation.agreement import compare_attributions
from nncf_wcam.evaluation.agreement import summarize
from nncf_wcam.inc import export_ir
from nncf_wcam.inc import installed_inc_version
from nncf_wcam.io.atomic import atomic_write_text
from nncf_wcam.zoo.datasets import load_digits
from nncf_wcam.zoo.models import SmallCNN


def run_arm(arm, model, teacher, layers, train, test, args, output):
    """A copy of the trained model, MX fake-quantized by prepare_qat, fine-tuned with or without the matcher, exported."""
    torch.manual_seed(args.seed)
    student = copy.deepcopy(model).train()  # prepare_qat asserts train() mode
    prepare_qat(student, mapping={nn.Linear: args.scheme})  # in place; returns None
    # Built before or after prepare_qat alike: it hooks features.9, and the Linear is converted in place.
    matcher = AttributionMatcher(teacher, student, layers, stochastic_drop=args.drop, seed=args.seed) if arm == "wcam" else None
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, generator=torch.Generator().manual_seed(args.seed))
    optimizer = torch.optim.Adam(student.parameters(), lr=args.lr)
    start = time.perf_counter()
    for _ in range(args.epochs):
        for x, y in loader:
            optimizer.zero_grad()
            loss = F.cross_entropy(student(x), y)
            if matcher is not None:
                loss = loss + matcher.loss()
            loss.backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    samples = test.tensors[0][: args.eval_samples]
    grad_cam = summarize(compare_attributions(teacher, student, samples, "grad_cam", layer=layers[0]))
    # The trace of the MX quantizers bakes the batch size into a Reshape: export at a static batch of 1.
    exported = export_ir(student, output / f"ir_{arm}", samples, inference_precision="f32", dynamic_batch=False, matched_layers=layers)
    parity = exported.manifest["parity"]
    return {"accuracy": accuracy(student, test), "grad_cam_pearson": grad_cam["pearson"], "training_s": seconds, "ir_parity": parity}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output", required=True, help="folder for results.json and the IRs (ir_naive, ir_wcam)")
    parser.add_argument("--scheme", choices=("MXFP8", "MXFP4"), default="MXFP8", help="prepare_qat's format for nn.Linear")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2, help="fine-tuning epochs of each arm")
    parser.add_argument("--teacher-epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3, help="fine-tuning learning rate (Adam)")
    parser.add_argument("--drop", type=float, default=0.3, help="stochastic channel drop of the teacher's maps")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--width", type=int, default=16, help="SmallCNN width (the classifier sees 4 x width features)")
    parser.add_argument("--train-samples", type=int, default=None, help="first N training digits to fine-tune on (default: all)")
    parser.add_argument("--eval-samples", type=int, default=200, help="test digits for Grad-CAM agreement and IR parity")
    parser.add_argument("--quick", action="store_true", help="a smaller CNN, one fine-tuning epoch on 512 digits (smoke test)")
    args = parser.parse_args(argv)
    if args.quick:
        args.width, args.train_samples, args.epochs, args.teacher_epochs, args.eval_samples = 8, 512, 1, 4, 64
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    output = Path(args.output)
    output.mkdir(parents=True, exist_ok=True)
    data = load_digits(image_size=16)  # scikit-learn's digits: shipped, nothing downloaded
    train, test = data.train, data.test
    print(f"Intel Neural Compressor {installed_inc_version()}, torch {torch.__version__}; {data.description}; scheme {args.scheme}")

    torch.manual_seed(args.seed)
    model = SmallCNN(in_channels=1, width=args.width)
    start = time.perf_counter()
    train_teacher(model, train, epochs=args.teacher_epochs, lr=3e-3, batch_size=32, seed=args.seed)
    if args.train_samples:
        train = TensorDataset(*(t[: args.train_samples] for t in train.tensors))
    teacher = frozen_copy(model)  # before prepare_qat: the teacher stays float
    layers = [SmallCNN.LAST_CONV_BLOCK]  # "features.9", the last ReLU: Grad-CAM's layer (prepare_qat leaves it)
    results = {"teacher_accuracy": accuracy(teacher, test), "layers": layers, "arms": {}}
    print(f"teacher accuracy {results['teacher_accuracy']:.4f} ({time.perf_counter() - start:.0f} s); matched layer {layers}")

    for arm in ("naive", "wcam"):
        result = run_arm(arm, model, teacher, layers, train, test, args, output)
        results["arms"][arm] = result
        parity = result["ir_parity"]
        print(
            f"{arm:5s} {args.scheme} QAT: accuracy {result['accuracy']:.4f}  Grad-CAM r vs teacher {result['grad_cam_pearson']:.4f}  "
            f"IR top-1 parity {parity['top1_agreement']:.4f} (max |diff| {parity['max_abs_diff']:.2g})  "
            f"training {result['training_s']:.0f} s"
        )
    results["args"] = vars(args)
    results["versions"] = {"neural-compressor-pt": installed_inc_version(), "torch": torch.__version__}
    atomic_write_text(output / "results.json", json.dumps(results, indent=2))
    print(f"IRs in {output / 'ir_naive'} and {output / 'ir_wcam'}; results in {output / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
