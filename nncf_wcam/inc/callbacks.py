"""INC's CallBacks with the matching loss added: the user's loop stays INC's documented loop.

INC 3.7 calls every compression algorithm through `compression_manager.callbacks`. This subclass builds the
matcher in `on_train_begin`, after INC has prepared the model (FX quantization-aware training replaces the
module there), adds the matching loss in `on_after_compute_loss`, and removes its hooks before
`on_train_end` converts the model. It also turns two silent failures of INC's loop into one-line errors: a
student that trains in eval mode (no matching loss at all), and a pruning loop without
`on_after_optimizer_step` (INC applies its masks there: without it the model ends dense).
"""

from typing import Callable
from typing import Optional

import torch
from torch import nn

from nncf_wcam.core.matcher import AttributionMatcher
from nncf_wcam.errors import NncfWcamError
from nncf_wcam.inc.framework import CallBacks


class IncLoopError(NncfWcamError, RuntimeError):
    """The training loop around INC's callbacks misses a call or a mode the matching loss needs."""


class AttributionMatchingCallBacks(CallBacks):
    """`CallBacks` of INC plus attribution matching; `matcher` exists from `on_train_begin` to `on_train_end`.

    :param callbacks_list: INC's algorithm callbacks (from its CompressionManager).
    :param build_matcher: called with the prepared student module after INC's `on_train_begin`; returns the matcher.
    :param student: returns the student module as INC holds it now (FX QAT replaces it in `on_train_begin`).
    :param pruning: whether a pruning algorithm is among the callbacks (it needs `on_after_optimizer_step`).
    """

    def __init__(self, callbacks_list: list, build_matcher: Callable[[nn.Module], AttributionMatcher], student: Callable[[], nn.Module], pruning: bool):
        super().__init__(callbacks_list)
        self.matcher: Optional[AttributionMatcher] = None
        self._build_matcher = build_matcher
        self._student = student
        self._pruning = pruning
        self._stepped = False  # optimizer stepped this step (on_before_optimizer_step)
        self._masks_updated = False

    def on_train_begin(self, dataloader=None):
        super().on_train_begin(dataloader)
        student = self._student()
        student.train()  # a model loaded or evaluated before would otherwise train in eval mode, unmatched
        if self.matcher is None:
            self.matcher = self._build_matcher(student)

    def on_after_compute_loss(self, input, student_output, student_loss, teacher_output=None):
        loss = super().on_after_compute_loss(input, student_output, student_loss, teacher_output)
        if isinstance(loss, list):  # INC returns [] when no algorithm (pruning, QAT) changes the loss
            if len(loss) > 1:
                raise IncLoopError("Several INC algorithms returned a loss; combine at most one DistillationConfig with attribution matching.")
            loss = loss[0] if loss else student_loss
        if self.matcher is None:
            msg = "The matching loss was asked for before compression_manager.callbacks.on_train_begin(). Fix: call on_train_begin() once, before the training loop."
            raise IncLoopError(msg)
        student = self._student()
        if not student.training and torch.is_grad_enabled():
            msg = "The student ran in eval mode, so attribution matching has nothing to train. Fix: call model.train() before the training loop (and after any evaluation)."
            raise IncLoopError(msg)
        return loss + self.matcher.loss()

    def on_before_optimizer_step(self):
        super().on_before_optimizer_step()
        self._stepped = True

    def on_after_optimizer_step(self):
        super().on_after_optimizer_step()
        self._masks_updated = True

    def on_step_end(self):
        missed = self._pruning and self._stepped and not self._masks_updated
        self._stepped = self._masks_updated = False
        if missed:
            msg = (
                "INC's pruning needs compression_manager.callbacks.on_after_optimizer_step() right after optimizer.step(): "
                "it applies the pruning masks there, and without it the model ends with no sparsity. Fix: add that call to the loop."
            )
            raise IncLoopError(msg)
        return super().on_step_end()

    def on_train_end(self):
        if self.matcher is not None:
            self.matcher.remove()  # before INC converts the model: no hooks of ours in the int8 module
        super().on_train_end()
