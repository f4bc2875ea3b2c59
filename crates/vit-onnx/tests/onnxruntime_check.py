"""Checks an ONNX file exported by vit-rs with the ONNX project's own checker and ONNX Runtime.

usage: python onnxruntime_check.py CASES.json

CASES.json: {"model": "m.onnx", "class_names": [...], "precision": "f32",
             "cases": [{"input": "x.f32", "shape": [B, H, W, C], "logits": "y.f32", "tolerance": 1e-4}]}
Inputs and logits are raw little-endian float32 files, the logits those of the `vit` model.
Prints one JSON line per case ({"batch": B, "max_abs_diff": d}) and exits 1 on the first failure.
Needs: pip install onnx onnxruntime numpy."""
import json, os, sys

import numpy as np
import onnx
import onnxruntime as ort

spec_path = sys.argv[1]
base = os.path.dirname(os.path.abspath(spec_path))
spec = json.load(open(spec_path))
path = os.path.join(base, spec["model"])

def fail(message):
    print(f"FAIL {message}", flush=True)
    sys.exit(1)

model = onnx.load(path)
# The full check also infers every value's shape and type through the graph.
onnx.checker.check_model(model, full_check=True)
opsets = {o.domain: o.version for o in model.opset_import}
if opsets.get("", 0) < 17:
    fail(f"opset {opsets}")
meta = {p.key: p.value for p in model.metadata_props}
if json.loads(meta["vit.class_names"]) != spec["class_names"]:
    fail(f"class names {meta['vit.class_names']} != {spec['class_names']}")
if meta["vit.precision"] != spec["precision"]:
    fail(f"precision {meta['vit.precision']}")
prep = json.loads(meta["vit.preprocessing"])
if prep["layout"] != "NHWC" or prep["steps"][-1]["op"] != "normalize":
    fail(f"preprocessing {prep}")
(graph_input,) = model.graph.input
batch_dim = graph_input.type.tensor_type.shape.dim[0]
if batch_dim.dim_param != "batch":
    fail(f"the batch dimension is not dynamic: {batch_dim}")

options = ort.SessionOptions()
options.intra_op_num_threads = 2
session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
for case in spec["cases"]:
    shape = case["shape"]
    x = np.fromfile(os.path.join(base, case["input"]), dtype="<f4").reshape(shape)
    expected = np.fromfile(os.path.join(base, case["logits"]), dtype="<f4").reshape(shape[0], -1)
    (logits,) = session.run(["logits"], {"images": x})
    if logits.shape != expected.shape:
        fail(f"batch {shape[0]}: logits {logits.shape}, expected {expected.shape}")
    diff = float(np.abs(logits - expected).max())
    print(json.dumps({"batch": shape[0], "max_abs_diff": diff, "tolerance": case["tolerance"]}), flush=True)
    if not diff <= case["tolerance"]:
        fail(f"batch {shape[0]}: logits differ by {diff} (tolerance {case['tolerance']})")
print("OK", flush=True)
