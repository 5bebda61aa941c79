"""A spoiled last step and non-finite logits: no NaN weights are ever handed back, saved or exported.

The spoiling model is a user's: a learned gate through sqrt(g^2) at g = 0 has a finite forward (0)
and a NaN gradient (0/0), so one step turns the gate to NaN while the loss it reported was finite.
"""

import copy

import pytest
import torch
from torch import nn

from nncf_wcam.core.training import NonFiniteWeightsError
from nncf_wcam.errors import ExportError
from nncf_wcam.nncf2.export import export_ir
from nncf_wcam.nncf2.training import compress
from nncf_wcam.nncf2.training import fine_tune
from nncf_wcam.nncf2.training import load_config
from nncf_wcam.zoo.models import SmallCNN

from conftest import input_info


class GatedCNN(nn.Module):
    """SmallCNN whose logits get `sqrt(gate^2)` added: finite forward, NaN gradient while the gate is 0."""

    def __init__(self):
        super().__init__()
        self.net = SmallCNN(width=4)
        self.gate = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.net(x) + torch.sqrt(self.gate * self.gate)


def _config(blocks: list) -> dict:
    return load_config({"input_info": input_info(), "compression": blocks})


@pytest.mark.parametrize("blocks", [[], [{"algorithm": "attribution_matching", "layers": ["net.features.9"]}]], ids=["no-compression", "wcam"])
def test_a_step_that_spoils_the_weights_is_refused_even_when_it_is_the_last(digits, blocks):
    torch.manual_seed(0)
    model = GatedCNN()
    ctrl, compressed = compress(model, _config(blocks), digits.train)
    with pytest.raises(NonFiniteWeightsError) as error:
        fine_tune(ctrl, compressed, digits.train, epochs=1, max_steps=1, optimizer_spec={"type": "SGD", "base_lr": 0.01})
    message = str(error.value)
    assert "gate" in message and "After epoch 1" in message and "\n" not in message, message


def test_export_refuses_a_model_with_nan_weights(digits, tmp_path):
    """NaN argmax equals NaN argmax: parity would report "top-1 agreement 1.0" without the finiteness check."""
    torch.manual_seed(0)
    ctrl, compressed = compress(SmallCNN(width=4), _config([{"algorithm": "quantization"}]), digits.train)
    with torch.no_grad():
        compressed.classifier.weight.fill_(float("nan"))  # every logit NaN: argmax agrees everywhere
    output = tmp_path / "ir"
    with pytest.raises(ExportError) as error:
        export_ir(ctrl, compressed, output, digits.test.tensors[0][:8])
    assert "NaN or infinity" in str(error.value)
    assert not output.exists() and list(tmp_path.iterdir()) == []


def test_a_finite_run_is_left_alone(digits):
    """The check refuses only what is spoiled: the same model with a non-zero gate trains and keeps its weights finite."""
    torch.manual_seed(0)
    model = GatedCNN()
    with torch.no_grad():
        model.gate.fill_(0.5)
    ctrl, compressed = compress(copy.deepcopy(model), _config([]), digits.train)
    history = fine_tune(ctrl, compressed, digits.train, epochs=1, max_steps=2, optimizer_spec={"type": "SGD", "base_lr": 0.01})
    assert len(history) == 2 and all(torch.isfinite(p).all() for p in compressed.parameters())
