"""What INC delivered, measured on the torch model: the fraction of zero convolution weights."""

from torch import nn


def conv_weight_sparsity(model: nn.Module) -> float:
    """Fraction of zero weights over the convolutions, INC's converted int8 modules included (their weights are
    quantized tensors behind a `weight()` method, outside `named_parameters`)."""
    weights = [m.weight() if callable(m.weight) else m.weight for m in model.modules() if "Conv" in type(m).__name__ and hasattr(m, "weight")]
    weights = [w.dequantize() if w.is_quantized else w for w in weights]
    return float(sum(int((w == 0).sum()) for w in weights) / max(1, sum(w.numel() for w in weights)))
