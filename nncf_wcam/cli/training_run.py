"""`compress`'s training stages: the teacher (trained here when the run has none), then compression-aware
training of one config, checkpointed after every epoch by rank 0 and resumable bit-exactly on CPU."""

import time
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any
from typing import Optional

import nncf
import torch
from nncf.torch import create_compressed_model
from nncf.torch import load_state
from torch.utils.data import DataLoader

from nncf_wcam.cli import distributed
from nncf_wcam.cli.console import say
from nncf_wcam.cli.console import stage_bar
from nncf_wcam.cli.devices import training_device
from nncf_wcam.cli.inputs import build_checked_model
from nncf_wcam.cli.resolve import Run
from nncf_wcam.cli.run_settings import state_digest
from nncf_wcam.cli.run_settings import write_run_settings
from nncf_wcam.core.training import batchnorm_frozen
from nncf_wcam.core.training import check_finite_model
from nncf_wcam.core.training import make_lr_scheduler
from nncf_wcam.core.training import make_optimizer
from nncf_wcam.core.training import train_teacher
from nncf_wcam.nncf2.attribution_matching import attribution_controller
from nncf_wcam.nncf2.checkpoint import TEACHER_NAME
from nncf_wcam.nncf2.checkpoint import load_checkpoint
from nncf_wcam.nncf2.checkpoint import save_checkpoint
from nncf_wcam.nncf2.checkpoint import save_teacher
from nncf_wcam.nncf2.checkpoint import set_rng_states
from nncf_wcam.nncf2.training import compress
from nncf_wcam.nncf2.training import train_epoch

DEFAULT_TEACHER_LR = 3e-3
TEACHER_BATCH_SIZE = 32  # the teacher's own training: small batches reach ~97 % on digits in 6 epochs


@dataclass
class RunResult:
    label: str
    compression_ctrl: Any
    model: torch.nn.Module
    history: list
    checkpoint: Path
    train_seconds: float
    resumed_from_epoch: Optional[int] = None
    layers: list = field(default_factory=list)


