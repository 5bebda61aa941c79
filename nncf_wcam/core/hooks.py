"""Forward hooks that capture what the attribution losses need: activations, and the training forward pass.

Pure torch. The hooks are safe with in-place operations after a captured layer (the layers downstream
get a copy), ignore the extra passes a loss runs itself (`auxiliary_forward`), and take gradients only
where the caller asks: a user's `.grad` is never touched.
"""

import contextlib
import threading
from typing import Any
from typing import Callable
from typing import Iterator

import torch
from torch import nn

from nncf_wcam.core.layers import LayerNameError

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


def detached_copy(obj: Any) -> Any:
    """The same nested structure with every tensor detached and copied (what a forward may later change in place)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(detached_copy(o) for o in obj)
    if isinstance(obj, dict):
        return {k: detached_copy(v) for k, v in obj.items()}
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
        if not self.capturing:
            return None
        # Copied before the forward runs: a model that normalizes its input in place (x.sub_(mean)) must
        # not change what the teacher is then given.
        self.inputs = (detached_copy(args), detached_copy(kwargs))
        if not self._input_grad:
            return None
        x = first_input(args, kwargs)
        if x.requires_grad:
            self.input = x
            return None
        self.input = x.detach().requires_grad_(True)
        # The forward gets a copy of the leaf: in-place operations on the input then work, and the
        # gradients still reach the leaf.
        return (self.input.clone(), *args[1:]), kwargs

    def _end(self, _module: nn.Module, args, kwargs, output) -> None:
        if in_auxiliary_forward():
            return
        if self.capturing:
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


def model_device(model: nn.Module) -> torch.device:
    """Where the model's parameters live (CPU for a model without parameters)."""
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")
