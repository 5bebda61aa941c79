"""nncf-wcam on NNCF 3.x: attribution matching as a plain loss in NNCF's own quantization-aware training.

NNCF 3.0 removed JSON-configured training-time compression (`create_compressed_model`, `compression_ctrl.loss()`).
Its PyTorch flow is: `nncf.quantize(model, calibration_dataset)` (or `nncf.prune(...)`), fine-tune in the
user's own loop, then `ov.convert_model(model, example_input=...)`. The matcher is pure torch, so it joins
that loop as one more loss term:

    teacher = frozen_copy(model)                              # before quantization: the uncompressed model
    quantized = nncf.quantize(model, calibration_dataset(train_loader))
    matcher = AttributionMatcher(teacher, quantized, layers=["features.9"])
    loss = criterion(quantized(x), y) + matcher.loss()        # the user's loop, one term more
    export_ir(quantized, "ir/", sample_inputs)                # ov.convert_model + parity check, written atomically

Nothing here imports the NNCF 2.x adapter (`nncf_wcam.nncf2`) or NNCF's legacy API.
"""

from nncf_wcam.generation import require_nncf_generation

require_nncf_generation(3, "nncf_wcam.nncf3")

from nncf_wcam.nncf_common import second_order  # noqa: E402

second_order.install()  # double backprop through NNCF's quantizers on CUDA, as on CPU

from nncf_wcam.nncf3.data import calibration_dataset  # noqa: E402
from nncf_wcam.nncf3.training import accuracy  # noqa: E402
from nncf_wcam.nncf3.training import fine_tune  # noqa: E402

__all__ = ["accuracy", "calibration_dataset", "export_ir", "fine_tune"]


def __getattr__(name: str):
    if name == "export_ir":  # loaded when first used: training needs no OpenVINO
        from nncf_wcam.nncf3.export import export_ir

        return export_ir
    raise AttributeError(f"module 'nncf_wcam.nncf3' has no attribute {name!r}")