def teacher_stage(run: Run) -> tuple:
    """(teacher state_dict, seconds): the run's teacher, trained here when it has none yet (rank 0, broadcast)."""
    start = time.perf_counter()
    settings, teacher_path = run.settings, run.output / TEACHER_NAME
    if run.teacher_state is not None:
        if distributed.is_main() and not teacher_path.is_file():
            model = build_checked_model(run.spec)
            model.load_state_dict(run.teacher_state)
            save_teacher(teacher_path, model, run.spec, source=settings.teacher.get("path"), dataset=run.data.description)
        return run.teacher_state, time.perf_counter() - start
    state = None
    if distributed.is_main():
        torch.manual_seed(settings.seed)
        model = build_checked_model(run.spec)
        epochs, steps = settings.teacher_epochs, -(-len(run.data.train) // TEACHER_BATCH_SIZE)
        say(f"Training the teacher ({run.spec['name']}, {epochs} epochs) ...")
        with stage_bar("teacher", epochs * steps) as bar:
            train_teacher(model, run.data.train, epochs=epochs, lr=DEFAULT_TEACHER_LR, batch_size=TEACHER_BATCH_SIZE, seed=settings.seed, logits_output=run.logits_output, bar=bar, device=training_device(settings.device))
        model.cpu()
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        save_teacher(teacher_path, model, run.spec, epochs=epochs, seed=settings.seed, dataset=run.data.description)
        settings.teacher["sha256"] = state_digest(state)
        write_run_settings(run.output, settings)  # from here on, a resume uses this teacher and never trains another
    state = distributed.broadcast_object(state)
    run.teacher_state = state
    return state, time.perf_counter() - start


def _compressed_model(config: nncf.NNCFConfig, run: Run, checkpoint: Optional[dict]) -> tuple:
    """(compression_ctrl, compressed model): from the teacher's weights, or from the checkpoint to resume."""
    torch.manual_seed(run.settings.seed)
    model = build_checked_model(run.spec)
    model.load_state_dict(run.teacher_state)  # the teacher's weights: the attribution_matching builder copies them
    if checkpoint is None:
        return compress(model, config, run.data.train, batch_size=run.settings.batch_size, device=training_device(run.settings.device))
    compression_ctrl, compressed = create_compressed_model(model, config, compression_state=checkpoint["compression_state"])
    load_state(compressed, checkpoint["state_dict"], is_resume=True)
    return compression_ctrl, compressed


def _resume_state(checkpoint: dict, optimizer, lr_scheduler, label: str, path: Path, epochs: int) -> tuple:
    """(start epoch, history) of a checkpoint, with the optimizer, the LR schedule and the RNGs restored."""
    if checkpoint.get("world_size", 1) != distributed.world_size():
        say(
            f"[{label}] note: the checkpoint was written by {checkpoint.get('world_size', 1)} process(es), this run has "
            f"{distributed.world_size()}: the data shards differ from an uninterrupted run."
        )
    optimizer.load_state_dict(checkpoint["optimizer"])
    if lr_scheduler is not None and checkpoint.get("lr_scheduler") is not None:
        lr_scheduler.load_state_dict(checkpoint["lr_scheduler"])
    set_rng_states(checkpoint["rng"])
    say(f"[{label}] resuming after epoch {checkpoint['epoch']}/{epochs} from {path}")
    return checkpoint["epoch"], list(checkpoint["history"])


@dataclass
class _Training:
    """What one compression run's epoch loop needs."""

    label: str
    run: Run
    raw: dict
    compression_ctrl: Any
    compressed: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: Any
    checkpoint_path: Path
    layers: list


def _save_epoch(training: _Training, epoch: int, history: list) -> None:
    settings = training.run.settings
    save_checkpoint(
        training.checkpoint_path,
        config=training.raw,
        spec=training.run.spec,
        compression_ctrl=training.compression_ctrl,
        model=training.compressed,
        teacher_state_dict=training.run.teacher_state,
        optimizer=training.optimizer,
        lr_scheduler=training.lr_scheduler,
        epoch=epoch + 1,
        epochs=settings.epochs,
        seed=settings.seed,
        history=history,
        label=training.label,
        dataset=training.raw.get("dataset"),
        max_steps=settings.max_steps,
        world_size=distributed.world_size(),
        matched_layers=training.layers,
    )


def _train_epochs(training: _Training, start_epoch: int, history: list) -> None:
    settings, data = training.run.settings, training.run.data
    epochs, max_steps = settings.epochs, settings.max_steps
    device = training_device(settings.device)
    train_model = distributed.wrap_ddp(training.compressed, training.compression_ctrl)
    loader = DataLoader(data.train, batch_size=max(1, settings.batch_size // distributed.world_size()), sampler=distributed.make_sampler(data.train, settings.seed))
    steps = len(loader) if max_steps is None else min(len(loader), max_steps)
    with stage_bar(training.label, (epochs - start_epoch) * steps) as bar:
        for epoch in range(start_epoch, epochs):
            freeze_bn = batchnorm_frozen(epoch, epochs, training.raw.get("freeze_bn_epochs", 0))
            records = train_epoch(training.compression_ctrl, train_model, loader, training.optimizer, epoch, epochs, max_steps=max_steps, logits_output=training.run.logits_output, device=device, desc=training.label, bar=bar, freeze_bn=freeze_bn)
            history.extend(records)
            if training.lr_scheduler is not None:
                training.lr_scheduler.step()
            check_finite_model(training.compressed, epoch)  # a step that overflowed is never saved
            if distributed.is_main():
                _save_epoch(training, epoch, history)
            distributed.barrier()
            if records:
                task = sum(r["task_loss"] for r in records) / len(records)
                compression = sum(r["compression_loss"] for r in records) / len(records)
                say(f"[{training.label}] epoch {epoch + 1}/{epochs}: mean task loss {task:.4f}, mean compression loss {compression:.4f} ({len(records)} steps)")


def run_compression(label: str, config: nncf.NNCFConfig, raw: dict, run: Run, checkpoint_path: Path, *, default_layers: Optional[list] = None) -> RunResult:
    """Compression-aware training of one config, checkpointed after every epoch (rank 0), resumable."""
    start = time.perf_counter()
    Path(config.get("log_dir", ".")).mkdir(parents=True, exist_ok=True)
    checkpoint = load_checkpoint(checkpoint_path) if run.resume and checkpoint_path.is_file() else None
    compression_ctrl, compressed = _compressed_model(config, run, checkpoint)
    compressed.to(training_device(run.settings.device))
    optimizer = make_optimizer(compressed.parameters(), raw.get("optimizer"))
    lr_scheduler = make_lr_scheduler(optimizer, raw.get("optimizer"), run.settings.epochs)
    start_epoch, history = 0, []
    if checkpoint is not None:
        start_epoch, history = _resume_state(checkpoint, optimizer, lr_scheduler, label, checkpoint_path, run.settings.epochs)
    am_ctrl = attribution_controller(compression_ctrl)
    layers = list(am_ctrl.matcher.layers) if am_ctrl is not None else list(default_layers or [])
    training = _Training(label, run, raw, compression_ctrl, compressed, optimizer, lr_scheduler, checkpoint_path, layers)
    _train_epochs(training, start_epoch, history)
    return RunResult(
        label=label,
        compression_ctrl=compression_ctrl,
        model=compressed,
        history=history,
        checkpoint=checkpoint_path,
        train_seconds=time.perf_counter() - start,
        resumed_from_epoch=checkpoint["epoch"] if checkpoint is not None else None,
        layers=layers,
    )
