"""AttributionMatcher: Weighted Collapsed Attribution Matching between a frozen teacher and a student.

Pure torch, usable without NNCF:

    matcher = AttributionMatcher(frozen_copy(model), model, layers=["features.9"])
    logits = model(x)                      # hooks capture the inputs and the layers' activations
    loss = criterion(logits, y) + matcher.loss()
    loss.backward()                        # trains the student through its own attribution maps

The loss (Park et al., NeurIPS 2020): for the teacher's top-1 class k, at each matched layer,
M = ReLU(sum_c w_c A_c) with w_c = sum_hw dy_k/dA_c; loss = weight * sum_l lambda_l * D(M_t, M_s),
D = per sample the sum over positions of (n(M_t) - n(M_s))^2 (n: per-sample L2 normalization),
averaged over the batch: 2 (1 - cosine), in [0, 4] for any map size (`core.maps.map_distance`).
The teacher map is detached and a random fraction of its channels is dropped each step; the
student map keeps its graph (`create_graph=True`), so the loss trains the student through its own
gradients. Only the gradients the maps need are computed: `torch.autograd.grad` with respect to
the captured activations (and the input, for input-space maps), never a backward over all parameters.

Input-space matching (`input_method`, in the spirit of Jacobian matching, Srinivas & Fleuret 2018):
the maps |dy_k/dx| ("saliency") or x * dy_k/dx ("input_x_gradient") of teacher and student are
matched with the same distance, times `input_weight`, by double backprop through the student's own
training forward (its input is made a leaf that requires grad while it trains).
"""

import copy
from typing import Optional
from typing import Sequence

import torch
from torch import nn

from nncf_wcam.core.generator import generator_state
from nncf_wcam.core.generator import restore_generator
from nncf_wcam.core.generator import seeded_generator
from nncf_wcam.core.hooks import ActivationCapture
from nncf_wcam.core.hooks import TrainingForwardCapture
from nncf_wcam.core.hooks import first_input
from nncf_wcam.core.hooks import model_device
from nncf_wcam.core.layers import resolve_layers
from nncf_wcam.core.logits import LogitsSelector
from nncf_wcam.core.logits import select_logits
from nncf_wcam.core.maps import INPUT_METHODS
from nncf_wcam.core.maps import ewa_map
from nncf_wcam.core.maps import input_map
from nncf_wcam.core.maps import map_distance
from nncf_wcam.core.maps import wcam_map

METHODS = ("wcam", "ewa")
DEFAULT_WEIGHT = 10.0
DEFAULT_INPUT_WEIGHT = 1.0


def frozen_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode with no parameter requiring grad: the teacher."""
    teacher = copy.deepcopy(model)
    freeze(teacher)
    return teacher


def freeze(model: nn.Module) -> nn.Module:
    for param in model.parameters():
        param.requires_grad_(False)
    return model.eval()


def _target_scores(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Sum over the batch of each sample's target logit: one backward gives every sample's gradient."""
    return logits.gather(1, target.unsqueeze(1)).sum()


