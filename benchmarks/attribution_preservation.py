"""What a user gets from attribution matching: the default block against naive compression and KD.

One SmallCNN teacher is trained once and cached. For each compression algorithm it is fine-tuned
the same way for every variant (several epochs, Adam with a cosine-decaying LR: what an NNCF user
runs for quantization-aware training, and long enough for pruning and sparsity to recover):
  naive      the compression block alone;
  kd         + NNCF's knowledge_distillation;
  am         + {"algorithm": "attribution_matching"}, the default block, untuned;
  kd_am      + both;
  am_input   + the default block with "input_method" (input-space matching by double backprop).
Each over several seeds (mean ± std). A beta sweep of the default block (one seed) draws accuracy
against Grad-CAM agreement (pareto.png) so a user can pick beta. Every student is measured against
the teacher on held-out images: accuracy; Grad-CAM (at the matched layer), Saliency and Integrated
Gradients agreement (Pearson r, teacher's top-1 class). "Gap closed" = (r - r_naive) / (1 - r_naive).

Data: the real MNIST test set in the folder NNCF_WCAM_DATA_ROOT names (a slice of the first 8,000 images trains,
the last 2,000 evaluate; the teacher trains on all 8,000), else scikit-learn's digits, said in the output. Each run's result is
written to runs/<algorithm>_<variant>_<seed>.json as soon as it is measured: a cut-short run keeps
what it measured, a rerun skips what exists, and `--aggregate-only` rebuilds the tables and
figures from those files.

    python benchmarks/attribution_preservation.py [--quick] [--algorithms int8 ...] [--seeds 0 1 2]
        [--epochs 8] [--train-samples 8000] [--betas 1 10 100 1000] [--aggregate-only] [--output DIR]
"""

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
import torch
from records import weights_fingerprint
from run_setup import check_folder
from run_setup import header_from_runs
from run_setup import load_records
from run_setup import ran_on
from student_tables import LAYER
from student_tables import METHODS
from student_tables import SHORT
from student_tables import write_reports
from torch.utils.data import TensorDataset
from tqdm import tqdm

import nncf_wcam  # noqa: F401  (before nncf.torch)
from nncf_wcam.core.training import train_teacher
from nncf_wcam.evaluation.accuracy import accuracy
from nncf_wcam.evaluation.agreement import map_agreement
from nncf_wcam.evaluation.agreement import summarize
from nncf_wcam.evaluation.attributions import attribution_maps
from nncf_wcam.evaluation.figures import write_attribution_figure
from nncf_wcam.io.atomic import atomic_torch_save
from nncf_wcam.io.atomic import atomic_write_text
from nncf_wcam.nncf2.training import compress
from nncf_wcam.nncf2.training import fine_tune
from nncf_wcam.nncf2.training import load_config
from nncf_wcam.schema.blocks import ATTRIBUTION_MATCHING_DEFAULTS
from nncf_wcam.zoo.datasets import mnist_or_digits
from nncf_wcam.zoo.models import SmallCNN

RESULTS = Path(__file__).parent / "results"


def _quantization(bits: int) -> dict:
    return {
        "algorithm": "quantization",
        "weights": {"bits": bits, "mode": "symmetric"},
        # symmetric: NNCF makes ReLU outputs unsigned; asymmetric low ends drifting below 0 break IR parity
        "activations": {"bits": bits, "mode": "symmetric"},
        # min-max ranges collapse low-bit activations (docs/known-issues.md): percentiles instead
        "initializer": {"range": {"num_init_samples": 512, "type": "percentile", "params": {"min_percentile": 0.1, "max_percentile": 99.9}}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 0}},
    }


ALGORITHMS = {
    "int8": {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 512, "type": "mean_min_max"}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 0}}},
    "int4": _quantization(4),
    "filter_pruning": {"algorithm": "filter_pruning", "pruning_init": 0.5, "params": {"schedule": "exponential", "pruning_target": 0.5, "pruning_steps": 1}},
    "magnitude_sparsity": {"algorithm": "magnitude_sparsity", "sparsity_init": 0.9, "params": {"schedule": "multistep", "multistep_steps": [], "multistep_sparsity_levels": [0.9], "sparsity_level_setting_mode": "global"}},
}
KD = {"algorithm": "knowledge_distillation", "type": "softmax", "temperature": 2}
DEFAULT_BLOCK = {"algorithm": "attribution_matching"}


