"""What NNCF 2.19's compression statistics say, in the words a report and a manifest use."""

from typing import Optional

from nncf_wcam.io.jsonable import to_jsonable
from nncf_wcam.schema.validation import compression_blocks


def compression_statistics(compression_ctrl) -> dict:
    """Every algorithm's statistics as JSON, and NNCF's own text table."""
    statistics = compression_ctrl.statistics()
    return {
        "algorithms": {name: to_jsonable(stats) for name, stats in statistics},
        "text": statistics.to_str(),
    }


def precision(statistics: dict) -> str:
    """'fp32', 'int8', 'int4'... or 'weights int4, activations int8' for mixed bit widths."""
    quantization = statistics.get("quantization")
    if quantization is None:
        return "fp32"
    weight_bits = sorted(quantization.num_wq_per_bitwidth)
    activation_bits = sorted(quantization.num_aq_per_bitwidth)
    if len(weight_bits) == 1 and weight_bits == activation_bits:
        return f"int{weight_bits[0]}"

    def describe(bits):
        return "/".join(f"int{b}" for b in bits) or "fp32"

    return f"weights {describe(weight_bits)}, activations {describe(activation_bits)}"


def algorithm_names(compression_ctrl, config: Optional[dict]) -> list:
    """The config's algorithms in order (or the controllers' class names without a config)."""
    if config is not None and "compression" in config:
        return [block.get("algorithm") for block in compression_blocks(config)]
    controllers = getattr(compression_ctrl, "child_ctrls", None) or [compression_ctrl]
    return [type(ctrl).__name__ for ctrl in controllers]


def nncf_pruned_weight_values(statistics: dict) -> Optional[int]:
    """Weight values NNCF counts after pruning (convolutions and linear layers, zeroed filters excluded)."""
    pruning = statistics.get("filter_pruning")
    return None if pruning is None else int(pruning.model_statistics.current_params_num)
