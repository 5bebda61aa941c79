"""Inference speed of the deployed IRs against FP32 PyTorch eager, measured side by side in one run.

A ResNet-18 (written in this project, torchvision layout) is exported four ways with
`nncf_wcam.export_ir`: FP32 IR, int8 IR, 50 %-filter-pruned IR (filters physically removed),
and pruned + int8 IR. A MobileNet-style network (inverted residuals, depthwise convolutions, dict
output; `nncf_wcam.zoo.models.MobileNetStyle`, width 16, seven blocks, five stride-2 stages) is exported
three ways: FP32 IR, int8 IR, pruned + int8 IR. Its int8 block quantizes activations per tensor
(`"activations": {"per_channel": false}`): with NNCF's default per-channel quantizers before depthwise
convolutions the pruned filters cannot be removed (docs/deployment.md). Measured on this machine's CPU:
  latency     batch 1, median over many synchronous runs (OpenVINO: PERFORMANCE_HINT=LATENCY);
  throughput  images/s with asynchronous requests on all cores (OpenVINO: PERFORMANCE_HINT=THROUGHPUT,
              AsyncInferQueue with the plugin's optimal number of requests); PyTorch eager: batches of
              `--batch` on all threads.
Speed does not depend on the weights' values, so the network is randomly initialised and the
quantization ranges are calibrated on random inputs (dense weights: sparsity is not what is timed here).
Float layers run in f32 (INFERENCE_PRECISION_HINT=f32) so that "FP32 IR" means FP32.

    python benchmarks/inference.py [--quick] [--image-size 224] [--seconds 10] [--output DIR]
"""

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov
import torch
from records import settings_record
from torch.utils.data import TensorDataset

import nncf_wcam  # noqa: F401  (before nncf.torch)
from nncf_wcam.deploy.runtime import runtime_precisions
from nncf_wcam.io.atomic import atomic_write_text
from nncf_wcam.nncf2.export import export_ir
from nncf_wcam.nncf2.training import compress
from nncf_wcam.nncf2.training import load_config
from nncf_wcam.zoo.models import MobileNetStyle
from nncf_wcam.zoo.models import resnet18
from nncf_wcam.zoo.models import tiny_resnet

INT8 = {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 16, "type": "mean_min_max"}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 0}}}
PRUNING = {"algorithm": "filter_pruning", "pruning_init": 0.5, "params": {"schedule": "exponential", "pruning_target": 0.5, "pruning_steps": 1}}
VARIANTS = {"fp32_ir": [], "int8_ir": [INT8], "pruned50_ir": [PRUNING], "pruned50_int8_ir": [PRUNING, INT8]}
INT8_PER_TENSOR = {**INT8, "activations": {"per_channel": False}}
MOBILE_VARIANTS = {"fp32_ir": [], "int8_ir": [INT8_PER_TENSOR], "pruned50_int8_ir": [PRUNING, INT8_PER_TENSOR]}
MOBILE_BLOCKS = ((1, 2), (2, 2), (2, 1), (4, 2), (4, 1), (8, 2), (8, 1))


def models(quick: bool) -> dict:
    """{row prefix: (display name, model factory, variants)}."""
    if quick:
        return {
            "": ("tiny ResNet", lambda: tiny_resnet(in_channels=3, width=8), VARIANTS),
            "mobilenet_style ": ("MobileNet-style", lambda: MobileNetStyle(3, 10, width=8, blocks=((1, 1), (2, 2))), MOBILE_VARIANTS),
        }
    return {
        "": ("ResNet-18", lambda: resnet18(num_classes=1000), VARIANTS),
        "mobilenet_style ": ("MobileNet-style", lambda: MobileNetStyle(3, 1000, width=16, expansion=4, blocks=MOBILE_BLOCKS), MOBILE_VARIANTS),
    }


def export_variant(name: str, blocks: list, make_model, image_size: int, calibration: TensorDataset, out_dir: Path) -> Path:
    """Builds the compressed model for `blocks` (none: plain FP32) and exports its IR; returns the folder."""
    torch.manual_seed(0)
    config = load_config({"input_info": {"sample_size": [1, 3, image_size, image_size]}, "compression": blocks, "log_dir": str(out_dir)})
    ctrl, model = compress(make_model(), config, calibration, batch_size=8)
    # Random weights give near-tied logits, so top-1 parity is reported, not enforced, here.
    logits = "logits" if name.startswith("mobilenet_style") else None  # MobileNetStyle returns a dict
    result = export_ir(ctrl, model, out_dir / name, calibration.tensors[0][:4], min_top1_agreement=0.0, logits_output=logits)
    return result.output_dir


def ov_latency(compiled: ov.CompiledModel, x: np.ndarray, seconds: float) -> float:
    request = compiled.create_infer_request()
    request.infer({0: x})
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 10:
        start = time.perf_counter()
        request.infer({0: x})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def ov_throughput(compiled: ov.CompiledModel, x: np.ndarray, seconds: float) -> float:
    jobs = compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS")
    queue = ov.AsyncInferQueue(compiled, jobs)
    for _ in range(jobs):
        queue.start_async({0: x})
    queue.wait_all()
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        queue.start_async({0: x})
        count += 1
    queue.wait_all()
    return count * len(x) / (time.perf_counter() - start)