def variants(input_method: str, input_weight: float) -> dict:
    return {
        "naive": [],
        "kd": [KD],
        "am": [DEFAULT_BLOCK],
        "kd_am": [KD, DEFAULT_BLOCK],
        "am_input": [{**DEFAULT_BLOCK, "input_method": input_method, "input_weight": input_weight}],
    }


def sweep_blocks(betas: list) -> dict:
    """The default block at other betas; the default beta itself is the main table's `am`."""
    default = ATTRIBUTION_MATCHING_DEFAULTS["weight"]
    return {f"beta_{beta:g}": [{**DEFAULT_BLOCK, "weight": beta}] for beta in betas if beta != default}


def fine_tuning_subset(data, train_samples: int):
    """The first `train_samples` training images: compression fine-tunes on a subset, as users often do."""
    return TensorDataset(*(t[:train_samples] for t in data.train.tensors))


def cached_teacher(data, args) -> SmallCNN:
    """Trains the FP32 teacher on the whole training split once and caches it (benchmarks/results/**/*.pt is ignored by git)."""
    path = (args.teacher_cache or args.output) / f"teacher_w{args.width}_e{args.teacher_epochs}_{len(data.train)}.pt"
    teacher = SmallCNN(width=args.width)
    if path.is_file():
        teacher.load_state_dict(torch.load(path))
        print(f"teacher: cached {path}")
        return teacher.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    train_teacher(teacher, data.train, epochs=args.teacher_epochs, lr=2e-3, device=args.device)
    teacher.cpu()
    atomic_torch_save(teacher.state_dict(), path)
    return teacher.eval()


def prepare_students(args) -> tuple:
    """Threads, the NNCF log folder, the data and the cached teacher: what every student benchmark starts from."""
    torch.set_num_threads(args.threads)
    (args.output / "nncf_logs").mkdir(parents=True, exist_ok=True)
    data = mnist_or_digits()
    print(f"data: {data.description}")
    return data, fine_tuning_subset(data, args.train_samples), cached_teacher(data, args)


class TeacherMaps:
    """The teacher's maps per method, computed once and reused for every student."""

    def __init__(self, teacher, x, ig_samples: int, ig_steps: int):
        self.teacher, self.x = teacher, x
        self.target = teacher(x).argmax(1)
        self.ig_samples, self.ig_steps = ig_samples, ig_steps
        self._maps = {}

    def options(self, method: str, layer: str = LAYER) -> dict:
        return {"grad_cam": {"layer": layer}, "integrated_gradients": {"n_steps": self.ig_steps}}.get(method, {})

    def agreement(self, student, method: str, student_layer: str = LAYER) -> dict:
        """Agreement of the student's maps with the teacher's; `student_layer`: the student's name of LAYER
        (a model whose modules were fused, e.g. by INC's quantization-aware training, renames it)."""
        n = self.ig_samples if method == "integrated_gradients" else len(self.x)
        x, target = self.x[:n], self.target[:n]
        if method not in self._maps:
            self._maps[method] = attribution_maps(self.teacher, x, method, target=target, **self.options(method))
        student_maps = attribution_maps(student, x, method, target=target, **self.options(method, student_layer))
        return summarize(map_agreement(self._maps[method], student_maps))


def optimizer_spec(args) -> dict:
    return {"type": "Adam", "base_lr": args.lr, "schedule_type": "cosine"}


def train_student(teacher, blocks, data, train_data, seed, args, **fine_tune_options):
    """Compresses a copy of the teacher with `blocks` and fine-tunes it with the benchmarks' one recipe.

    Returns the student (in eval mode), its per-step history and the fine-tuning time in seconds.
    `fine_tune_options` go to `training.fine_tune` (e.g. `freeze_bn_epochs`, `after_epoch`).
    """
    size = data.image_shape[-1]
    config = {"input_info": {"sample_size": [1, 1, size, size]}, "compression": blocks, "log_dir": str(args.output / "nncf_logs")}
    if any(b.get("algorithm") == "quantization" and b.get("weights", {}).get("bits", 8) < 8 for b in blocks):
        config["target_device"] = "TRIAL"
    torch.manual_seed(seed)
    ctrl, student = compress(copy.deepcopy(teacher), load_config(config), train_data, device=args.device)
    started = time.time()
    history = fine_tune(
        ctrl, student, train_data, epochs=args.epochs, optimizer_spec=optimizer_spec(args), batch_size=64, seed=seed, max_steps=args.max_steps, device=args.device, **fine_tune_options
    )
    return student.cpu().eval(), history, time.time() - started


