"""Saliency-guided training (Ismail et al., NeurIPS 2021), as used for quantization by Rezabeyk et al.
("Saliency Assisted Quantization for Neural Networks", arXiv 2411.05858). Pure torch: no NNCF import.

Each training step, for the model's own top-1 class k:

1. input saliency S = |dy_k/dx| (first-order: no double backprop);
2. x~ = x with the `mask_fraction` least salient input features (elements of x, per sample)
   replaced by values drawn uniformly from that sample's own [min(x), max(x)];
3. loss = weight * KL(f(x) || f(x~)), batch mean.

    regularizer = SaliencyGuidedRegularizer(model, mask_fraction=0.5, weight=1.0)
    logits = model(x)                     # root hooks capture the inputs and the output
    loss = criterion(logits, y) + regularizer.loss()
    loss.backward()

The saliency pass and the masked pass are extra forward passes of the same model. They run
inside `nncf_wcam.core.hooks.auxiliary_forward()` (so attribution-matching hooks keep the
training forward's activations), inside `torch.random.fork_rng` (dropout or stochastic NNCF
masks in them do not advance the global RNG), and restore the running statistics of every
normalization layer afterwards (BatchNorm running mean/var and num_batches_tracked): the model's
state after a step is the one the training forward alone would leave. They run in the model's
current mode (training: BatchNorm uses batch statistics, as in the authors' code).

Gradient flow: the KL term is differentiated through the masked pass *and* through f(x), the
clean training forward (`detach_clean=False`, the default). The paper's objective is
min_theta CE(f(x), y) + lambda * KL(f(x) || f(x~)): both terms are functions of theta, and
the reference implementation of saliency-guided training does not detach f(x). Detaching it
(`detach_clean=True`) turns the term into self-distillation towards the clean prediction, which
cannot push the clean prediction towards lower confidence to make the KL smaller; it is offered
for users who want that behaviour. The saliency map itself is detached (it only chooses which
features are masked; selection is not differentiable).
"""

import contextlib
from typing import Callable
from typing import ContextManager
from typing import Iterator
from typing import Optional
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import nn

from nncf_wcam.core.generator import generator_state
from nncf_wcam.core.generator import restore_generator
from nncf_wcam.core.generator import seeded_generator
from nncf_wcam.core.hooks import TrainingForwardCapture
from nncf_wcam.core.hooks import auxiliary_forward
from nncf_wcam.core.hooks import model_device
from nncf_wcam.core.logits import LogitsSelector
from nncf_wcam.core.logits import select_logits


