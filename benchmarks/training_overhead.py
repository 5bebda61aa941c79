"""Training-step cost of attribution matching, measured side by side in one run.

Four variants of one compression-aware training step, for int8 quantization and filter pruning:
  plain    task loss + compression_ctrl.loss() without attribution_matching;
  wcam     the same with the default block {"algorithm": "attribution_matching"} (autograd.grad w.r.t.
           the matched activations);
  input    the default block with "input_method": "input_x_gradient" (double backprop to the input);
  authors  the wcam loss computed the WCAM authors' way: a full backward(create_graph=True) over all
           parameters to get the activation gradient, then the final backward.
Step times are interleaved (plain, wcam, authors, plain, ...) so that machine load hits all alike;
peak memory is the peak RSS growth during the steps, each variant in a fresh subprocess
(in --quick mode, in the same process: a lower bound, for the test suite only).

    python benchmarks/training_overhead.py [--quick] [--steps 40] [--batch 64] [--output DIR]
"""

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import torch
import torch.nn.functional as F
from records import settings_record

import nncf_wcam  # noqa: F401  (before nncf.torch)
from nncf_wcam.core.maps import map_distance
from nncf_wcam.core.maps import wcam_map
from nncf_wcam.core.matcher import DEFAULT_WEIGHT
from nncf_wcam.io.atomic import atomic_write_text
from nncf_wcam.nncf2.attribution_matching import attribution_controller
from nncf_wcam.nncf2.training import compress
from nncf_wcam.nncf2.training import load_config
from nncf_wcam.nncf2.training import without_algorithm
from nncf_wcam.zoo.datasets import mnist_or_digits
from nncf_wcam.zoo.models import SmallCNN

LAYER = SmallCNN.LAST_CONV_BLOCK
ALGORITHMS = {
    "int8": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 256, "type": "mean_min_max"}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 0}}},
    "filter_pruning": {"algorithm": "filter_pruning", "pruning_init": 0.5, "params": {"schedule": "exponential", "pruning_target": 0.5, "pruning_steps": 1}},
}
MATCHING = {"algorithm": "attribution_matching"}  # the default block ("layers": "auto" is features.9's map)
INPUT_MATCHING = {**MATCHING, "input_method": "input_x_gradient"}
VARIANTS = ("plain", "wcam", "input", "authors")


def build_variants(algorithm: str, data, width: int):
    """One compressed model per variant, all from the same initial weights."""
    torch.manual_seed(0)
    base = SmallCNN(width=width)
    size = data.image_shape[-1]
    spec = {"input_info": {"sample_size": [1, 1, size, size]}, "compression": [ALGORITHMS[algorithm], MATCHING], "log_dir": os.environ.get("TMPDIR", "/tmp")}
    with_matching = lambda: load_config(copy.deepcopy(spec))  # noqa: E731  (a fresh config per model: NNCF adds init args to it)
    built = {
        "plain": compress(copy.deepcopy(base), without_algorithm(with_matching(), "attribution_matching"), data.train),
        "wcam": compress(copy.deepcopy(base), with_matching(), data.train),
        "input": compress(copy.deepcopy(base), load_config({**copy.deepcopy(spec), "compression": [ALGORITHMS[algorithm], INPUT_MATCHING]}), data.train),
        "authors": compress(copy.deepcopy(base), without_algorithm(with_matching(), "attribution_matching"), data.train),
    }
    teacher = attribution_controller(built["wcam"][0]).teacher
    return built, teacher


def authors_matching_loss(model, teacher, x, output) -> torch.Tensor:
    """The same WCAM loss, with the student's activation gradient from a full backward(create_graph=True)."""
    activation = model._wcam_activation
    activation.retain_grad()
    with torch.enable_grad():
        x_leaf = x.detach().requires_grad_(True)
        captured = {}
        handle = teacher.get_submodule(LAYER).register_forward_hook(lambda m, i, o: captured.__setitem__("a", o))
        teacher_logits = teacher(x_leaf)
        handle.remove()
    target = teacher_logits.argmax(1)
    (teacher_grad,) = torch.autograd.grad(teacher_logits.gather(1, target[:, None]).sum(), captured["a"])
    teacher_map = wcam_map(captured["a"].detach(), teacher_grad)
    output.gather(1, target[:, None]).sum().backward(create_graph=True, retain_graph=True)
    student_map = wcam_map(activation, activation.grad)
    model.zero_grad(set_to_none=True)  # the full backward filled every parameter's .grad; discard it
    return DEFAULT_WEIGHT * map_distance(teacher_map, student_map)


def make_step(variant: str, ctrl, model, teacher, optimizer):
    if variant == "authors":
        model.get_submodule(LAYER).register_forward_hook(lambda m, i, o: setattr(model, "_wcam_activation", o))

    def step(x, y):
        optimizer.zero_grad(set_to_none=True)
        output = model(x)
        loss = F.cross_entropy(output, y) + ctrl.loss()
        if variant == "authors":
            loss = loss + authors_matching_loss(model, teacher, x, output)
        loss.backward()
        optimizer.step()

    return step


