"""The README's INC loop, run as written (every callback in its place), on a small model and digits."""

import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from conftest import small_subset

README = Path(__file__).resolve().parents[1] / "README.md"


def readme_inc_block() -> str:
    section = README.read_text(encoding="utf-8").split("## Intel Neural Compressor 3.7", 1)[1]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


@pytest.mark.parametrize("algorithm", ["pruning", "qat"])
def test_the_readme_inc_loop_runs_as_written_and_exports(algorithm, teacher_copy, digits, tmp_path, monkeypatch):
    """As written; for QAT with the one change its comment names (QuantizationAwareTrainingConfig() for pruning)."""
    monkeypatch.chdir(tmp_path)
    code = readme_inc_block()
    if algorithm == "qat":
        code = "from neural_compressor.config import QuantizationAwareTrainingConfig\n" + re.sub(r"^pruning = .*$", "pruning = QuantizationAwareTrainingConfig()", code, flags=re.MULTILINE)
    x = digits.test.tensors[0][:8]
    namespace = {
        "torch": torch,
        "model": teacher_copy,
        "x": x,
        "epochs": 1,
        "train_loader": DataLoader(small_subset(digits.train, 128), batch_size=32),
        "criterion": F.cross_entropy,
        "sample_inputs": digits.test.tensors[0][:32],
    }
    exec(compile(code, "README.md", "exec"), namespace)  # noqa: S102  (our own README)
    assert (tmp_path / "ir" / "model.xml").is_file() and (tmp_path / "ir" / "manifest.json").is_file()
    assert namespace["manager"].callbacks.matcher.last_layer_losses, "the matching loss never ran"
