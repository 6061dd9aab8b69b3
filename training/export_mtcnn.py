"""Export facenet-pytorch's MTCNN P/R/O-Nets (MIT weights) to ONNX and TFLite, and check them on real images.

Three steps, because TFLite conversion lives in its own heavy venv so the main env stays small:

    python -m training.export_mtcnn onnx                                  # main env: torch + onnx
    ../venv-tflite/bin/python -m training.export_mtcnn tflite             # venv: torch + litert-torch
    python -m training.export_mtcnn check                                 # main env: ORT, OpenCV DNN, LiteRT vs torch

Tensor contract of every exported net (the same as facenet_pytorch.models.utils.detect_face):
  input  float32 N x 3 x H x W, RGB, (pixel - 127.5) * 0.0078125; plain NCHW (detect_face does
         imgs.permute(0, 3, 1, 2) from NHWC). The (N, C, W, H) order that appears in the source is *inside*
         R-Net and O-Net: `x.permute(0, 3, 2, 1)` before the first dense layer, to match the weight order
         of the original Caffe model. It is part of the exported graph; callers never transpose.
  P-Net  12 x 12 receptive field, stride 2, any H/W >= 12 (TFLite: even H/W only, odd silently drops a
         row/column) -> (reg N x 4 x H' x W', prob N x 2 x H' x W')
  R-Net  24 x 24 -> (reg N x 4, prob N x 2)
  O-Net  48 x 48 -> (reg N x 4, landmarks N x 10, prob N x 2)
  prob[:, 1] is the face probability; reg is (dx1, dy1, dx2, dy2) as fractions of box width/height;
  landmarks are 5 x-coordinates then 5 y-coordinates, as fractions of the 48 x 48 crop, in the order
  image-left eye, image-right eye, nose, image-left mouth corner, image-right mouth corner.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

import numpy as np
from tqdm import tqdm

from .paths import DATASETS, MODELS
NETS = ("pnet", "rnet", "onet")
OUTPUT_NAMES = {"pnet": ["reg", "prob"], "rnet": ["reg", "prob"], "onet": ["reg", "landmarks", "prob"]}
INPUT_SIZE = {"rnet": 24, "onet": 48}


def weights_dir() -> Path:
    # find_spec does not execute facenet_pytorch/__init__.py, which imports torchvision (not needed here).
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or spec.origin is None:
        sys.exit("facenet-pytorch is not installed: pip install --no-deps facenet-pytorch==2.6.0")
    return Path(spec.origin).parent / "data"


def build_nets(flatten: bool = True) -> dict:
    """The three nets, layer for layer as facenet_pytorch.models.mtcnn, with its weights loaded.

    flatten=True uses torch.flatten(x, 1) instead of x.view(x.shape[0], -1): identical numbers, but the
    exported Reshape then has a static trailing dim, which OpenCV DNN needs at batch > 1.
    """
    import torch
    from torch import nn

    def flat(x):
        return torch.flatten(x, 1) if flatten else x.view(x.shape[0], -1)

    class PNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
            self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
            self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
            self.conv4_1, self.softmax4_1 = nn.Conv2d(32, 2, 1), nn.Softmax(dim=1)
            self.conv4_2 = nn.Conv2d(32, 4, 1)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
            return self.conv4_2(x), self.softmax4_1(self.conv4_1(x))

    class RNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
            self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
            self.dense5_1, self.softmax5_1 = nn.Linear(128, 2), nn.Softmax(dim=1)
            self.dense5_2 = nn.Linear(128, 4)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.prelu3(self.conv3(x))
            x = x.permute(0, 3, 2, 1).contiguous()  # Caffe weight order, see module docstring
            x = self.prelu4(self.dense4(flat(x)))
            return self.dense5_2(x), self.softmax5_1(self.dense5_1(x))

    class ONet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
            self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
            self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
            self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
            self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
            self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
            self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
            self.dense6_1, self.softmax6_1 = nn.Linear(256, 2), nn.Softmax(dim=1)
            self.dense6_2 = nn.Linear(256, 4)
            self.dense6_3 = nn.Linear(256, 10)

        def forward(self, x):
            x = self.pool1(self.prelu1(self.conv1(x)))
            x = self.pool2(self.prelu2(self.conv2(x)))
            x = self.pool3(self.prelu3(self.conv3(x)))
            x = self.prelu4(self.conv4(x))
            x = x.permute(0, 3, 2, 1).contiguous()
            x = self.prelu5(self.dense5(flat(x)))
            return self.dense6_2(x), self.dense6_3(x), self.softmax6_1(self.dense6_1(x))

    nets = {}
    for name, cls in zip(NETS, (PNet, RNet, ONet)):
        net = cls()
        # strict=True: a missing or renamed key would silently leave random weights otherwise.
        net.load_state_dict(torch.load(weights_dir() / f"{name}.pt", map_location="cpu", weights_only=True), strict=True)
        nets[name] = net.eval()
    return nets


def export_onnx(out_dir: Path) -> None:
    import torch

    for name, net in build_nets().items():
        size = INPUT_SIZE.get(name, 48)
        dummy = torch.zeros(2, 3, size, size + (10 if name == "pnet" else 0))
        axes = {"input": {0: "batch"}} | {o: {0: "batch"} for o in OUTPUT_NAMES[name]}
        if name == "pnet":
            axes["input"] |= {2: "height", 3: "width"}
            axes |= {o: {0: "batch", 2: "out_h", 3: "out_w"} for o in OUTPUT_NAMES[name]}
        path = out_dir / f"mtcnn_{name}.onnx"
        torch.onnx.export(net, (dummy,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=OUTPUT_NAMES[name], dynamic_axes=axes)
        import onnx
        onnx.checker.check_model(onnx.load(str(path)))
        print(f"wrote {path} ({path.stat().st_size} bytes)")


def export_tflite(out_dir: Path) -> None:
    import torch
    try:
        import litert_torch as converter
    except ImportError:
        import ai_edge_torch as converter  # older name of the same project

    for name, net in tqdm(build_nets().items(), desc="converting to tflite", unit="net", disable=None):
        size = INPUT_SIZE.get(name, 48)
        # Batch 1 is fixed in the file; P-Net is resized at run time with resize_tensor_input (even H/W only).
        sample = (torch.zeros(1, 3, size, size),)
        # A dynamic-shape P-Net (torch.export.Dim) converts, but XNNPACK then fails to prepare it; the static
        # file resizes fine with resize_tensor_input as long as H and W are even (ceil-mode pooling is
        # lowered to a fixed pad that only matches an even conv1 output).
        model = converter.convert(net, sample)
        path = out_dir / f"mtcnn_{name}.tflite"
        model.export(str(path))
        ref = [t.detach().numpy() for t in net(*sample)]
        got = model(*sample)
        got = [np.asarray(g) for g in (got if isinstance(got, (list, tuple)) else [got])]
        diff = max(float(np.abs(r - g).max()) for r, g in zip(ref, got))
        print(f"wrote {path} ({path.stat().st_size} bytes); zero-input diff vs torch {diff:.2e}")


def real_inputs(max_images: int) -> dict[str, list[np.ndarray]]:
    """Real-image tensors for each net: pyramid levels for P-Net, face-centred crops for R/O-Net."""
    import cv2
    import dlib
    import skimage.data

    images = [skimage.data.astronaut()]
    people = DATASETS / "people"
    if people.is_dir():
        for p in sorted(people.glob("*/*.jpg"))[:max_images]:
            images.append(cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB))
    hog = dlib.get_frontal_face_detector()
    rng = np.random.default_rng(0)
    out = {"pnet": [], "rnet": [], "onet": []}
    norm = lambda a: ((a.astype(np.float32) - 127.5) * 0.0078125).transpose(2, 0, 1)[None]
    for rgb in tqdm(images, desc="real inputs", unit="photo", disable=None):
        scale = 320 / max(rgb.shape[:2])
        small = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        # Even H/W so the same tensor can be fed to the LiteRT P-Net.
        out["pnet"].append(norm(small[: small.shape[0] // 2 * 2, : small.shape[1] // 2 * 2]))
        for r in hog(rgb, 0):
            for _ in range(4):  # jittered boxes: some good faces, some off-centre
                dx, dy, ds = rng.uniform(-0.2, 0.2, 3)
                s = int(max(r.width(), r.height()) * (1 + ds))
                x0, y0 = int(r.left() + dx * s), int(r.top() + dy * s)
                crop = rgb[max(y0, 0):y0 + s, max(x0, 0):x0 + s]
                if crop.size:
                    for name, n in INPUT_SIZE.items():
                        out[name].append(norm(cv2.resize(crop, (n, n), interpolation=cv2.INTER_AREA)))
    return out


def check(out_dir: Path, max_images: int) -> None:
    import torch

    from edge.backends import ModelLoadError, load_backend

    nets = build_nets(flatten=False)  # the reference keeps facenet-pytorch's original .view
    inputs = real_inputs(max_images)
    for name in NETS:
        batches = inputs[name] if name == "pnet" else [np.concatenate(inputs[name])]
        shapes = sorted({b.shape for b in batches})
        print(f"{name}: {len(batches)} batch(es), shapes {shapes[:3]}{' ...' if len(shapes) > 3 else ''}")
        with torch.no_grad():
            refs = [[t.numpy() for t in nets[name](torch.from_numpy(b))] for b in batches]
        for key, ext in (("onnxruntime", "onnx"), ("opencv", "onnx"), ("litert", "tflite")):
            path = out_dir / f"mtcnn_{name}.{ext}"
            try:
                backend = load_backend(key, path)
            except ModelLoadError as exc:
                print(f"  {key:12s} skipped: {exc}")
                continue
            diffs = [0.0] * len(OUTPUT_NAMES[name])
            for b, ref in zip(batches, refs):
                got = _run(backend, b)
                for k, (r, g) in enumerate(zip(ref, got)):
                    diffs[k] = max(diffs[k], float(np.abs(r - g.reshape(r.shape)).max()))
            text = ", ".join(f"{o} {d:.2e}" for o, d in zip(OUTPUT_NAMES[name], diffs))
            print(f"  {key:12s} max abs diff vs torch: {text}")


def _run(backend, batch: np.ndarray) -> list[np.ndarray]:
    from edge.backends import run_batched
    # Output order is not the file order everywhere (OpenCV DNN lists its unconnected layers its own way,
    # LiteRT by tensor index): put them back in file order by channel count (4 = reg, 10 = landmarks, 2 = prob).
    return sorted(run_batched(backend, batch), key=lambda a: {4: 0, 10: 1, 2: 2}[a.shape[1]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("step", choices=["onnx", "tflite", "check"])
    ap.add_argument("--out", type=Path, default=MODELS)
    ap.add_argument("--max-images", type=int, default=12, help="people/ photos used by the check")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    {"onnx": lambda: export_onnx(args.out), "tflite": lambda: export_tflite(args.out),
     "check": lambda: check(args.out, args.max_images)}[args.step]()


if __name__ == "__main__":
    main()