class AttributionMatcher:
    """Matches the student's collapsed attribution maps to a frozen teacher's at named layers.

    :param teacher: the uncompressed model, frozen (see `frozen_copy`); kept in eval mode.
    :param student: the model being trained (may be an NNCFNetwork); forward hooks are added to it.
    :param layers: names of the matched layers, as in the student's `named_modules()` (may be empty
        when `input_method` is set: input-space matching alone).
    :param method: "wcam" (Grad-CAM-like, needs double backprop) or "ewa" (label-free, mean_c A_c^2).
    :param weight: beta, the multiplier of the layer maps' distance (in [0, 4] per layer).
    :param layer_weights: lambda_l per layer (default 1.0 each).
    :param stochastic_drop: fraction of the teacher's channels zeroed per sample and step, in [0, 1).
    :param logits_output: index or key of the logits when the model returns a tuple or dict.
    :param seed: seed of the matcher's own generator for the channel drop (the global RNG is left alone,
        so runs with and without matching see the same data order and initializations).
    :param input_method: None, "saliency" (|dy_k/dx|) or "input_x_gradient" (x * dy_k/dx): also match
        input-space maps.
    :param input_weight: the multiplier of the input maps' distance.
    :param student_layers: the student's names of the matched layers, one per entry of `layers`, where they
        differ from the teacher's (a student whose modules were renamed or fused, e.g. by torch.ao's FX
        quantization); `layers` then names the teacher's modules and keys the reported losses and maps.

    Shapes: the student's and teacher's matched layers output B x C x H x W (or B x C x L) activations;
    their maps are B x H x W; `loss()` returns a scalar tensor (zero in eval mode, under no_grad, or
    before any training forward pass). A context manager: leaving the `with` block removes every hook.

    Example::

        with AttributionMatcher(frozen_copy(model), model, ["features.9"]) as matcher:
            for x, y in loader:
                loss = F.cross_entropy(model(x), y) + matcher.loss()   # x: B x C x H x W
                loss.backward()
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        layers: Sequence[str],
        method: str = "wcam",
        weight: float = DEFAULT_WEIGHT,
        layer_weights: Optional[Sequence[float]] = None,
        stochastic_drop: float = 0.0,
        logits_output: LogitsSelector = None,
        seed: int = 0,
        input_method: Optional[str] = None,
        input_weight: float = DEFAULT_INPUT_WEIGHT,
        student_layers: Optional[Sequence[str]] = None,
    ):
        if method not in METHODS:
            msg = f"Unknown attribution matching method '{method}'. Use one of: {', '.join(METHODS)}."
            raise ValueError(msg)
        if not 0.0 <= stochastic_drop < 1.0:
            msg = f"stochastic_drop must be in [0, 1), got {stochastic_drop}."
            raise ValueError(msg)
        if input_method is not None and input_method not in INPUT_METHODS:
            msg = f"Unknown input_method '{input_method}'. Use one of: {', '.join(INPUT_METHODS)}, or None."
            raise ValueError(msg)
        if not layers and input_method is None:
            msg = "Nothing to match: give at least one layer, or an input_method."
            raise ValueError(msg)
        if student_layers is not None and len(student_layers) != len(layers):
            msg = f"student_layers has {len(student_layers)} entries for {len(layers)} layers; give one per layer."
            raise ValueError(msg)
        if layer_weights is not None and len(layer_weights) != len(layers):
            msg = f"layer_weights has {len(layer_weights)} entries for {len(layers)} layers; give one per layer."
            raise ValueError(msg)
        self.teacher = freeze(teacher)
        self.student = student
        self.layers = list(layers)
        self.method = method
        self.weight = float(weight)
        self.layer_weights = [float(w) for w in layer_weights] if layer_weights is not None else [1.0] * len(layers)
        self.stochastic_drop = float(stochastic_drop)
        self.logits_output = logits_output
        self.generator = seeded_generator(seed)
        self.input_method = input_method
        self.input_weight = float(input_weight)
        self.last_layer_losses = {}
        self.last_maps = {}  # name -> (teacher map, student map), detached, before normalization
        self.last_input_loss = None
        self.last_input_maps = None  # (teacher map, student map), detached, input-shaped
        self.last_target = None

        self._teacher_running = False
        self._cached_loss = None
        self.student_layers = list(student_layers) if student_layers is not None else list(self.layers)
        student_modules = dict(zip(self.layers, resolve_layers(student, self.student_layers)))
        teacher_modules = dict(zip(self.layers, resolve_layers(teacher, self.layers)))
        # A new training forward invalidates the previous one's loss and activations.
        self.forward = TrainingForwardCapture(student, on_new_pass=self._release, input_grad=input_method is not None)
        self._student_capture = ActivationCapture(student_modules, active=lambda: self.forward.capturing)
        self._teacher_capture = ActivationCapture(teacher_modules, active=lambda: self._teacher_running, make_leaf=method == "wcam")

    def _release(self) -> None:
        self._cached_loss = None
        self._student_capture.clear()
        self._teacher_capture.clear()

    # --- the loss ----------------------------------------------------------------------------
    def loss(self) -> torch.Tensor:
        """The matching loss for the latest training forward pass of the student; zero if there is none."""
        if self._cached_loss is not None:
            return self._cached_loss
        if self.forward.output is None:
            return torch.zeros([], device=model_device(self.student))
        student_logits = select_logits(self.forward.output, self.logits_output)
        teacher_logits, teacher_input = self._run_teacher(student_logits.device)
        target = teacher_logits.argmax(dim=1)
        teacher_maps, teacher_input_map = self._teacher_maps(teacher_logits, target, teacher_input)
        student_maps, student_input_map = self._student_maps(student_logits, target)
        total = torch.zeros([], device=student_logits.device)
        self.last_layer_losses = {}
        self.last_maps = {}
        self.last_target = target
        for name, lam, map_t, map_s in zip(self.layers, self.layer_weights, teacher_maps, student_maps):
            if map_t.shape != map_s.shape:
                msg = f"Layer '{name}': teacher map {tuple(map_t.shape)} and student map {tuple(map_s.shape)} differ."
                raise RuntimeError(msg)
            layer_loss = map_distance(map_t, map_s)
            self.last_layer_losses[name] = layer_loss.detach()
            self.last_maps[name] = (map_t.detach(), map_s.detach())
            total = total + lam * layer_loss
        total = self.weight * total
        if self.input_method is not None:
            input_loss = map_distance(teacher_input_map, student_input_map)
            self.last_input_loss = input_loss.detach()
            self.last_input_maps = (teacher_input_map.detach(), student_input_map.detach())
            total = total + self.input_weight * input_loss
        self._cached_loss = total
        # The activations are part of the loss graph now; drop our references to them.
        self._student_capture.clear()
        self._teacher_capture.clear()
        self.forward.release()
        return self._cached_loss

    def _run_teacher(self, device: torch.device) -> tuple:
        """The teacher's logits on the student's inputs, and its input leaf (None without input_method)."""
        teacher_param = next(self.teacher.parameters(), None)
        if teacher_param is not None and teacher_param.device != device:
            self.teacher.to(device)  # follow the student when the user moves it after building
        if self.teacher.training:
            self.teacher.eval()
        args, kwargs = self.forward.inputs
        teacher_input = None
        grad_mode = torch.no_grad()
        if self.input_method is not None:
            # Input-space maps need the teacher's graph from the input on.
            teacher_input = first_input(args, kwargs).detach().requires_grad_(True)
            args = (teacher_input.clone(), *args[1:])  # a copy: the teacher may change its input in place
            grad_mode = torch.enable_grad()
        self._teacher_running = True
        try:
            # Without input maps, no graph before the first matched layer; its capture hook switches grad
            # mode on (WCAM needs the teacher's gradients from there on, EWA only its activations).
            with grad_mode:
                output = self.teacher(*args, **kwargs)
        finally:
            self._teacher_running = False
        return select_logits(output, self.logits_output), teacher_input

    def _teacher_maps(self, logits: torch.Tensor, target: torch.Tensor, teacher_input: Optional[torch.Tensor]) -> tuple:
        activations = [self._teacher_capture.activations[name] for name in self.layers]
        masks = [self._channel_mask(a) for a in activations]
        wanted = activations if self.method == "wcam" else []
        if teacher_input is not None:
            wanted = [*wanted, teacher_input]
        gradients = list(torch.autograd.grad(_target_scores(logits, target), wanted)) if wanted else []
        input_attr = None
        if teacher_input is not None:
            input_attr = input_map(self.input_method, teacher_input.detach(), gradients.pop())
        if self.method == "ewa":
            return [ewa_map(a.detach(), m) for a, m in zip(activations, masks)], input_attr
        return [wcam_map(a.detach(), g, m) for a, g, m in zip(activations, gradients, masks)], input_attr

    def _student_maps(self, logits: torch.Tensor, target: torch.Tensor) -> tuple:
        missing = [name for name in self.layers if name not in self._student_capture.activations]
        if missing:
            msg = f"Layers {missing} did not run in the student's forward pass; match layers that the forward uses."
            raise RuntimeError(msg)
        activations = [self._student_capture.activations[name] for name in self.layers]
        wanted = activations if self.method == "wcam" else []
        student_input = self.forward.input if self.input_method is not None else None
        if student_input is not None:
            wanted = [*wanted, student_input]
        # One double backprop serves the layer maps and the input map together.
        gradients = list(torch.autograd.grad(_target_scores(logits, target), wanted, create_graph=True)) if wanted else []
        input_attr = None
        if student_input is not None:
            input_attr = input_map(self.input_method, student_input.detach(), gradients.pop())
        if self.method == "ewa":
            return [ewa_map(a) for a in activations], input_attr
        return [wcam_map(a, g) for a, g in zip(activations, gradients)], input_attr

    def _channel_mask(self, activation: torch.Tensor) -> Optional[torch.Tensor]:
        if self.stochastic_drop == 0.0:
            return None
        keep = torch.rand(activation.shape[:2], generator=self.generator) >= self.stochastic_drop
        return keep.to(device=activation.device, dtype=activation.dtype)

    # --- state ---------------------------------------------------------------------------------
    def get_state(self) -> dict:
        """JSON-friendly state: the drop generator, so that a resumed run draws the same masks."""
        return generator_state(self.generator)

    def load_state(self, state: dict) -> None:
        restore_generator(self.generator, state)

    def __enter__(self) -> "AttributionMatcher":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()  # exceptions propagate

    def remove(self) -> None:
        """Removes every hook this matcher added (to the student and the teacher)."""
        self.forward.remove()
        self._student_capture.remove()
        self._teacher_capture.remove()
        self._release()
