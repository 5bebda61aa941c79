"""The setup a student run was measured under, kept in every run's JSON.

A results folder is filled by several invocations (one per algorithm, variant or seed; on other machines,
in later sessions). Each run records what it measured against (`setup`: the data, the teacher's weights,
the recipe) and where it ran (`ran_on`). A new run refuses a folder whose runs measured something else,
and the results' header is built from all runs at aggregation, so it describes the whole folder.
"""

import json
import os
import re
from pathlib import Path
from typing import Optional

import torch


class SetupMismatch(SystemExit):
    """A run's setup differs from the runs already in its folder (exit with the message)."""


def ran_on(args) -> dict:
    """Where one run ran: device, torch, threads."""
    return {"device": args.device, "torch": torch.__version__, "threads": args.threads, "cpus": os.cpu_count()}


def _differences(old: dict, new: dict) -> list:
    return [f"{key}: {old.get(key)!r} there, {new.get(key)!r} here" for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def _legacy_fingerprint(header_path: Path) -> Optional[str]:
    """The teacher fingerprint a hand-kept header.txt names, for runs that carry no setup."""
    found = re.search(r"\(weights ([0-9a-f]{12})\)", header_path.read_text()) if header_path.is_file() else None
    return found.group(1) if found else None


def check_folder(runs_dir: Path, setup: dict, header_path: Path) -> None:
    """Refuses (SetupMismatch) when the runs already in `runs_dir` measured another setup than `setup`."""
    fix = "Fix: a new --output for this setup, or the setup of that folder (--teacher-cache with its teacher, the same flags)."
    legacy = _legacy_fingerprint(header_path)
    for path in sorted(runs_dir.glob("*.json")):
        theirs = json.loads(path.read_text()).get("setup")
        if theirs is None:
            if legacy is not None and legacy != setup["teacher_weights"]:
                raise SetupMismatch(f"{runs_dir} holds runs against teacher {legacy} (header.txt); this run's teacher is {setup['teacher_weights']}. {fix}")
            continue
        differences = _differences(theirs, setup)
        if differences:
            raise SetupMismatch(f"{path} was measured under another setup ({'; '.join(differences)}). {fix}")


def load_records(runs_dir: Path) -> list:
    """Every run's JSON record in the folder."""
    return [json.loads(path.read_text()) for path in sorted(runs_dir.glob("*.json"))]


def _span(values: list) -> str:
    return f"{min(values):.0f}-{max(values):.0f} s" if len(values) > 1 else f"{values[0]:.0f} s"


def header_from_runs(records: list) -> Optional[str]:
    """The results' header from every run's setup and timing; None when a run carries no setup."""
    if not records or any("setup" not in record for record in records):
        return None
    setup = records[0]["setup"]
    seeds = sorted({record["seed"] for record in records})
    times = {}
    for record in records:
        times.setdefault(record["variant"], []).append(record["result"]["train_s"])
    machines = sorted({f"{r['ran_on']['device']}, torch {r['ran_on']['torch']}, {r['ran_on']['threads']} thread(s) of {r['ran_on']['cpus']} CPUs" for r in records})
    return (
        f"{setup['data']}; teacher SmallCNN(width={setup['width']}) trained on all {setup['teacher_train_images']} training images ({setup['teacher_epochs']} epochs), "
        f"accuracy {setup['teacher_accuracy'] * 100:.2f} % (weights {setup['teacher_weights']}); students fine-tuned on the first {setup['train_samples']}; "
        f"matched layer {setup['layer']} (\"auto\"); fine-tuning {setup['epochs']} epochs, batch 64, {json.dumps(setup['optimizer'])}, BatchNorm statistics frozen for the last {setup['freeze_bn_epochs']} epochs; "
        f"seeds {seeds}; Grad-CAM and Saliency on {setup['eval_samples']} held-out images, IG ({setup['ig_steps']} steps) on {setup['ig_samples']}; "
        f"input method {setup['input_method']}; {len(records)} runs on {' / '.join(machines)}; fine-tuning took "
        + ", ".join(f"{variant} {_span(values)}" for variant, values in sorted(times.items()))
        + ".\n"
    )
