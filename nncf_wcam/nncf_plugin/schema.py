"""JSON schema of the `attribution_matching` block, and its registration in NNCF's config schema."""

from nncf.config.schema import NNCF_CONFIG_SCHEMA
from nncf.config.schema import REF_VS_ALGO_SCHEMA

from nncf_wcam.matching import DEFAULT_INPUT_WEIGHT
from nncf_wcam.matching import DEFAULT_WEIGHT

ATTRIBUTION_MATCHING = "attribution_matching"

# The losses are float32 tensors: a multiplier above this is inf there (and every step NaN).
FLOAT32_MAX = 3.4028234663852886e38
MAX_SEED = 2**64 - 1  # torch.Generator.manual_seed overflows above

ATTRIBUTION_MATCHING_DEFAULTS = {
    "method": "wcam",
    "weight": DEFAULT_WEIGHT,
    "layers": "auto",
    "layer_weights": None,
    "stochastic_drop": 0.3,
    "logits_output": None,
    "seed": 0,
    "input_method": None,
    "input_weight": DEFAULT_INPUT_WEIGHT,
}

ATTRIBUTION_MATCHING_SCHEMA = {
    "type": "object",
    "description": "Weighted Collapsed Attribution Matching (Park et al., NeurIPS 2020): adds to "
    "compression_ctrl.loss() a term that keeps the compressed model's attribution maps at the given layers "
    "close to those of a frozen copy of the uncompressed model. Works beside any other NNCF algorithm.",
    "properties": {
        "algorithm": {"const": ATTRIBUTION_MATCHING},
        "method": {
            "type": "string",
            "enum": ["wcam", "ewa"],
            "default": ATTRIBUTION_MATCHING_DEFAULTS["method"],
            "description": "'wcam': Grad-CAM-like maps ReLU(sum_c w_c A_c), w_c = sum of dy_k/dA_c for the "
            "teacher's top-1 class k, trained by double backprop. 'ewa': label-free mean_c A_c^2 (attention transfer).",
        },
        "weight": {
            "type": "number",
            "minimum": 0,
            "maximum": FLOAT32_MAX,
            "default": ATTRIBUTION_MATCHING_DEFAULTS["weight"],
            "description": "beta, the multiplier of the layer maps' distance. The distance is, per sample, the sum "
            "over positions of the squared difference of the L2-normalized maps (2 * (1 - cosine), in [0, 4] for any "
            "map size), averaged over the batch. The authors' beta 100 with their mean over 14 x 14 positions is 0.51 "
            "here; the default 10 sits at the knee of the beta sweep in benchmarks/attribution_preservation.py "
            "(above it agreement barely rises and accuracy falls).",
        },
        "layers": {
            "oneOf": [
                {"type": "string", "const": "auto"},
                {"type": "array", "items": {"type": "string", "minLength": 1}, "uniqueItems": True},
            ],
            "default": ATTRIBUTION_MATCHING_DEFAULTS["layers"],
            "description": "Names of the matched layers as in the original model's named_modules() "
            "(e.g. [\"features.9\"], [\"layer4\"]), or \"auto\" for the last spatial feature map, the layer a "
            "Grad-CAM user picks. [] matches no layer (input-space matching alone; needs \"input_method\").",
        },
        "layer_weights": {
            "type": ["array", "null"],
            "items": {"type": "number", "minimum": 0, "maximum": FLOAT32_MAX},
            "minItems": 1,
            "default": ATTRIBUTION_MATCHING_DEFAULTS["layer_weights"],
            "description": "lambda_l, one non-negative weight per entry of \"layers\" (default 1.0 each).",
        },
        "stochastic_drop": {
            "type": "number",
            "minimum": 0,
            "exclusiveMaximum": 1,
            "default": ATTRIBUTION_MATCHING_DEFAULTS["stochastic_drop"],
            "description": "Fraction in [0, 1) of the teacher's channels zeroed at random each step before "
            "collapsing (stochastic matching; the authors used 0.3).",
        },
        "logits_output": {
            "type": ["integer", "string", "null"],
            "minimum": 0,
            "default": ATTRIBUTION_MATCHING_DEFAULTS["logits_output"],
            "description": "For models whose forward returns a tuple or dict: the index or key of the logits. "
            "null when the forward returns the logits tensor itself.",
        },
        "input_method": {
            "type": ["string", "null"],
            "enum": ["saliency", "input_x_gradient", None],
            "default": ATTRIBUTION_MATCHING_DEFAULTS["input_method"],
            "description": "Also match input-space attributions by double backprop (Jacobian matching): 'saliency' "
            "|dy_k/dx| (captum's Saliency), 'input_x_gradient' x * dy_k/dx (captum's InputXGradient, a one-step "
            "Integrated Gradients). null: layer maps only.",
        },
        "input_weight": {
            "type": "number",
            "minimum": 0,
            "maximum": FLOAT32_MAX,
            "default": ATTRIBUTION_MATCHING_DEFAULTS["input_weight"],
            "description": "Multiplier of the input maps' distance (the same [0, 4] distance as \"weight\").",
        },
        "seed": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_SEED,
            "default": ATTRIBUTION_MATCHING_DEFAULTS["seed"],
            "description": "Seed of the algorithm's own random generator for the channel drop "
            "(the global RNG is left untouched).",
        },
    },
    "required": ["algorithm"],
    "additionalProperties": False,
}


def register_algorithm_schema(name: str, schema: dict) -> None:
    """Makes NNCF's config validation accept `{"algorithm": name, ...}` blocks (idempotent).

    NNCF validates `compression` against a oneOf of `$ref`s to REF_VS_ALGO_SCHEMA, whose dict is
    also the schema's `$defs`: both need the new algorithm.
    """
    REF_VS_ALGO_SCHEMA[name] = schema
    ref = {"$ref": f"#/$defs/{name}"}
    compression = NNCF_CONFIG_SCHEMA["properties"]["compression"]
    for variant in compression["oneOf"]:
        refs = variant["oneOf"] if "oneOf" in variant else variant["items"]["oneOf"]
        if ref not in refs:
            refs.append(ref)
