"""Differentiable collapsed attribution maps and the hooks that capture activations.

Pure torch: nothing here imports NNCF. captum's maps are not differentiable, so the
training loss computes its own; captum serves as the oracle in evaluation and tests.
"""

import contextlib
import threading
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

LogitsSelector = Optional[Union[int, str]]

# Module-name parts that NNCF adds to a wrapped model; they are not user layers.
_NNCF_INTERNAL_PARTS = ("_nncf", "pre_ops", "post_ops")


_auxiliary = threading.local()


@contextlib.contextmanager
def auxiliary_forward() -> Iterator[None]:
    """Extra forward passes inside a loss (e.g. saliency-guided masking) that capture hooks must ignore.

    Without this, such a pass would overwrite the activations captured from the training forward.
    """
    previous = getattr(_auxiliary, "active", False)
    _auxiliary.active = True
    try:
        yield
    finally:
        _auxiliary.active = previous


def in_auxiliary_forward() -> bool:
    return getattr(_auxiliary, "active", False)


class LayerNameError(ValueError):
    """A layer named in a config does not exist or has no spatial output."""


def wcam_map(activation: torch.Tensor, gradient: torch.Tensor, channel_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Weighted collapsed map ReLU(sum_c w_c A_c), w_c = sum over space of dy_k/dA_c (Grad-CAM up to scale).

    `channel_mask` (B x C, 0/1) drops channels before collapsing (stochastic matching).
    Returns B x (spatial...) maps.
    """
    spatial_dims = tuple(range(2, activation.dim()))
    weights = gradient.sum(dim=spatial_dims, keepdim=True)
    weighted = weights * activation
    if channel_mask is not None:
        weighted = weighted * channel_mask.view(*channel_mask.shape, *([1] * len(spatial_dims)))
    return F.relu(weighted.sum(dim=1))


def ewa_map(activation: torch.Tensor, channel_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Label-free ablation (attention transfer): mean over channels of A_c squared."""
    squared = activation.pow(2)
    if channel_mask is not None:
        squared = squared * channel_mask.view(*channel_mask.shape, *([1] * (activation.dim() - 2)))
    return squared.mean(dim=1)


def normalize_maps(maps: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Per-sample L2 normalization of flattened maps; an all-zero map stays zero (no NaN).

    Half-precision maps (bf16/fp16 autocast) are normalized in float32: the sum of squares and
    the difference of unit maps lose most of their precision in 8 mantissa bits.
    """
    maps = maps.flatten(1)
    if maps.dtype in (torch.float16, torch.bfloat16):
        maps = maps.float()
    return F.normalize(maps, p=2, dim=1, eps=eps)


def map_distance(teacher_maps: torch.Tensor, student_maps: torch.Tensor) -> torch.Tensor:
    """Per sample, the SUM over positions of (n(M_t) - n(M_s))^2 = 2 (1 - cos); then the mean over the batch.

    In [0, 4] whatever the map's size: a loss weight means the same for a 7 x 7 and a 56 x 56 layer
    and for any batch size. (The authors' code took the mean over positions too, which makes beta's
    effect shrink with H * W: their beta 100 on VGG16's 14 x 14 maps is 100 / 196 = 0.51 here.)
    """
    squared = (normalize_maps(teacher_maps) - normalize_maps(student_maps)).pow(2)
    return squared.sum(dim=1).mean()


INPUT_METHODS = ("saliency", "input_x_gradient")


def input_map(method: str, inputs: torch.Tensor, gradient: torch.Tensor) -> torch.Tensor:
    """Input-space attribution for the target class: |dy_k/dx| ("saliency", captum's Saliency with abs)
    or x * dy_k/dx ("input_x_gradient", captum's InputXGradient); same shape as the input."""
    if method == "saliency":
        return gradient.abs()
    if method == "input_x_gradient":
        return inputs * gradient
    msg = f"Unknown input_method '{method}'. Use one of: {', '.join(INPUT_METHODS)}, or null."
    raise ValueError(msg)


def first_input(args: tuple, kwargs: dict) -> torch.Tensor:
    """The tensor input-space maps are drawn over: the forward's first positional argument."""
    if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
        found = type(args[0]).__name__ if args else "no positional argument"
        msg = (
            f"input_method needs the model's first positional input to be a floating-point tensor (got {found}). "
            "Call the model as model(x, ...), or set \"input_method\" to null."
        )
        raise ValueError(msg)
    return args[0]


def select_logits(output: Any, logits_output: LogitsSelector = None) -> torch.Tensor:
    """Picks the logits out of a model's output (a tensor, a tuple/list by index, a dict by key)."""
    if logits_output is None:
        if isinstance(output, torch.Tensor):
            return output
        msg = (
            f"The model returned a {type(output).__name__}, not a tensor of logits. "
            "Set \"logits_output\" in the attribution_matching block to the index (tuple) or key (dict) "
            "of the output that holds the logits."
        )
        raise ValueError(msg)
    if isinstance(logits_output, float) and logits_output.is_integer():
        logits_output = int(logits_output)  # JSON Schema integers may arrive as 1.0
    try:
        logits = output[logits_output]
    except (KeyError, IndexError, TypeError) as e:
        available = list(output.keys()) if isinstance(output, dict) else f"indices 0..{len(output) - 1}" if isinstance(output, (tuple, list)) else "none (the output is a tensor)"
        msg = f"\"logits_output\": {logits_output!r} is not in the model's output. Available: {available}."
        raise ValueError(msg) from e
    if not isinstance(logits, torch.Tensor) or logits.dim() != 2:
        msg = f"\"logits_output\": {logits_output!r} selects {type(logits).__name__} of shape {getattr(logits, 'shape', None)}; expected B x num_classes logits."
        raise ValueError(msg)
    return logits


def user_layer_names(model: nn.Module) -> list:
    """Names of the model's modules as the user wrote them, without NNCF's internal submodules."""
    names = []
    for name, _ in model.named_modules():
        if name and not any(part in _NNCF_INTERNAL_PARTS for part in name.split(".")):
            names.append(name)
    return names


def resolve_layers(model: nn.Module, names: Sequence[str]) -> list:
    """Returns the modules for `names`, or raises LayerNameError listing the names that exist."""
    valid = user_layer_names(model)
    modules = []
    for name in names:
        if name not in valid:
            msg = f"Layer {name!r} does not exist in {type(model).__name__}. Layers that do: {', '.join(valid)}."
            raise LayerNameError(msg)
        modules.append(model.get_submodule(name))
    return modules


def record_output_shapes(model: nn.Module, run_forward: Callable[[], Any], names: Iterable[str]) -> dict:
    """Runs one forward pass and returns {name: output shape (or None if not a tensor)} in completion order."""
    shapes = {}
    handles = []
    for name in names:
        module = model.get_submodule(name)

        def hook(_module, _inputs, output, name=name):
            shapes.pop(name, None)  # re-insert so the order is that of the last completion
            shapes[name] = tuple(output.shape) if isinstance(output, torch.Tensor) else None

        handles.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            run_forward()
    finally:
        for handle in handles:
            handle.remove()
    return shapes


def has_spatial_extent(shape: Optional[tuple]) -> bool:
    """B x C x H x W (or B x C x L): at least one spatial dimension larger than 1."""
    return shape is not None and len(shape) >= 3 and any(s > 1 for s in shape[2:])


def last_spatial_layer(shapes: dict) -> str:
    """The layer a Grad-CAM user picks: the last module to finish whose output is a spatial feature map.

    Containers finish after their children, so for `features -> pool -> fc` this is `features`,
    and for a ResNet it is `layer4`: the same tensor as its last block's output.
    """
    spatial = [name for name, shape in shapes.items() if has_spatial_extent(shape)]
    if not spatial:
        msg = "\"layers\": \"auto\" found no module with a spatial output (B x C x H x W). Name the layers explicitly."
        raise LayerNameError(msg)
    return spatial[-1]


class ActivationCapture:
    """Forward hooks that keep the latest output of named layers while `active()` says so.

    With `make_leaf=True` (the frozen teacher, which has no parameter requiring grad) the first
    captured output that does not require grad is turned into a leaf that does, and grad mode is
    switched on from there, so that the gradients of the logits with respect to it, and to every
    layer after it, exist. Run such a forward under `torch.no_grad()`: the context restores the
    grad mode when it exits, and nothing before the first matched layer is recorded.
    A module called several times per forward keeps its last call. The layers after a hooked one
    receive a clone of its output, so in-place operations there leave the captured activation intact.
    """

    def __init__(self, modules: dict, active: Callable[[], bool] = lambda: True, make_leaf: bool = False):
        self.activations = {}
        self._active = active
        self._make_leaf = make_leaf
        self._handles = [module.register_forward_hook(self._hook_for(name)) for name, module in modules.items()]

    def _hook_for(self, name: str):
        def hook(_module, _inputs, output):
            if not self._active() or in_auxiliary_forward():
                return None
            if not isinstance(output, torch.Tensor):
                msg = f"Layer '{name}' returned a {type(output).__name__}; attribution matching needs a tensor output."
                raise LayerNameError(msg)
            if self._make_leaf and not output.requires_grad:
                # The teacher runs under no_grad up to here: the layers before it record no graph.
                torch.set_grad_enabled(True)
                output = output.detach().requires_grad_(True)
            self.activations[name] = output
            # Downstream layers get a copy: an in-place op after the matched layer (ReLU(inplace=True) in
            # every torchvision VGG and ResNet) would otherwise overwrite the captured activation, and on
            # the teacher's leaf it fails ("a leaf Variable that requires grad is being used in an in-place
            # operation"). The gradients with respect to the captured tensor flow through the copy.
            return output.clone()

        return hook

    def clear(self) -> None:
        self.activations = {}

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []


def detached(obj: Any) -> Any:
    """The same nested structure with every tensor detached."""
    if isinstance(obj, torch.Tensor):
        return obj.detach()
    if isinstance(obj, (list, tuple)):
        return type(obj)(detached(o) for o in obj)
    if isinstance(obj, dict):
        return {k: detached(v) for k, v in obj.items()}
    return obj


class TrainingForwardCapture:
    """Root hooks that keep the inputs (detached) and the output of a model's latest training forward pass.

    Only a pass in training mode with gradients enabled is kept, so a loss built on it is zero and free
    in eval mode or under no_grad; passes inside `auxiliary_forward()` are ignored. Each new pass first
    calls `on_new_pass` (to drop state that belonged to the previous one). `capturing` is true while a
    kept pass runs, for layer hooks that should capture along with it.

    With `input_grad=True`, a kept pass whose first input does not require grad runs on a leaf copy
    that does (`input`), so that input-space maps can be differentiated through this very pass.
    """

    def __init__(self, model: nn.Module, on_new_pass: Callable[[], None] = lambda: None, input_grad: bool = False):
        self.inputs = None  # (args, kwargs)
        self.input = None  # the first input as the pass saw it (with input_grad: requiring grad)
        self.output = None
        self.capturing = False
        self._on_new_pass = on_new_pass
        self._input_grad = input_grad
        self._handles = [
            model.register_forward_pre_hook(self._start, with_kwargs=True),
            model.register_forward_hook(self._end, with_kwargs=True),
        ]

    def _start(self, module: nn.Module, args, kwargs):
        if in_auxiliary_forward():
            return None
        self.release()
        self._on_new_pass()
        self.capturing = module.training and torch.is_grad_enabled()
        if not (self.capturing and self._input_grad):
            return None
        x = first_input(args, kwargs)
        if x.requires_grad:
            return None
        return (x.detach().requires_grad_(True), *args[1:]), kwargs

    def _end(self, _module: nn.Module, args, kwargs, output) -> None:
        if in_auxiliary_forward():
            return
        if self.capturing:
            self.inputs = (detached(args), detached(kwargs))
            self.input = args[0] if args and isinstance(args[0], torch.Tensor) else None
            self.output = output
        self.capturing = False

    def release(self) -> None:
        self.inputs = None
        self.input = None
        self.output = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.release()


def generator_state(generator: torch.Generator) -> dict:
    """A JSON-friendly copy of a random generator's state (for NNCF's compression state)."""
    return {"generator_state": generator.get_state().tolist()}


def restore_generator(generator: torch.Generator, state: dict) -> None:
    if "generator_state" in state:
        generator.set_state(torch.tensor(state["generator_state"], dtype=torch.uint8))


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
