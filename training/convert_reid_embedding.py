"""Convert Intel Open Model Zoo's face-reidentification-retail-0095 (OpenVINO IR) to ONNX and TFLite, checked
against the OpenVINO runtime on real aligned faces.

No converter reads OpenVINO IR, but this network uses ten ops that map one to one onto PyTorch and ONNX, so:

1. ``read_ir``: parse the IR XML (layers, edges, op attributes) and the .bin (FP16 constants, upcast to FP32).
2. ``IrNet``: a PyTorch module that replays the IR graph op by op (Convolution, GroupConvolution, Add,
   Multiply, PReLU, Sigmoid, AvgPool; Convert only decompresses constants). One extra op: the 1 x 256 x 1 x 1
   output is flattened to N x 256.
3. Export: ONNX (TorchScript exporter, opset 17, dynamic batch) and TFLite (litert-torch, batch 1).
4. Check every converted file against OpenVINO on real faces: LFW pairs and people/ photos of ``../shared``,
   5 landmarks from the project's MTCNN (models/mtcnn_*.onnx), aligned onto the model's template
   (``edge.models.reid``), BGR 0-255. Reports: ``training/reports/reid_conversion.{md,json}``.

Model I/O contract: input ``images`` float32 N x 3 x 128 x 128, BGR, raw 0-255, aligned face;
output ``embedding`` float32 N x 256, not normalised; compare by cosine similarity.

    python -m training.convert_reid_embedding                 # export both formats, check, write reports
    python -m training.convert_reid_embedding --check-only    # check the committed files again
Needs torch==2.13.0, onnx, openvino and (TFLite) litert-torch: see training/requirements.txt.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import json
import platform
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
IR_DIR = SHARED / "models" / "face-reidentification-retail-0095"
DATASETS = SHARED / "datasets"
MODELS = ROOT / "models"
REPORTS = ROOT / "training" / "reports"
STEM = "face_reid_0095"
INPUT_SIZE = 128
SUPPORTED_OPS = {"Parameter", "Const", "Convert", "Convolution", "GroupConvolution", "Add", "Multiply", "PReLU",
                 "Sigmoid", "AvgPool", "Result"}


# ======================================================================================================
# 1. OpenVINO IR
# ======================================================================================================
@dataclass(frozen=True)
class IrLayer:
    id: str
    name: str
    type: str
    data: dict
    inputs: tuple[str, ...]   # producing layer ids, in input-port order


@dataclass(frozen=True)
class IrGraph:
    layers: list[IrLayer]     # topological order, Const/Convert folded into `constants`
    constants: dict           # layer id -> float32 array
    input_id: str
    output_id: str            # the layer feeding Result


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.replace(" ", "").split(",") if v)


def read_ir(xml_path: Path, bin_path: Path) -> IrGraph:
    """Parse the IR into a topologically ordered op list; constants decompressed from FP16 to FP32."""
    root = ET.parse(xml_path).getroot()
    weights = bin_path.read_bytes()
    producer = {}
    for edge in root.find("edges"):
        producer[(edge.get("to-layer"), int(edge.get("to-port")))] = edge.get("from-layer")
    raw = {}
    for node in root.find("layers"):
        op = node.get("type")
        if op not in SUPPORTED_OPS:
            raise ValueError(f"{xml_path}: layer {node.get('name')!r} has op {op}, which this converter does not map")
        data = dict(node.find("data").attrib) if node.find("data") is not None else {}
        ports = sorted(int(p.get("id")) for p in node.find("input")) if node.find("input") is not None else []
        raw[node.get("id")] = IrLayer(node.get("id"), node.get("name"), op, data,
                                      tuple(producer[(node.get("id"), p)] for p in ports))
    constants = {}
    for layer in raw.values():
        if layer.type == "Const":
            dtype = {"f16": np.float16, "f32": np.float32}[layer.data["element_type"]]
            offset, size = int(layer.data["offset"]), int(layer.data["size"])
            constants[layer.id] = np.frombuffer(weights, dtype, size // np.dtype(dtype).itemsize, offset) \
                .reshape(_ints(layer.data["shape"])).astype(np.float32)
    for layer in raw.values():
        if layer.type == "Convert":
            if layer.inputs[0] not in constants or layer.data.get("destination_type") != "f32":
                raise ValueError(f"Convert {layer.name!r} is not an FP16 -> FP32 weight decompression")
            constants[layer.id] = constants[layer.inputs[0]]
    (input_id,) = [k for k, v in raw.items() if v.type == "Parameter"]
    (result,) = [v for v in raw.values() if v.type == "Result"]
    order, done = [], set(constants) | {input_id}
    pending = [v for v in raw.values() if v.id not in done and v.type != "Result"]
    while pending:  # Kahn's algorithm; the XML order is not guaranteed topological
        ready = [v for v in pending if all(i in done for i in v.inputs)]
        if not ready:
            raise ValueError(f"{xml_path}: the graph has a cycle or a dangling input")
        order += ready
        done.update(v.id for v in ready)
        pending = [v for v in pending if v.id not in done]
    return IrGraph(order, constants, input_id, result.inputs[0])


# ======================================================================================================
# 2. The network in PyTorch
# ======================================================================================================
def build_torch_model(graph: IrGraph):
    import torch
    import torch.nn.functional as F

    def pads(layer: IrLayer) -> tuple[int, int]:
        begin, end = _ints(layer.data.get("pads_begin", "0,0")), _ints(layer.data.get("pads_end", "0,0"))
        if begin != end or layer.data.get("auto_pad", "explicit") != "explicit":
            raise ValueError(f"{layer.name}: asymmetric or automatic padding is not mapped")
        return begin

    class IrNet(torch.nn.Module):
        """Replays the IR ops in order; constants are buffers, so they export as ONNX initializers."""

        def __init__(self):
            super().__init__()
            self.steps = graph.layers
            for layer_id, value in graph.constants.items():
                self.register_buffer(f"c{layer_id}", torch.from_numpy(value.copy()))
            for layer in graph.layers:
                if layer.type == "GroupConvolution":  # (G, O/G, I/G, kh, kw) -> (O, I/G, kh, kw)
                    w = graph.constants[layer.inputs[1]]
                    self.register_buffer(f"g{layer.id}", torch.from_numpy(w.reshape(-1, *w.shape[2:]).copy()))

        def forward(self, images):
            values = {graph.input_id: images}

            def arg(layer_id):
                return values[layer_id] if layer_id in values else getattr(self, f"c{layer_id}")

            for layer in self.steps:
                x = [arg(i) for i in layer.inputs]
                d = layer.data
                if layer.type == "Convolution":
                    out = F.conv2d(x[0], x[1], None, _ints(d["strides"]), pads(layer), _ints(d["dilations"]))
                elif layer.type == "GroupConvolution":
                    groups = graph.constants[layer.inputs[1]].shape[0]
                    out = F.conv2d(x[0], getattr(self, f"g{layer.id}"), None, _ints(d["strides"]), pads(layer),
                                   _ints(d["dilations"]), groups)
                elif layer.type == "Add":
                    out = x[0] + x[1]
                elif layer.type == "Multiply":
                    out = x[0] * x[1]
                elif layer.type == "PReLU":
                    out = F.prelu(x[0], x[1].reshape(-1))
                elif layer.type == "Sigmoid":
                    out = torch.sigmoid(x[0])
                elif layer.type == "AvgPool":
                    out = F.avg_pool2d(x[0], _ints(d["kernel"]), _ints(d["strides"]), pads(layer),
                                       ceil_mode=d.get("rounding_type", "floor") == "ceil",
                                       count_include_pad=d.get("exclude-pad", "false") != "true")
                else:
                    raise ValueError(f"op {layer.type} ({layer.name}) has no mapping")
                values[layer.id] = out
            return values[graph.output_id].flatten(1)

    return IrNet().eval()


# ======================================================================================================
# 3. Export
# ======================================================================================================
def export_onnx(model, path: Path) -> None:
    import onnx
    import torch

    with torch.no_grad():
        torch.onnx.export(model, (torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE),), str(path), input_names=["images"],
                          output_names=["embedding"], dynamic_axes={"images": {0: "batch"}, "embedding": {0: "batch"}},
                          opset_version=17, do_constant_folding=True, dynamo=False)
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    m.doc_string = ("face-reidentification-retail-0095 (Intel Open Model Zoo, Apache-2.0) converted from OpenVINO IR "
                    "by training/convert_reid_embedding.py. Input images: N x 3 x 128 x 128 BGR float32, raw 0-255, "
                    "face aligned on the model's 5-point template. Output embedding: N x 256, compare by cosine.")
    onnx.save(m, str(path))


def export_tflite(model, path: Path) -> None:
    import litert_torch
    import torch

    edge_model = litert_torch.convert(model, (torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE),))
    edge_model.export(str(path))


# ======================================================================================================
# 4. Check against OpenVINO on real aligned faces
# ======================================================================================================
def read_pairs(lfw: Path, limit: int) -> list[tuple[Path, Path, bool]]:
    with open(lfw / "pairs.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    return [(lfw / r["file_a"], lfw / r["file_b"], r["same"] == "1") for r in rows[:limit]]


def read_people(people: Path) -> list[tuple[Path, str]]:
    with open(people / "labels.csv", newline="") as f:
        return [(people / r["file"], r["person"]) for r in csv.DictReader(f) if r["faces"].strip() == "1"]


class FaceAligner:
    """The project's own path: MTCNN landmarks (ONNX Runtime), then the reid model's template alignment."""

    def __init__(self, models_dir: Path):
        from edge.backends import load_backend
        from edge.detect.mtcnn import MtcnnDetector
        from edge.models.reid import ReidEmbeddingModel

        nets = [load_backend("onnxruntime", models_dir / f"mtcnn_{n}.onnx") for n in ("pnet", "rnet", "onet")]
        self.detector = MtcnnDetector(*nets, min_face=20, thresholds=(0.6, 0.7, 0.8))
        self.template, self.size = ReidEmbeddingModel.template, ReidEmbeddingModel.chip_size

    def chip_bgr(self, path: Path) -> np.ndarray | None:
        """The aligned BGR chip of the face nearest the photo's centre, or None when no face is found."""
        from edge.align import align_chip

        bgr = cv2.imread(str(path))
        if bgr is None:
            raise FileNotFoundError(f"cannot read image {path}")
        faces = self.detector.detect(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
        if not faces:
            return None
        h, w = bgr.shape[:2]
        face = min(faces, key=lambda f: np.hypot(f.center[0] - w / 2, f.center[1] - h / 2))
        return align_chip(bgr, face.landmarks, self.template, self.size)


def to_tensor(chips_bgr: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(chips_bgr.transpose(0, 3, 1, 2), dtype=np.float32)


def run_openvino(xml: Path, x: np.ndarray) -> np.ndarray:
    import openvino as ov

    core = ov.Core()
    # OpenVINO's CPU plugin defaults to bfloat16 on CPUs with AVX512-BF16/AMX (this one: outputs off by ~0.06);
    # the reference must be the FP32 network.
    compiled = core.compile_model(core.read_model(xml), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    out = [np.asarray(compiled(x[i:i + 1])[0]).reshape(1, -1) for i in tqdm(range(len(x)), desc="openvino",
                                                                            unit="face", disable=None, leave=False)]
    return np.concatenate(out).astype(np.float32)


def run_backend(key: str, path: Path, x: np.ndarray) -> np.ndarray:
    from edge.backends import load_backend, run_batched

    backend = load_backend(key, path, threads=1)
    out = [run_batched(backend, x[i:i + 32])[0].reshape(len(x[i:i + 32]), -1)
           for i in tqdm(range(0, len(x), 32), desc=key, unit="batch", disable=None, leave=False)]
    return np.concatenate(out).astype(np.float32)


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def best_threshold(cosines: np.ndarray, same: np.ndarray) -> float:
    """The cosine threshold (midpoint between neighbouring values) with the highest pair accuracy."""
    values = np.sort(cosines)
    candidates = np.concatenate([[values[0] - 1e-3], (values[1:] + values[:-1]) / 2, [values[-1] + 1e-3]])
    accuracy = [((cosines > t) == same).mean() for t in candidates]
    return float(candidates[int(np.argmax(accuracy))])


def compare(ref: np.ndarray, got: np.ndarray, pairs: dict, threshold: float) -> dict:
    """Component-wise, per-face cosine and pair-decision agreement of `got` with the OpenVINO `ref`."""
    result = {
        "faces": len(ref),
        "max_abs_diff_raw": float(np.abs(got - ref).max()),
        "mean_abs_diff_raw": float(np.abs(got - ref).mean()),
        "max_abs_ref_raw": float(np.abs(ref).max()),
        "max_abs_diff_normalised": float(np.abs(unit(got) - unit(ref)).max()),
        "min_cosine_to_openvino": float((unit(got) * unit(ref)).sum(1).min()),
    }
    for name, (ia, ib, same) in pairs.items():
        ref_cos = (unit(ref)[ia] * unit(ref)[ib]).sum(1)
        got_cos = (unit(got)[ia] * unit(got)[ib]).sum(1)
        result[name] = {
            "pairs": len(ia),
            "max_abs_diff_pair_cosine": float(np.abs(got_cos - ref_cos).max()),
            "decisions_differing": int(((got_cos > threshold) != (ref_cos > threshold)).sum()),
            "accuracy": float(((got_cos > threshold) == same).mean()),
        }
    return result


def check(args) -> dict:
    import openvino

    from edge.backends import ModelLoadError

    aligner = FaceAligner(args.models_dir)
    lfw_pairs = read_pairs(args.datasets / "lfw", args.pairs)
    people = read_people(args.datasets / "people")
    files = sorted({p for a, b, _ in lfw_pairs for p in (a, b)} | {p for p, _ in people})
    chips, missed = {}, []
    for path in tqdm(files, desc="MTCNN + alignment", unit="photo", disable=None):
        chip = aligner.chip_bgr(path)
        if chip is None:
            missed.append(str(path.relative_to(args.datasets)))
        else:
            chips[path] = chip
    index = {p: i for i, p in enumerate(chips)}
    x = to_tensor(np.stack(list(chips.values())))
    kept = [(index[a], index[b], s) for a, b, s in lfw_pairs if a in index and b in index]
    ia, ib, same = (np.array(v) for v in zip(*kept))
    people_idx = [(index[p], person) for p, person in people if p in index]
    pa, pb, psame = (np.array(v) for v in zip(*[(i, j, pi == pj) for n, (i, pi) in enumerate(people_idx)
                                                   for j, pj in people_idx[n + 1:]]))
    pairs = {"lfw_pairs": (ia, ib, same), "people_pairs": (pa, pb, psame)}

    xml = args.ir_dir / "face-reidentification-retail-0095.xml"
    ref = run_openvino(xml, x)
    ref_cos = (unit(ref)[ia] * unit(ref)[ib]).sum(1)
    threshold = best_threshold(ref_cos, same)
    report = {
        "source": {"ir": xml.name, "ir_sha256": sha256(xml),
                   "bin_sha256": sha256(xml.with_suffix(".bin")), "openvino": openvino.__version__},
        "faces": {"photos": len(files), "aligned": len(x), "no_face_found": missed,
                  "lfw_pairs_used": len(ia), "lfw_pairs_asked": len(lfw_pairs),
                  "people_pairs": len(pa)},
        "threshold": {"cosine": threshold, "chosen_on": "OpenVINO outputs, best accuracy on the LFW pairs used",
                      "openvino_lfw_accuracy": float(((ref_cos > threshold) == same).mean()),
                      # How near the closest pair came to flipping: the converted files' pair cosines would have to
                      # move this much to change a decision.
                      "openvino_closest_lfw_pair_to_threshold": float(np.abs(ref_cos - threshold).min())},
        "platform": platform.platform(),
        "files": {}, "vs_openvino": {},
    }
    for key, path in (("onnxruntime", args.onnx), ("opencv", args.onnx), ("litert", args.tflite)):
        if not path.is_file():
            report["vs_openvino"][key] = {"skipped": f"{path.name} not present"}
            continue
        report["files"][path.name] = {"sha256": sha256(path), "bytes": path.stat().st_size}
        try:
            got = run_backend(key, path, x)
        except ModelLoadError as exc:
            report["vs_openvino"][key] = {"skipped": str(exc)}
            continue
        report["vs_openvino"][key] = {"file": path.name, **compare(ref, got, pairs, threshold)}
    return report


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def markdown(report: dict, command: str) -> str:
    f, t = report["faces"], report["threshold"]
    lines = [
        "# face-reidentification-retail-0095: converted files vs the OpenVINO runtime",
        "",
        f"Written by `{command}` (training/convert_reid_embedding.py). Reference: OpenVINO "
        f"{report['source']['openvino']} (CPU, inference precision forced to f32) running the original IR "
        f"({report['source']['ir']}, sha256 "
        f"{report['source']['ir_sha256'][:16]}...). Faces: {f['aligned']} real faces of `../shared/datasets` "
        f"({f['photos']} photos: the LFW photos of the first {f['lfw_pairs_asked']} pairs of `lfw/pairs.csv` and the "
        f"single-face photos of `people/`), 5 landmarks from the project's MTCNN (models/mtcnn_*.onnx, ONNX "
        f"Runtime), aligned onto the model's template (edge/models/reid.py), BGR 0-255. No face found in "
        f"{len(f['no_face_found'])} photo(s){': ' + ', '.join(f['no_face_found']) if f['no_face_found'] else ''}.",
        "",
        f"Same/different decisions: cosine similarity of L2-normalised outputs > {t['cosine']:.4f}, the threshold "
        f"with the best accuracy on the OpenVINO outputs of the {f['lfw_pairs_used']} LFW pairs used "
        f"(OpenVINO accuracy there {100 * t['openvino_lfw_accuracy']:.2f}%, in-sample); the same threshold on all "
        f"{f['people_pairs']} pairs of people/ photos. The LFW pair nearest the threshold is "
        f"{t['openvino_closest_lfw_pair_to_threshold']:.2e} from it (OpenVINO cosine).",
        "",
        "| runtime | file | faces | max abs diff (raw 256-D) | mean abs diff | max abs diff (unit vectors) | "
        "min cosine to OpenVINO | max diff of pair cosine (LFW) | LFW decisions differing | LFW accuracy | "
        "people decisions differing |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key, r in report["vs_openvino"].items():
        if "skipped" in r:
            lines.append(f"| {key} | skipped: {r['skipped']} |||||||||")
            continue
        lp, pp = r["lfw_pairs"], r["people_pairs"]
        lines.append(
            f"| {key} | {r['file']} | {r['faces']} | {r['max_abs_diff_raw']:.2e} (largest component "
            f"{r['max_abs_ref_raw']:.2f}) | {r['mean_abs_diff_raw']:.2e} | {r['max_abs_diff_normalised']:.2e} | "
            f"{r['min_cosine_to_openvino']:.7f} | {lp['max_abs_diff_pair_cosine']:.2e} | "
            f"{lp['decisions_differing']} of {lp['pairs']} | {100 * lp['accuracy']:.2f}% | "
            f"{pp['decisions_differing']} of {pp['pairs']} |")
    lines += ["", "Files checked:", ""]
    lines += [f"- `models/{name}`: {v['bytes']} bytes, sha256 `{v['sha256']}`" for name, v in report["files"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ir-dir", type=Path, default=IR_DIR,
                    help="folder with the .xml/.bin (default ../shared/models/face-reidentification-retail-0095)")
    ap.add_argument("--datasets", type=Path, default=DATASETS, help="../shared/datasets (lfw/, people/)")
    ap.add_argument("--models-dir", type=Path, default=MODELS, help="MTCNN files, and where the outputs go")
    ap.add_argument("--onnx", type=Path, default=None, help=f"default: <models-dir>/{STEM}.onnx")
    ap.add_argument("--tflite", type=Path, default=None, help=f"default: <models-dir>/{STEM}.tflite")
    ap.add_argument("--reports", type=Path, default=REPORTS)
    ap.add_argument("--pairs", type=int, default=600, help="first N pairs of lfw/pairs.csv (600 = fold 0)")
    ap.add_argument("--check-only", action="store_true", help="do not convert; check the existing files")
    ap.add_argument("--skip-tflite", action="store_true", help="convert to ONNX only")
    args = ap.parse_args(argv)
    args.onnx = args.onnx or args.models_dir / f"{STEM}.onnx"
    args.tflite = args.tflite or args.models_dir / f"{STEM}.tflite"
    xml = args.ir_dir / "face-reidentification-retail-0095.xml"
    if not xml.is_file():
        raise SystemExit(f"IR not found: {xml} (pass --ir-dir)")

    if not args.check_only:
        import torch

        graph = read_ir(xml, xml.with_suffix(".bin"))
        model = build_torch_model(graph)
        params = sum(v.size for k, v in graph.constants.items())
        print(f"IR: {len(graph.layers)} ops, {len(graph.constants)} constants ({params} values)")
        export_onnx(model, args.onnx)
        print(f"wrote {args.onnx} ({args.onnx.stat().st_size} bytes)")
        if not args.skip_tflite:
            export_tflite(model, args.tflite)
            print(f"wrote {args.tflite} ({args.tflite.stat().st_size} bytes)")
        noise = torch.from_numpy(np.random.default_rng(0).uniform(0, 255, (2, 3, INPUT_SIZE, INPUT_SIZE))
                                 .astype(np.float32))
        with torch.no_grad():
            print(f"torch module on noise: output {tuple(model(noise).shape)}")

    started = time.perf_counter()
    report = check(args)
    report["check_seconds"] = round(time.perf_counter() - started, 1)
    args.reports.mkdir(parents=True, exist_ok=True)
    (args.reports / "reid_conversion.json").write_text(json.dumps(report, indent=2) + "\n")
    command = " ".join(["python -m training.convert_reid_embedding", *(argv if argv is not None else sys.argv[1:])])
    (args.reports / "reid_conversion.md").write_text(markdown(report, command))
    print(markdown(report, command))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
