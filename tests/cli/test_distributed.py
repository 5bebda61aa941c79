"""Data-parallel training under torchrun (2 processes, gloo on CPU).

The worker below runs in both processes. It checks that the attribution loss and the gradients of
a DDP step on two halves of a global batch equal those of one process on the whole batch, that a
few DDP training steps keep the ranks in sync, and then runs `nncf-wcam compress` itself under
torchrun. The model has no BatchNorm: in train mode BatchNorm normalizes with each process's own
batch statistics, so a model with BatchNorm would legitimately differ from one process. The
stochastic channel drop is off for the equality check: each process draws masks for its own
half-batch, so the masks (not the method) would differ from a one-process run.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest

from nncf_wcam.io.folder_lock import FolderLock

from conftest import FAST
from conftest import TINY

WORKER = textwrap.dedent(
    '''
    import json
    import sys
    from pathlib import Path

    import nncf_wcam  # noqa: F401  (must precede nncf.torch)
    import torch
    import torch.nn.functional as F
    from torch import nn
    from torch.utils.data import DataLoader

    from nncf_wcam import cli
    from nncf_wcam.cli import distributed
    from nncf_wcam.core.training import make_optimizer
    from nncf_wcam.nncf2.attribution_matching import attribution_controller
    from nncf_wcam.nncf2.training import compress, load_config, train_epoch
    from nncf_wcam.zoo.datasets import load_dataset

    out_dir, tiny_config = Path(sys.argv[1]), sys.argv[2]


    class NoBatchNormCNN(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.classifier = nn.Linear(8, 10)

        def forward(self, x):
            return self.classifier(self.pool(self.features(x)).flatten(1))


    assert distributed.init_from_env(), "not started by torchrun"
    rank, world = distributed.rank(), distributed.world_size()
    data = load_dataset({"name": "digits", "image_size": 8})
    (out_dir / "nncf_logs").mkdir(exist_ok=True)
    config = load_config({
        "input_info": {"sample_size": [1, 1, 8, 8]},
        "log_dir": str(out_dir / "nncf_logs"),
        "compression": [
            {"algorithm": "quantization", "initializer": {"range": {"num_init_samples": 64}, "batchnorm_adaptation": {"num_bn_adaptation_samples": 0}}},
            {"algorithm": "attribution_matching", "layers": ["features.3"], "weight": 100.0, "stochastic_drop": 0.0},
        ],
    })
    torch.manual_seed(0)
    ctrl, model = compress(model=NoBatchNormCNN(), config=config, train_data=data.train, batch_size=32)
    matcher_ctrl = attribution_controller(ctrl)
    x, y = data.train.tensors[0][:32], data.train.tensors[1][:32]

    # One process, the whole global batch (every rank computes it, on the bare model).
    model.train()
    model.zero_grad()
    task = F.cross_entropy(model(x), y)
    reference_loss = matcher_ctrl.loss()
    (task + reference_loss).backward()
    reference_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()

    # DDP: each rank its half of the same global batch.
    ddp = distributed.wrap_ddp(model, ctrl)
    half = len(x) // world
    shard = slice(rank * half, (rank + 1) * half)
    task = F.cross_entropy(ddp(x[shard]), y[shard])
    local_loss = matcher_ctrl.loss()
    (task + local_loss).backward()
    ddp_loss = distributed.all_reduce_mean(local_loss)
    grad_diff = max((p.grad - reference_grads[n]).abs().max().item() for n, p in model.named_parameters() if n in reference_grads)
    grad_scale = max(g.abs().max().item() for g in reference_grads.values())

    # A few DDP training steps; the ranks must stay in sync.
    optimizer = make_optimizer(model.parameters())
    loader = DataLoader(data.train, batch_size=16, sampler=distributed.make_sampler(data.train, seed=0))
    records = train_epoch(ctrl, ddp, loader, optimizer, 0, 1, max_steps=3)
    flat = torch.cat([p.detach().flatten() for p in model.parameters()])
    reference = distributed.broadcast_object(flat)
    out_of_sync = (flat - reference).abs().max()
    out_of_sync = float(distributed.all_reduce_mean(out_of_sync.unsqueeze(0)) * world)

    if distributed.is_main():
        (out_dir / "equality.json").write_text(json.dumps({
            "world_size": world,
            "reference_loss": reference_loss.item(),
            "ddp_loss": ddp_loss.item(),
            "grad_max_abs_diff": grad_diff,
            "grad_max_abs": grad_scale,
            "steps": len(records),
            "attribution_losses": [r["attribution_loss"] for r in records],
            "params_out_of_sync": out_of_sync,
        }))

    # The command line itself under torchrun: DDP training, rank 0 writes everything.
    code = cli.main([
        "compress", "--config", tiny_config, "--output", str(out_dir / "run"), "--teacher-epochs", "1",
        "--epochs", "1", "--max-steps", "2", "--eval-samples", "4", "--quiet",
    ])
    sys.exit(code)
    '''
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def torchrun_result(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp")
    worker = out_dir / "worker.py"
    worker.write_text(WORKER)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), str(worker), str(out_dir), str(TINY),
    ]
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=420, cwd=out_dir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return out_dir, result


def test_ddp_matches_one_process(torchrun_result):
    out_dir, _ = torchrun_result
    measured = json.loads((out_dir / "equality.json").read_text())
    assert measured["world_size"] == 2
    assert measured["reference_loss"] > 0
    assert abs(measured["ddp_loss"] - measured["reference_loss"]) < 1e-5
    assert measured["grad_max_abs_diff"] <= 1e-5 * max(1.0, measured["grad_max_abs"])
    assert measured["steps"] == 3 and all(loss >= 0 for loss in measured["attribution_losses"])
    assert measured["params_out_of_sync"] == 0.0


def test_cli_compress_under_torchrun(torchrun_result):
    out_dir, result = torchrun_result
    run = out_dir / "run"
    report = json.loads((run / "report.json").read_text())
    assert report["world_size"] == 2
    assert (run / "checkpoint.pt").is_file() and (run / "ir" / "model.xml").is_file() and (run / "teacher.pt").is_file()
    assert result.stdout.count("Report:") == 1  # only rank 0 reports
    assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_a_refusal_on_rank_0_stops_every_rank_in_one_line(tmp_path):
    """The folder is in use (this test holds its lock): rank 0 refuses, and rank 1 stops with it instead of
    running into a collective that fails with gloo's traceback."""
    output = tmp_path / "run"
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
        "--master_port", str(_free_port()), "-m", "nncf_wcam.cli", "compress", "--config", str(TINY), "--output", str(output), *FAST,
    ]
    with FolderLock(output, command="another nncf-wcam compress"):
        result = subprocess.run(command, capture_output=True, text=True, env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300, cwd=tmp_path)
    ours = [line for line in result.stderr.splitlines() if line.startswith("nncf-wcam")]
    assert result.returncode != 0 and len(ours) == 1 and "another nncf-wcam compress" in ours[0], result.stderr[-4000:]
    workers = result.stderr.split("elastic/multiprocessing/api.py")[0]  # before torchrun's own failure report
    for transport_noise in ("gloo", "Connection closed", "DistBackendError", "Traceback"):
        assert transport_noise not in workers, result.stderr[-4000:]
    assert not output.exists() or [p.name for p in output.iterdir()] == []  # nothing written
