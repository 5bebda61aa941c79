"""Which side of the low-bit parity bug is wrong: NNCF's ONNX, or OpenVINO? (docs/known-issues.md, "NNCF export: off-grid ...")

Builds an untrained int4 SmallCNN with NNCF (the saliency benchmark's int4 config), sets the `input_low` of the
asymmetric quantizers after ReLU[2], ReLU[5] and ReLU[9] to FRACTION of a quantization step below 0 (where NNCF's
TuneRange leaves them off the grid, as QAT does), exports ONNX with NNCF and compares with PyTorch on 256 random
inputs:
  - onnxruntime on the same ONNX, each org.openvinotoolkit FakeQuantize rewritten as standard ONNX ops that compute
    OpenVINO's FakeQuantize formula (onnxruntime has no FakeQuantize);
  - OpenVINO on the same ONNX, as exported and with `nncf_wcam.deploy.quantizer_ranges.align_fake_quantize_ranges`.
Needs onnxruntime, which the package does not depend on:  pip install --target /tmp/ort onnxruntime

    PYTHONPATH=.:/tmp/ort python benchmarks/fake_quantize_onnxruntime_check.py [FRACTION (default 0.25)]
"""

import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import openvino as ov
import torch
from onnx import TensorProto
from onnx import helper
from torch.utils.data import TensorDataset

import nncf_wcam  # noqa: F401  (before nncf.torch)
from nncf_wcam.deploy.quantizer_ranges import align_fake_quantize_ranges
from nncf_wcam.nncf2.training import compress
from nncf_wcam.nncf2.training import load_config
from nncf_wcam.zoo.models import SmallCNN

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "mnist_int4_plain.json"


def fake_quantize_as_standard_ops(model: onnx.ModelProto) -> onnx.ModelProto:
    """y = round((clip(x, il, ih) - il) / (ih - il) * (levels - 1)) / (levels - 1) * (oh - ol) + ol."""
    nodes = []
    for node in model.graph.node:
        if node.op_type != "FakeQuantize":
            nodes.append(node)
            continue
        levels = next(a.i for a in node.attribute if a.name == "levels")
        x, il, ih, ol, oh = node.input
        p = node.name.replace("/", "_") + "_"
        nodes += [
            helper.make_node("Constant", [], [p + "n"], value=helper.make_tensor(p + "n_t", TensorProto.FLOAT, [], [float(levels - 1)])),
            helper.make_node("Max", [x, il], [p + "a"]),
            helper.make_node("Min", [p + "a", ih], [p + "b"]),
            helper.make_node("Sub", [p + "b", il], [p + "c"]),
            helper.make_node("Sub", [ih, il], [p + "r"]),
            helper.make_node("Div", [p + "c", p + "r"], [p + "d"]),
            helper.make_node("Mul", [p + "d", p + "n"], [p + "e"]),
            helper.make_node("Round", [p + "e"], [p + "f"]),
            helper.make_node("Div", [p + "f", p + "n"], [p + "g"]),
            helper.make_node("Sub", [oh, ol], [p + "or"]),
            helper.make_node("Mul", [p + "g", p + "or"], [p + "h"]),
            helper.make_node("Add", [p + "h", ol], [node.output[0]]),
        ]
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    standard = [o for o in model.opset_import if o.domain in ("", "ai.onnx")]
    del model.opset_import[:]
    model.opset_import.extend(standard)
    return model


def main() -> None:
    fraction = float(sys.argv[1]) if len(sys.argv) > 1 else 0.25
    torch.manual_seed(0)
    x = torch.rand(256, 1, 28, 28)
    config = json.loads(CONFIG.read_text())
    config["compression"][0]["initializer"]["range"]["num_init_samples"] = 128
    with tempfile.TemporaryDirectory() as tmp:
        config["log_dir"] = tmp
        ctrl, model = compress(SmallCNN(1, 10, 8), load_config(config), TensorDataset(x, torch.zeros(256).long()), batch_size=64)
        for i in (2, 5, 9):
            quantizer = model.nncf.external_quantizers[f"SmallCNN/Sequential[features]/ReLU[{i}]/relu_0|OUTPUT"]
            quantizer.input_low.data.fill_(-fraction * float(quantizer.input_range.flatten()[0]) / 15)
            print(f"ReLU[{i}] quantizer: input_low {quantizer.input_low.item():.5f}, tuned range {[round(t.item(), 5) for t in quantizer.get_input_low_input_high()]}")
        model.eval()
        with torch.no_grad():
            reference = model(x).numpy()
        onnx_path = Path(tmp) / "model.onnx"
        ctrl.export_model(str(onnx_path))
        standard_path = Path(tmp) / "standard.onnx"
        onnx.save(fake_quantize_as_standard_ops(onnx.load(onnx_path)), standard_path)
        session = ort.InferenceSession(str(standard_path))
        name = session.get_inputs()[0].name
        onnxruntime_out = np.concatenate([session.run(None, {name: x[i : i + 1].numpy()})[0] for i in range(len(x))])

        def openvino_out(ov_model):
            compiled = ov.Core().compile_model(ov_model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
            return np.concatenate([compiled(x[i : i + 1].numpy())[0] for i in range(len(x))])

        as_exported = openvino_out(ov.convert_model(str(onnx_path)))
        aligned_model = ov.convert_model(str(onnx_path))
        print(f"aligned FakeQuantize nodes: {len(align_fake_quantize_ranges(aligned_model))}")
        aligned = openvino_out(aligned_model)
    for label, out in (("onnxruntime, as exported", onnxruntime_out), ("OpenVINO, as exported", as_exported), ("OpenVINO, aligned ranges", aligned)):
        print(f"{label} vs PyTorch: max |diff| {np.abs(out - reference).max():.3g}, top-1 {(out.argmax(1) == reference.argmax(1)).mean():.3f}")
    print(f"onnxruntime vs OpenVINO (as exported): max |diff| {np.abs(onnxruntime_out - as_exported).max():.3g}")


if __name__ == "__main__":
    main()