@torch.no_grad()
def torch_latency(model: torch.nn.Module, x: torch.Tensor, seconds: float) -> float:
    model(x)
    times = []
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline or len(times) < 10:
        start = time.perf_counter()
        model(x)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


@torch.no_grad()
def torch_throughput(model: torch.nn.Module, x: torch.Tensor, seconds: float) -> float:
    model(x)
    count = 0
    start = time.perf_counter()
    while time.perf_counter() - start < seconds:
        model(x)
        count += len(x)
    return count / (time.perf_counter() - start)


def compile_ir(ir_dir: Path, hint: str, batch: int) -> ov.CompiledModel:
    model = ov.Core().read_model(ir_dir / "model.xml")
    model.reshape({model.input(0): ov.PartialShape([batch, *model.input(0).get_partial_shape()[1:]])})
    return ov.Core().compile_model(model, "CPU", {"PERFORMANCE_HINT": hint, "INFERENCE_PRECISION_HINT": "f32"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny run for the test suite (small ResNet, 32x32, short timings)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--seconds", type=float, default=10.0, help="measuring time per variant and mode")
    parser.add_argument("--batch", type=int, default=8, help="batch of the PyTorch throughput runs")
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "inference")
    args = parser.parse_args()
    if args.quick:
        args.image_size, args.seconds = 32, 0.3
    print(f"{args.image_size}x{args.image_size}, random weights; CPU threads {torch.get_num_threads()}; {args.seconds} s per measurement")

    generator = torch.Generator().manual_seed(0)
    calibration = TensorDataset(torch.randn(16, 3, args.image_size, args.image_size, generator=generator), torch.zeros(16, dtype=torch.long))
    x1 = calibration.tensors[0][:1]
    xb = calibration.tensors[0][:1].repeat(args.batch, 1, 1, 1)

    results = {}
    with tempfile.TemporaryDirectory(prefix="nncf_wcam_inference_") as tmp:
        for prefix, (model_name, make_model, variants) in models(args.quick).items():
            torch.manual_seed(0)
            eager = make_model().eval()
            base_name = f"{prefix}fp32_torch_eager"
            results[base_name] = {"model": model_name, "latency_ms": torch_latency(eager, x1, args.seconds) * 1e3, "throughput_ips": torch_throughput(eager, xb, args.seconds)}
            for name, blocks in variants.items():
                ir_dir = export_variant(f"{prefix.strip()}_{name}".lstrip("_"), blocks, make_model, args.image_size, calibration, Path(tmp))
                manifest = json.loads((ir_dir / "manifest.json").read_text())
                latency = ov_latency(compile_ir(ir_dir, "LATENCY", 1), x1.numpy(), args.seconds)
                throughput_model = compile_ir(ir_dir, "THROUGHPUT", 1)
                throughput = ov_throughput(throughput_model, x1.numpy(), args.seconds)
                precisions = sorted({p["precision"] for p in runtime_precisions(throughput_model) if "Conv" in p["layer_type"]})
                stats = manifest["ir"]
                results[f"{prefix}{name}"] = {
                    "model": model_name,
                    "latency_ms": latency * 1e3,
                    "throughput_ips": throughput,
                    "conv_runtime_precisions": precisions,
                    "weights": stats.get("weight_values"),
                    "gflops": stats.get("flops", 0) / 1e9,
                    "pruning_transformation_applied": manifest["pruning_transformation_applied"],
                    "notes": manifest["notes"],
                    "parity_max_abs_diff": manifest["parity"]["max_abs_diff"],
                }
                print(f"{model_name} {name}: latency {latency * 1e3:.2f} ms, throughput {throughput:.1f} img/s, conv precisions {precisions}")
            base = results[base_name]
            for key, r in results.items():
                if r["model"] == model_name:
                    r["latency_speedup_vs_eager"] = base["latency_ms"] / r["latency_ms"]
                    r["throughput_ratio_vs_eager"] = r["throughput_ips"] / base["throughput_ips"]
    lines = [
        f"{args.image_size}x{args.image_size} on this machine's CPU ({os.cpu_count()} cores), one run; ratios against each model's FP32 PyTorch eager.",
        "",
        "| variant | latency b=1 (ms) | speed-up | throughput (img/s) | ratio | weights | GFLOPs | conv precision |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        lines.append(
            f"| {name} | {r['latency_ms']:.2f} | {r['latency_speedup_vs_eager']:.2f}x | {r['throughput_ips']:.1f} | {r['throughput_ratio_vs_eager']:.2f}x | "
            f"{r.get('weights', '-')} | {r['gflops']:.2f} | {', '.join(r.get('conv_runtime_precisions', ['f32 (torch)']))} |"
            if "gflops" in r
            else f"| {name} | {r['latency_ms']:.2f} | 1.00x | {r['throughput_ips']:.1f} | 1.00x | - | - | f32 (torch) |"
        )
    table = "\n".join(lines) + "\n"
    args.output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output / "results.json", json.dumps({"settings": settings_record(args), "results": results}, indent=2))
    atomic_write_text(args.output / "table.md", table)
    print(table)


if __name__ == "__main__":
    main()
