"""The student's name of a matched layer after INC's FX quantization-aware training fused it.

INC 3.7's QAT traces the model with torch.fx and fuses Conv + BatchNorm + ReLU into one QAT module named after
its first member (`features.7` holds `features.7`, `.8`, `.9`); the other members and containers such as
`features` no longer run as modules. The teacher layer's output is then the output of the fused module whose
group ends at that layer. A layer inside a group (the convolution of a fused Conv-BN-ReLU) has no observable
output any more: that is refused in one line that names the group's last member.
"""

from typing import List

from torch import fx
from torch import nn

from nncf_wcam.core.layers import LayerNameError


def _leaves_in_order(model: nn.Module) -> List[str]:
    return [name for name, module in model.named_modules() if name and not list(module.children())]


def _called_modules(graph_module: fx.GraphModule) -> List[str]:
    return [str(node.target) for node in graph_module.graph.nodes if node.op == "call_module"]


def _last_leaf(teacher: nn.Module, layer: str, leaves: List[str]) -> str:
    inside = [name for name in leaves if name == layer or name.startswith(layer + ".")]
    if not inside:
        msg = f"Layer {layer!r} has no leaf module in the teacher; name a layer with parameters or activations."
        raise LayerNameError(msg)
    return inside[-1]


def student_layer_name(teacher: nn.Module, student: nn.Module, layer: str) -> str:
    """The name in `student` (after FX fusion, or unchanged) of the module whose output is `layer`'s in `teacher`."""
    if not isinstance(student, fx.GraphModule):
        return layer
    leaves = _leaves_in_order(teacher)
    called = set(_called_modules(student))
    target = _last_leaf(teacher, layer, leaves)
    position = leaves.index(target)
    fused_after = []
    for name in leaves[position + 1 :]:
        if name in called:
            break
        fused_after.append(name)
    # The module that runs in the student and holds the target: the target itself, or the group it was fused into.
    holder = target if target in called else next((name for name in reversed(leaves[:position]) if name in called), None)
    if holder is None:
        msg = f"Layer {layer!r} does not run in the quantization-aware model (it was fused or traced away). Fix: set student_layers to the prepared model's name for it."
        raise LayerNameError(msg)
    if fused_after and _is_fused(student.get_submodule(holder)):
        msg = (
            f"Layer {layer!r} is inside a group fused by INC's quantization-aware training ({holder} .. {fused_after[-1]}), so its "
            f"own output no longer exists. Fix: match {fused_after[-1]!r} (the group's output) in \"layers\", or set student_layers."
        )
        raise LayerNameError(msg)
    return holder


def _is_fused(module: nn.Module) -> bool:
    """A torch.ao intrinsic module (ConvBnReLU2d, ConvReLU2d, LinearReLU, ...): several layers in one."""
    return type(module).__module__.startswith(("torch.ao.nn.intrinsic", "torch.nn.intrinsic"))