def input_saliency(
    model: nn.Module,
    inputs: torch.Tensor,
    target: Optional[torch.Tensor] = None,
    logits_output: LogitsSelector = None,
    args: tuple = (),
    kwargs: Optional[dict] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """|dy_k/dx| for each sample's class k (its top-1 prediction when `target` is None).

    Only the gradient with respect to the input is computed (`torch.autograd.grad`): parameter
    `.grad`s are left alone. `args`/`kwargs` are extra forward arguments after the input.
    Returns (saliency with the shape of `inputs`, detached; target classes).
    """
    x = inputs.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = select_logits(model(x, *args, **(kwargs or {})), logits_output)
        if target is None:
            target = logits.detach().argmax(dim=1)
        score = logits.gather(1, target.view(-1, 1)).sum()
        (gradient,) = torch.autograd.grad(score, x)
    return gradient.abs().detach(), target


def mask_least_salient(
    inputs: torch.Tensor,
    saliency: torch.Tensor,
    fraction: float,
    generator: Optional[torch.Generator] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Replaces the `fraction` least salient features of each sample with uniform noise in the sample's [min, max].

    Exactly round(fraction * n) of the n features of every sample are replaced (ties are broken by
    position, so the count is exact); the others, the most salient ones, are kept bit for bit.
    The noise comes from `generator` (a CPU generator; the global RNG is not used).
    Returns (masked inputs, boolean mask of the replaced features), both shaped like `inputs`.
    """
    if not 0.0 <= fraction <= 1.0:
        msg = f"mask fraction must lie in [0, 1], got {fraction}."
        raise ValueError(msg)
    if saliency.shape != inputs.shape:
        msg = f"saliency shape {tuple(saliency.shape)} differs from the input shape {tuple(inputs.shape)}."
        raise ValueError(msg)
    batch = inputs.shape[0]
    flat = inputs.detach().reshape(batch, -1)
    num_features = flat.shape[1]
    num_masked = int(round(fraction * num_features))
    mask = torch.zeros_like(flat, dtype=torch.bool)
    if num_masked > 0:
        order = saliency.detach().reshape(batch, -1).argsort(dim=1, stable=True)
        mask.scatter_(1, order[:, :num_masked], True)
    low = flat.min(dim=1, keepdim=True).values
    high = flat.max(dim=1, keepdim=True).values
    noise = torch.rand(flat.shape, generator=generator, dtype=torch.float32).to(device=flat.device, dtype=flat.dtype)
    noise = low + (high - low) * noise
    masked = torch.where(mask, noise, flat)
    return masked.view_as(inputs), mask.view_as(inputs)


def kl_consistency(clean_logits: torch.Tensor, masked_logits: torch.Tensor, detach_clean: bool = False) -> torch.Tensor:
    """KL(softmax(clean) || softmax(masked)), averaged over the batch."""
    clean_log_probs = F.log_softmax(clean_logits.detach() if detach_clean else clean_logits, dim=1)
    masked_log_probs = F.log_softmax(masked_logits, dim=1)
    return F.kl_div(masked_log_probs, clean_log_probs, reduction="batchmean", log_target=True)


def _is_norm_with_stats(module: nn.Module) -> bool:
    return isinstance(module, nn.modules.batchnorm._NormBase) and module.track_running_stats


@contextlib.contextmanager
def preserved_state(model: nn.Module, devices: Optional[list] = None) -> Iterator[None]:
    """Extra forward passes that leave no trace: auxiliary for capture hooks, global RNG forked,
    running statistics of normalization layers restored afterwards."""
    saved = [
        (buffer, buffer.detach().clone())
        for module in model.modules()
        if _is_norm_with_stats(module)
        for buffer in module.buffers(recurse=False)
    ]
    try:
        with auxiliary_forward(), torch.random.fork_rng(devices=devices or []):
            yield
    finally:
        # Through `.data`: BatchNorm's autograd nodes save the running-stat buffers, and a tracked in-place
        # copy would bump their version and break the backward of the passes already recorded.
        for buffer, value in saved:
            buffer.data.copy_(value)


def _split_input(args: tuple, kwargs: dict) -> Tuple[torch.Tensor, tuple]:
    """The masked input (the forward's first positional argument) and the other positional arguments."""
    if not args or not isinstance(args[0], torch.Tensor) or not args[0].is_floating_point():
        msg = (
            "saliency_guided masks the forward's first positional argument, which must be a floating-point "
            f"tensor; the model was called with positional {[type(a).__name__ for a in args]} and keyword "
            f"{sorted(kwargs)} arguments. Fix: pass the input tensor first, positionally."
        )
        raise ValueError(msg)
    return args[0], tuple(args[1:])


class SaliencyGuidedRegularizer:
    """The saliency-guided KL term for the latest training forward pass of `model`.

    Root hooks on `model` keep the inputs and the output of its latest forward pass run in training
    mode with gradients enabled (others, and auxiliary passes, are ignored); `loss()` runs the
    saliency pass and the masked pass and returns `weight * KL(f(x) || f(x~))`, computed once per
    forward pass. It is zero, and nothing is kept, in eval mode, under no_grad, or before any
    training forward.

    :param model: the trained model (may be an NNCFNetwork).
    :param mask_fraction: fraction in [0, 1) of each sample's input features replaced with noise.
    :param weight: lambda, the multiplier of the KL term.
    :param detach_clean: detach f(x) in the KL (see the module docstring); default False.
    :param logits_output: index or key of the logits when the model returns a tuple or dict.
    :param seed: seed of the regularizer's own noise generator (the global RNG is left untouched).
    :param auxiliary_context: optional factory of a context manager entered around the extra passes, for
        framework state that must not see them (the NNCF plugin suspends knowledge distillation's handler).
    """

    def __init__(
        self,
        model: nn.Module,
        mask_fraction: float = 0.5,
        weight: float = 1.0,
        detach_clean: bool = False,
        logits_output: LogitsSelector = None,
        seed: int = 0,
        auxiliary_context: Optional[Callable[[], ContextManager]] = None,
    ):
        if not 0.0 <= mask_fraction < 1.0:
            msg = f"mask_fraction must lie in [0, 1), got {mask_fraction}."
            raise ValueError(msg)
        if weight < 0:
            msg = f"weight must be >= 0, got {weight}."
            raise ValueError(msg)
        self.model = model
        self.mask_fraction = float(mask_fraction)
        self.weight = float(weight)
        self.detach_clean = bool(detach_clean)
        self.logits_output = logits_output
        self.generator = seeded_generator(seed)
        self.auxiliary_context = auxiliary_context or contextlib.nullcontext
        self.last_kl = None
        self.last_mask = None
        self.last_saliency = None
        self.last_target = None
        self._cached_loss = None
        self.forward = TrainingForwardCapture(model, on_new_pass=self._release)

    def _release(self) -> None:
        self._cached_loss = None

    # --- the loss -------------------------------------------------------------------------------
    def loss(self) -> torch.Tensor:
        """weight * KL(f(x) || f(x~)) for the latest training forward pass; zero if there is none."""
        if self._cached_loss is not None:
            return self._cached_loss
        if self.forward.output is None:
            return torch.zeros([], device=model_device(self.model))
        clean_logits = select_logits(self.forward.output, self.logits_output)
        args, kwargs = self.forward.inputs
        x, after = _split_input(args, kwargs)
        devices = [x.device] if x.device.type == "cuda" else []
        target = clean_logits.detach().argmax(dim=1)
        with preserved_state(self.model, devices), self.auxiliary_context():
            saliency, _ = input_saliency(self.model, x, target, self.logits_output, after, kwargs)
            masked, mask = mask_least_salient(x, saliency, self.mask_fraction, self.generator)
            masked_logits = select_logits(self.model(masked, *after, **kwargs), self.logits_output)
        kl = kl_consistency(clean_logits, masked_logits, self.detach_clean)
        self.last_kl = kl.detach()
        self.last_mask = mask
        self.last_saliency = saliency
        self.last_target = target
        self._cached_loss = self.weight * kl
        self.forward.release()  # the loss holds the graph now
        return self._cached_loss

    # --- state ----------------------------------------------------------------------------------
    def get_state(self) -> dict:
        """JSON-friendly state: the noise generator, so that a resumed run draws the same noise."""
        return generator_state(self.generator)

    def load_state(self, state: dict) -> None:
        restore_generator(self.generator, state)

    def remove(self) -> None:
        """Removes the hooks this regularizer added."""
        self.forward.remove()
        self._release()
