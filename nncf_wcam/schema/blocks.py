"""JSON schemas of the two blocks nncf-wcam adds to a compression config: `attribution_matching` and
`saliency_guided`. Every key has a default and a description; framework adapters register these schemas
with their framework (NNCF 2.19: `nncf_wcam.nncf2`). Pure data: no NNCF import.
"""

from nncf_wcam.core.generator import MAX_SEED
from nncf_wcam.core.matcher import DEFAULT_INPUT_WEIGHT
from nncf_wcam.core.matcher import DEFAULT_WEIGHT

ATTRIBUTION_MATCHING = "attribution_matching"

# The largest loss multiplier: useful values are 0.1 to 1,000; far larger ones only overflow float32 gradients
# (a multiplier near float32's maximum gives a finite loss whose gradient turns the weights NaN).
MAX_MULTIPLIER = 1e6

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
            "maximum": MAX_MULTIPLIER,
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
            "items": {"type": "number", "minimum": 0, "maximum": MAX_MULTIPLIER},
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
            "maximum": MAX_MULTIPLIER,
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


SALIENCY_GUIDED = "saliency_guided"

SALIENCY_GUIDED_DEFAULTS = {
    "mask_fraction": 0.5,
    "weight": 1.0,
    "detach_clean": False,
    "logits_output": None,
    "seed": 0,
}

SALIENCY_GUIDED_SCHEMA = {
    "type": "object",
    "description": "Saliency-guided training (Ismail et al., NeurIPS 2021; used for quantization by Rezabeyk et al., "
    "arXiv 2411.05858): each training step, replaces the least salient input features (by |dy_k/dx| for the "
    "model's own top-1 class k) with noise drawn uniformly from each sample's [min, max], and adds "
    "weight * KL(f(x) || f(x_masked)) to compression_ctrl.loss(). Works beside any other NNCF algorithm.",
    "properties": {
        "algorithm": {"const": SALIENCY_GUIDED},
        "mask_fraction": {
            "type": "number",
            "minimum": 0,
            "exclusiveMaximum": 1,
            "default": SALIENCY_GUIDED_DEFAULTS["mask_fraction"],
            "description": "Fraction in [0, 1) of each sample's input features (least salient first) replaced "
            "with noise each step (the authors used 0.5).",
        },
        "weight": {
            "type": "number",
            "minimum": 0,
            "maximum": MAX_MULTIPLIER,
            "default": SALIENCY_GUIDED_DEFAULTS["weight"],
            "description": "lambda, the multiplier of the KL term (the authors used 1.0).",
        },
        "detach_clean": {
            "type": "boolean",
            "default": SALIENCY_GUIDED_DEFAULTS["detach_clean"],
            "description": "Detach f(x) in KL(f(x) || f(x_masked)): the term then only trains the masked pass "
            "(self-distillation). false (the paper's joint objective) also trains through the clean pass.",
        },
        "logits_output": {
            "type": ["integer", "string", "null"],
            "minimum": 0,
            "default": SALIENCY_GUIDED_DEFAULTS["logits_output"],
            "description": "For models whose forward returns a tuple or dict: the index or key of the logits. "
            "null when the forward returns the logits tensor itself.",
        },
        "seed": {
            "type": "integer",
            "minimum": 0,
            "maximum": MAX_SEED,
            "default": SALIENCY_GUIDED_DEFAULTS["seed"],
            "description": "Seed of the algorithm's own random generator for the replacement noise "
            "(the global RNG is left untouched).",
        },
    },
    "required": ["algorithm"],
    "additionalProperties": False,
}

# name -> JSON schema of every block this package adds.
PLUGIN_SCHEMAS = {ATTRIBUTION_MATCHING: ATTRIBUTION_MATCHING_SCHEMA, SALIENCY_GUIDED: SALIENCY_GUIDED_SCHEMA}