def prepare(algorithm: str, data, width: int, batch: int):
    built, teacher = build_variants(algorithm, data, width)
    steps = {}
    for variant, (ctrl, model) in built.items():
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        steps[variant] = make_step(variant, ctrl, model, teacher, optimizer)
    x, y = data.train.tensors[0][:batch], data.train.tensors[1][:batch]
    return steps, x, y


def time_interleaved(steps: dict, x, y, num_steps: int, warmup: int = 3) -> dict:
    for step in steps.values():
        for _ in range(warmup):
            step(x, y)
    times = {variant: [] for variant in steps}
    for _ in range(num_steps):
        for variant, step in steps.items():
            start = time.perf_counter()
            step(x, y)
            times[variant].append(time.perf_counter() - start)
    return {variant: statistics.median(t) for variant, t in times.items()}


def peak_rss_growth(step, x, y, num_steps: int) -> float:
    """Peak RSS growth (MiB) while running the steps, sampled every millisecond."""
    process = psutil.Process()
    step(x, y)
    baseline = process.memory_info().rss
    peak = [baseline]
    done = threading.Event()

    def sample():
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(0.001)

    sampler = threading.Thread(target=sample)
    sampler.start()
    for _ in range(num_steps):
        step(x, y)
    done.set()
    sampler.join()
    return (peak[0] - baseline) / 2**20


def memory_child(algorithm: str, variant: str, width: int, batch: int, num_steps: int) -> None:
    data = mnist_or_digits()
    steps, x, y = prepare(algorithm, data, width, batch)
    print(json.dumps({"peak_rss_growth_mib": peak_rss_growth(steps[variant], x, y, num_steps)}))


def measure_memory(algorithm: str, variant: str, args) -> float:
    command = [sys.executable, __file__, "--memory-child", algorithm, variant, "--width", str(args.width), "--batch", str(args.batch), "--steps", str(max(5, args.steps // 4))]
    result = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_growth_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--output", type=Path, default=Path(__file__).parent / "results" / "training_overhead")
    parser.add_argument("--memory-child", nargs=2, metavar=("ALGORITHM", "VARIANT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(*args.memory_child, args.width, args.batch, args.steps)
        return
    if args.quick:
        args.steps, args.batch, args.width = 3, 8, 4
    data = mnist_or_digits()
    print(f"data: {data.description}; SmallCNN(width={args.width}), batch {args.batch}, matched layer {LAYER}; torch threads {torch.get_num_threads()}")
    results = {}
    for algorithm in ALGORITHMS:
        steps, x, y = prepare(algorithm, data, args.width, args.batch)
        medians = time_interleaved(steps, x, y, args.steps)
        if args.quick:  # in-process (allocator reuse makes it a lower bound); fresh subprocesses otherwise
            memory = {variant: peak_rss_growth(steps[variant], x, y, args.steps) for variant in VARIANTS}
        else:
            memory = {variant: measure_memory(algorithm, variant, args) for variant in VARIANTS}
        results[algorithm] = {
            "median_step_s": medians,
            "peak_rss_growth_mib": memory,
            "wcam_over_plain": medians["wcam"] / medians["plain"],
            "input_over_plain": medians["input"] / medians["plain"],
            "authors_over_wcam": medians["authors"] / medians["wcam"],
        }
        print(f"{algorithm}: " + ", ".join(f"{v} {medians[v] * 1e3:.1f} ms / {memory[v]:.1f} MiB" for v in VARIANTS))
    lines = [
        f"Median training-step time and peak RSS growth, {args.steps} interleaved steps each, SmallCNN width {args.width}, batch {args.batch}, "
        f"{torch.get_num_threads()} torch thread(s), {data.description}.",
        "",
        "| algorithm | plain step | default block | + input_method | authors' way | default / plain | input / plain | authors / default | peak MiB plain / default / input / authors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for algorithm, r in results.items():
        m, mem = r["median_step_s"], r["peak_rss_growth_mib"]
        lines.append(
            f"| {algorithm} | {m['plain'] * 1e3:.1f} ms | {m['wcam'] * 1e3:.1f} ms | {m['input'] * 1e3:.1f} ms | {m['authors'] * 1e3:.1f} ms | "
            f"{r['wcam_over_plain']:.2f}x | {r['input_over_plain']:.2f}x | {r['authors_over_wcam']:.2f}x | "
            f"{mem['plain']:.1f} / {mem['wcam']:.1f} / {mem['input']:.1f} / {mem['authors']:.1f} |"
        )
    table = "\n".join(lines) + "\n"
    args.output.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.output / "results.json", json.dumps({"settings": settings_record(args) | {"torch_threads": torch.get_num_threads()}, "data": data.description, "results": results}, indent=2))
    atomic_write_text(args.output / "table.md", table)
    print(table)


if __name__ == "__main__":
    main()
