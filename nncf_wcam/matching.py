"""AttributionMatcher: Weighted Collapsed Attribution Matching between a frozen teacher and a student.

Pure torch, usable without NNCF:

    matcher = AttributionMatcher(frozen_copy(model), model, layers=["features.9"])
    logits = model(x)                      # hooks capture the inputs and the layers' activations
    loss = criterion(logits, y) + matcher.loss()
    loss.backward()                        # trains the student through its own attribution maps

The loss (Park et al., NeurIPS 2020): for the teacher's top-1 class k, at each matched layer,
M = ReLU(sum_c w_c A_c) with w_c = sum_hw dy_k/dA_c; loss = weight * sum_l lambda_l *
mean((n(M_t) - n(M_s))^2), n = per-sample L2 normalization. The teacher map is detached and a
random fraction of its channels is dropped each step; the student map keeps its graph
(`create_graph=True`), so the loss trains the student through its own gradients.
Only the gradients the maps need are computed: `torch.autograd.grad` with respect to the
captured activations, never a backward over all parameters.
"""

import copy
from typing import Optional, Sequence

import torch
from torch import nn

from nncf_wcam.attribution import ActivationCapture
from nncf_wcam.attribution import TrainingForwardCapture
from nncf_wcam.attribution import LogitsSelector
from nncf_wcam.attribution import ewa_map
from nncf_wcam.attribution import generator_state
from nncf_wcam.attribution import model_device
from nncf_wcam.attribution import normalize_maps
from nncf_wcam.attribution import resolve_layers
from nncf_wcam.attribution import restore_generator
from nncf_wcam.attribution import select_logits
from nncf_wcam.attribution import wcam_map

METHODS = ("wcam", "ewa")


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
    :param layers: names of the matched layers, as in the student's `named_modules()`.
    :param method: "wcam" (Grad-CAM-like, needs double backprop) or "ewa" (label-free, mean_c A_c^2).
    :param weight: beta, the loss multiplier.
    :param layer_weights: lambda_l per layer (default 1.0 each).
    :param stochastic_drop: fraction of the teacher's channels zeroed per sample and step, in [0, 1).
    :param logits_output: index or key of the logits when the model returns a tuple or dict.
    :param seed: seed of the matcher's own generator for the channel drop (the global RNG is left alone,
        so runs with and without matching see the same data order and initializations).
    """

    def __init__(
        self,
        teacher: nn.Module,
        student: nn.Module,
        layers: Sequence[str],
        method: str = "wcam",
        weight: float = 100.0,
        layer_weights: Optional[Sequence[float]] = None,
        stochastic_drop: float = 0.0,
        logits_output: LogitsSelector = None,
        seed: int = 0,
    ):
        if method not in METHODS:
            msg = f"Unknown attribution matching method '{method}'. Use one of: {', '.join(METHODS)}."
            raise ValueError(msg)
        if not 0.0 <= stochastic_drop < 1.0:
            msg = f"stochastic_drop must be in [0, 1), got {stochastic_drop}."
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
        self.generator = torch.Generator().manual_seed(int(seed))  # JSON Schema integers may arrive as 3.0
        self.last_layer_losses = {}
        self.last_maps = {}  # name -> (teacher map, student map), detached, before normalization
        self.last_target = None

        self._teacher_running = False
        self._cached_loss = None
        student_modules = dict(zip(self.layers, resolve_layers(student, self.layers)))
        teacher_modules = dict(zip(self.layers, resolve_layers(teacher, self.layers)))
        # A new training forward invalidates the previous one's loss and activations.
        self.forward = TrainingForwardCapture(student, on_new_pass=self._release)
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
        teacher_logits = self._run_teacher(student_logits.device)
        target = teacher_logits.argmax(dim=1)
        teacher_maps = self._teacher_maps(teacher_logits, target)
        student_maps = self._student_maps(student_logits, target)
        total = torch.zeros([], device=student_logits.device)
        self.last_layer_losses = {}
        self.last_maps = {}
        self.last_target = target
        for name, lam, map_t, map_s in zip(self.layers, self.layer_weights, teacher_maps, student_maps):
            if map_t.shape != map_s.shape:
                msg = f"Layer '{name}': teacher map {tuple(map_t.shape)} and student map {tuple(map_s.shape)} differ."
                raise RuntimeError(msg)
            layer_loss = (normalize_maps(map_t) - normalize_maps(map_s)).pow(2).mean()
            self.last_layer_losses[name] = layer_loss.detach()
            self.last_maps[name] = (map_t.detach(), map_s.detach())
            total = total + lam * layer_loss
        self._cached_loss = self.weight * total
        # The activations are part of the loss graph now; drop our references to them.
        self._student_capture.clear()
        self._teacher_capture.clear()
        self.forward.release()
        return self._cached_loss

    def _run_teacher(self, device: torch.device) -> torch.Tensor:
        teacher_param = next(self.teacher.parameters(), None)
        if teacher_param is not None and teacher_param.device != device:
            self.teacher.to(device)  # follow the student when the user moves it after building
        if self.teacher.training:
            self.teacher.eval()
        args, kwargs = self.forward.inputs
        self._teacher_running = True
        try:
            # No graph before the first matched layer; its capture hook switches grad mode on (WCAM needs
            # the teacher's gradients from there on, EWA only its activations).
            with torch.no_grad():
                output = self.teacher(*args, **kwargs)
        finally:
            self._teacher_running = False
        return select_logits(output, self.logits_output)

    def _teacher_maps(self, logits: torch.Tensor, target: torch.Tensor) -> list:
        activations = [self._teacher_capture.activations[name] for name in self.layers]
        masks = [self._channel_mask(a) for a in activations]
        if self.method == "ewa":
            return [ewa_map(a.detach(), m) for a, m in zip(activations, masks)]
        gradients = torch.autograd.grad(_target_scores(logits, target), activations)
        return [wcam_map(a.detach(), g, m) for a, g, m in zip(activations, gradients, masks)]

    def _student_maps(self, logits: torch.Tensor, target: torch.Tensor) -> list:
        missing = [name for name in self.layers if name not in self._student_capture.activations]
        if missing:
            msg = f"Layers {missing} did not run in the student's forward pass; match layers that the forward uses."
            raise RuntimeError(msg)
        activations = [self._student_capture.activations[name] for name in self.layers]
        if self.method == "ewa":
            return [ewa_map(a) for a in activations]
        gradients = torch.autograd.grad(_target_scores(logits, target), activations, create_graph=True)
        return [wcam_map(a, g) for a, g in zip(activations, gradients)]

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

    def remove(self) -> None:
        """Removes every hook this matcher added (to the student and the teacher)."""
        self.forward.remove()
        self._student_capture.remove()
        self._teacher_capture.remove()
        self._release()