def measure(teacher_maps: TeacherMaps, student, data, student_layer: str = LAYER) -> dict:
    result = {"accuracy": accuracy(student, data.test)}
    for method in METHODS:
        result[method] = teacher_maps.agreement(student, method, student_layer)
    return result


def add_fine_tuning_args(parser: argparse.ArgumentParser, output: str) -> None:
    """The fine-tuning and measurement flags of every student benchmark: one recipe for all of them."""
    parser.add_argument("--quick", action="store_true", help="tiny run for the test suite")
    parser.add_argument("--epochs", type=int, default=8, help="fine-tuning epochs per student (cosine LR decay over them)")
    parser.add_argument("--lr", type=float, default=1e-3, help="Adam's initial LR")
    parser.add_argument("--train-samples", type=int, default=8000)
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--eval-samples", type=int, default=300)
    parser.add_argument("--teacher-epochs", type=int, default=8)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 runs small models best on a 2-core machine)")
    parser.add_argument("--device", default="cpu", help="where the teacher and the students train (e.g. cuda); evaluation runs on the CPU")
    parser.add_argument("--teacher-cache", type=Path, default=None, help="folder holding the cached teacher (default: --output)")
    parser.add_argument("--output", type=Path, default=RESULTS / output)


def apply_quick(args: argparse.Namespace) -> None:
    """--quick: a tiny model and a few steps, its own teacher in --output; what the test suite runs."""
    args.epochs, args.max_steps, args.teacher_epochs, args.width = 2, 3, 1, 4
    args.train_samples, args.eval_samples, args.teacher_cache = 256, 16, None


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_fine_tuning_args(parser, "attribution_preservation")
    parser.add_argument("--algorithms", nargs="+", choices=list(ALGORITHMS), default=list(ALGORITHMS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--betas", nargs="+", type=float, default=[1.0, 10.0, 100.0, 1000.0], help="beta sweep of the default block (seed 0)")
    parser.add_argument("--variants", nargs="+", default=["naive", "kd", "am", "kd_am", "am_input"], help="subset of the main variants")
    parser.add_argument("--input-method", choices=["saliency", "input_x_gradient"], default="input_x_gradient")
    parser.add_argument("--input-weight", type=float, default=ATTRIBUTION_MATCHING_DEFAULTS["input_weight"])
    parser.add_argument("--ig-samples", type=int, default=64)
    parser.add_argument("--ig-steps", type=int, default=16)
    parser.add_argument("--freeze-bn-epochs", type=int, default=0, help="BatchNorm statistics frozen for the last epochs, every student (as the configs' \"freeze_bn_epochs\")")
    parser.add_argument("--aggregate-only", action="store_true", help="rebuild tables and figures from runs/*.json")
    args = parser.parse_args()
    if args.quick:
        apply_quick(args)
        args.algorithms = args.algorithms if len(args.algorithms) < len(ALGORITHMS) else ["int8"]
        args.seeds, args.ig_samples, args.ig_steps, args.betas = args.seeds[:1], 4, 4, [100.0]
        args.variants = ["naive", "am", "am_input"]
    return args


def main() -> None:
    args = parse_args()
    runs_dir = args.output / "runs"
    runs_dir.mkdir(parents=True, exist_ok=True)
    header_path = args.output / "header.txt"
    if args.aggregate_only:
        write_header_and_reports(args, runs_dir, header_path)
        return
    data, train_data, teacher = prepare_students(args)
    teacher_acc = accuracy(teacher, data.test)
    print(f"teacher: accuracy {teacher_acc:.4f}")
    setup = student_setup(args, data, train_data, teacher, teacher_acc)
    check_folder(runs_dir, setup, header_path)
    teacher_maps = TeacherMaps(teacher, data.test.tensors[0][: args.eval_samples], args.ig_samples, args.ig_steps)
    main_variants = {name: blocks for name, blocks in variants(args.input_method, args.input_weight).items() if name in args.variants}
    # Most informative first, so that a run cut short still answers the most: naive and the default
    # block over all seeds, KD and the input-space variant on the first seed, the beta sweep, then
    # the remaining seeds of the others.
    first, rest = args.seeds[0], args.seeds[1:]
    plan = [(v, s) for s in args.seeds for v in ("naive", "am")]
    plan += [(v, first) for v in ("kd", "kd_am", "am_input")]
    plan += [(v, first) for v in sweep_blocks(args.betas)]
    plan += [(v, s) for s in rest for v in ("kd", "kd_am", "am_input")]
    blocks_of = {**main_variants, **sweep_blocks(args.betas)}
    jobs = [(a, v, s, blocks_of[v]) for v, s in plan for a in args.algorithms if v in blocks_of]
    grid_x = data.test.tensors[0][:8]
    grid_target = teacher(grid_x).argmax(1)
    grid_rows = {}
    for algorithm, variant, seed, blocks in tqdm(jobs, desc="students"):
        path = runs_dir / f"{algorithm}_{variant}_{seed}.json"
        if path.is_file():
            continue
        student, history, train_s = train_student(teacher, [ALGORITHMS[algorithm], *blocks], data, train_data, seed, args, freeze_bn_epochs=args.freeze_bn_epochs)
        result = measure(teacher_maps, student, data)
        result["train_s"] = train_s
        result["last_epoch_task_loss"] = float(np.mean([h["task_loss"] for h in history if h["epoch"] == history[-1]["epoch"]]))
        record = {"algorithm": algorithm, "variant": variant, "seed": seed, "blocks": blocks, "result": result, "setup": setup, "ran_on": ran_on(args)}
        atomic_write_text(path, json.dumps(record, indent=2))
        tqdm.write(f"{algorithm:>18} {variant:>10} seed {seed}: acc {result['accuracy']:.4f}, " + ", ".join(f"{SHORT[m]} r {result[m]['pearson']:.3f}" for m in METHODS) + f" ({train_s:.0f} s)")
        if seed == args.seeds[0] and variant in ("naive", "am", "am_input"):
            grid = grid_rows.setdefault(algorithm, {"maps": {}, "pred": {}})
            grid["maps"][variant] = attribution_maps(student, grid_x, "grad_cam", target=grid_target, layer=LAYER)
            with torch.no_grad():
                grid["pred"][variant] = student.eval()(grid_x).argmax(1).tolist()
    for algorithm, grid in grid_rows.items():
        if len(grid["maps"]) < 2:
            continue  # one variant alone compares nothing (a run split one variant per invocation)
        write_attribution_figure(
            args.output / f"gradcam_grid_{algorithm}.png",
            grid_x,
            attribution_maps(teacher, grid_x, "grad_cam", target=grid_target, layer=LAYER),
            grid["maps"],
            method=f"Grad-CAM ({algorithm}, seed {args.seeds[0]})",
            layer=LAYER,
            explained_classes=grid_target.tolist(),
            true_labels=data.test.tensors[1][: len(grid_x)].tolist(),
            predictions=grid["pred"],
        )
    write_header_and_reports(args, runs_dir, header_path)


def student_setup(args, data, train_data, teacher, teacher_acc: float) -> dict:
    """What every run of this invocation measures against: a folder's runs must share it (run_setup.py)."""
    return {
        "data": data.description, "width": args.width, "teacher_epochs": args.teacher_epochs, "teacher_train_images": len(data.train),
        "teacher_accuracy": round(float(teacher_acc), 6), "teacher_weights": weights_fingerprint(teacher), "train_samples": len(train_data),
        "layer": LAYER, "epochs": args.epochs, "max_steps": args.max_steps, "optimizer": optimizer_spec(args), "freeze_bn_epochs": args.freeze_bn_epochs,
        "eval_samples": args.eval_samples, "ig_steps": args.ig_steps, "ig_samples": args.ig_samples, "input_method": args.input_method,
    }


def write_header_and_reports(args, runs_dir: Path, header_path: Path) -> None:
    """header.txt built from every run's setup (a kept header.txt where older runs carry none), then the tables."""
    header = header_from_runs(load_records(runs_dir))
    if header is None:
        header = header_path.read_text() if header_path.is_file() else ""
    else:
        atomic_write_text(header_path, header)
    write_reports(args, header)


if __name__ == "__main__":
    main()
