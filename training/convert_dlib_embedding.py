#!/usr/bin/env python3
"""Convert dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) to ONNX and TFLite.

dlib's 128-D identity descriptor network only runs inside dlib. This script owns the whole conversion path:

1. ``DlibStreamReader`` / ``parse_dlib_metric_net``: read dlib's own binary serialisation directly (no dlib needed),
   guided by the network type from dlib's ``examples/dnn_face_recognition_ex.cpp`` (``anet_type``), because dlib's
   stream does not name the wrapper types (tag/skip layers only write a version number).
2. ``DlibMetricNet``: a PyTorch module that replays the parsed layer list exactly as dlib's forward pass does
   (including dlib's zero-filling ``add_prev`` for tensors of different shapes).
3. Export to ONNX (opset 17, dynamic batch) and, through a separate virtualenv that has ``litert-torch``, to TFLite.
4. Numerical check against ``dlib.face_recognition_model_v1.compute_face_descriptor`` on real aligned chips, timing,
   and the JSON/Markdown reports in ``training/reports/``.

Model I/O contract (the caller does the normalisation):
    input  ``images``    float32 N x 3 x 150 x 150, RGB, ``(pixel - mean_rgb) / 256`` with mean_rgb read from the .dat
                         (122.782, 117.001, 104.298), on a dlib-style aligned face chip (``get_face_chip``, size 150,
                         padding 0.25).
    output ``embedding`` float32 N x 128, NOT L2-normalised (identical to dlib's descriptor; same person if the
                         Euclidean distance is < 0.6).

Run:  python -m training.convert_dlib_embedding            (export + check + reports)
      python -m training.convert_dlib_embedding --tflite-only --dat ... --tflite-out ...   (internal: run in the
                         TFLite venv by the main run)
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import importlib.util
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .paths import DATASETS as SHARED_DATASETS
from .paths import ROOT as REPO_ROOT
from .paths import TFLITE_PYTHON as DEFAULT_TFLITE_PYTHON

DEFAULT_PEOPLE_DIR = SHARED_DATASETS / "people"
DEFAULT_LFW_DIR = SHARED_DATASETS / "lfw"
DEFAULT_ONNX = REPO_ROOT / "models" / "face_embedding_dlib_resnet_v1.onnx"
DEFAULT_TFLITE = REPO_ROOT / "models" / "face_embedding_dlib_resnet_v1.tflite"
REPORT_DIR = REPO_ROOT / "training" / "reports"

CHIP_SIZE = 150
CHIP_PADDING = 0.25
SAME_PERSON_THRESHOLD = 0.6
DAT_FILE_NAME = "dlib_face_recognition_resnet_model_v1.dat"
SOURCE_PACKAGE = "face-recognition-models 0.3.0"
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def face_recognition_models_file(name: str) -> Path:
    """A model file shipped in the ``face_recognition_models`` package.

    Located without importing the package: its ``__init__`` imports ``pkg_resources``, which recent setuptools
    no longer ships.
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("face-recognition-models is not installed (pip install face-recognition-models)")
    return Path(list(spec.submodule_search_locations)[0]) / "models" / name


def default_dat_path() -> Path:
    """Location of the .dat inside the installed ``face_recognition_models`` package."""
    return face_recognition_models_file(DAT_FILE_NAME)


# ======================================================================================================
# 1. dlib binary stream
# ======================================================================================================
class DlibFormatError(ValueError):
    """The .dat stream does not match the expected dlib serialisation."""


class DlibStreamReader:
    """Reads the primitives of dlib's ``serialize.h`` from a byte buffer.

    - integers (any width, signed or not): one header byte whose low nibble is the number of following bytes
      and whose bit 7 is the sign, then the magnitude little-endian (``pack_int``);
    - float/double: ``float_details`` = (int64 mantissa, int16 exponent), value = mantissa * 2**exponent, with
      exponents 32000/32001/32002 meaning +inf/-inf/nan;
    - std::string: length (integer) then raw bytes;
    - bool: one ASCII character, '1' or '0';
    - tensor (``dnn/tensor.h``): version 1 = dims + float_details per value, version 2 = dims + raw little-endian
      IEEE float32 values.
    """

    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"unexpected end of stream at byte {self.pos} (wanted {n} bytes)")
        out = self.data[self.pos : self.pos + n]
        self.pos += n
        return out

    def peek_int(self) -> int:
        start = self.pos
        try:
            return self.read_int()
        finally:
            self.pos = start

    def read_int(self) -> int:
        header = self._take(1)[0]
        if header & 0x70:
            raise DlibFormatError(f"bad integer header 0x{header:02x} at byte {self.pos - 1}")
        size = header & 0x0F
        if size > 8:
            raise DlibFormatError(f"integer of {size} bytes at byte {self.pos - 1}")
        value = int.from_bytes(self._take(size), "little")
        return -value if header & 0x80 else value

    def read_float(self) -> float:
        mantissa = self.read_int()
        exponent = self.read_int()
        special = {32000: math.inf, 32001: -math.inf, 32002: math.nan}
        if exponent in special:
            return special[exponent]
        return math.ldexp(mantissa, exponent)

    def read_string(self) -> str:
        n = self.read_int()
        if not 0 <= n < 1 << 20:
            raise DlibFormatError(f"implausible string length {n} at byte {self.pos}")
        return self._take(n).decode("ascii")

    def read_bool(self) -> bool:
        ch = self._take(1)
        if ch not in (b"0", b"1"):
            raise DlibFormatError(f"bad bool byte {ch!r} at byte {self.pos - 1}")
        return ch == b"1"

    def expect_string(self, *allowed: str) -> str:
        s = self.read_string()
        if s not in allowed:
            raise DlibFormatError(f"expected one of {allowed}, found {s!r} before byte {self.pos}")
        return s

    def read_tensor(self) -> np.ndarray:
        version = self.read_int()
        dims = [self.read_int() for _ in range(4)]
        count = int(np.prod(dims))
        if version == 2:
            values = np.frombuffer(self._take(4 * count), dtype="<f4").astype(np.float32)
        elif version == 1:
            values = np.array([self.read_float() for _ in range(count)], dtype=np.float32)
        else:
            raise DlibFormatError(f"unknown tensor version {version} at byte {self.pos}")
        return values.reshape(dims)

    def read_alias_tensor(self) -> tuple[int, int, int, int]:
        version = self.read_int()
        if version != 1:
            raise DlibFormatError(f"unknown alias_tensor version {version} at byte {self.pos}")
        return tuple(self.read_int() for _ in range(4))  # type: ignore[return-value]


# ======================================================================================================
# 2. The network type (dnn_face_recognition_ex.cpp's anet_type), outermost wrapper first
# ======================================================================================================
@dataclass
class Node:
    """One wrapper of dlib's nested network type.

    ``wrapper`` is ``layer`` (add_layer), ``tag`` (add_tag_layer), ``skip`` (add_skip_layer) or ``input``
    (the add_layer that holds the input layer). ``kind`` names the expected layer details for ``layer`` nodes;
    ``spec`` holds the template arguments; ``params`` is filled by the parser.
    """

    wrapper: str
    kind: str = ""
    spec: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)


def L(kind: str, **spec: Any) -> Node:
    return Node("layer", kind, spec)


def _block(n: int, stride: int, sub: list[Node]) -> list[Node]:
    # block = BN<con<N,3,3,1,1,relu<BN<con<N,3,3,stride,stride,SUBNET>>>>>, BN = affine
    return [L("affine"), L("con", n=n, k=3, s=1), L("relu"), L("affine"), L("con", n=n, k=3, s=stride)] + sub


def _ares(n: int, sub: list[Node]) -> list[Node]:
    # ares = relu<residual<block,N,affine,SUBNET>>, residual = add_prev1<block<N,BN,1,tag1<SUBNET>>>
    return [L("relu"), L("add_prev", tag=1)] + _block(n, 1, [Node("tag", spec={"id": 1})] + sub)


def _ares_down(n: int, sub: list[Node]) -> list[Node]:
    # ares_down = relu<residual_down<...>>,
    # residual_down = add_prev2<avg_pool<2,2,2,2,skip1<tag2<block<N,BN,2,tag1<SUBNET>>>>>>
    return [
        L("relu"),
        L("add_prev", tag=2),
        L("avg_pool", k=2, s=2),
        Node("skip", spec={"id": 1}),
        Node("tag", spec={"id": 2}),
    ] + _block(n, 2, [Node("tag", spec={"id": 1})] + sub)


def anet_type() -> list[Node]:
    """The inference network ``anet_type`` of dlib's face recognition example, outermost first."""
    # The innermost add_layer wraps the input layer directly; dlib serialises it with its own version scheme.
    sub = [L("max_pool", k=3, s=2), L("relu"), L("affine"), Node("input", "con", {"n": 32, "k": 7, "s": 2})]
    sub = _ares(32, _ares(32, _ares(32, sub)))  # alevel4
    sub = _ares(64, _ares(64, _ares(64, _ares_down(64, sub))))  # alevel3
    sub = _ares(128, _ares(128, _ares_down(128, sub)))  # alevel2
    sub = _ares(256, _ares(256, _ares_down(256, sub)))  # alevel1
    sub = _ares_down(256, sub)  # alevel0
    return [L("fc", n=128, bias=False), L("avg_pool", k=0, s=1)] + sub  # fc_no_bias<128,avg_pool_everything<>>


# ======================================================================================================
# 3. Parser
# ======================================================================================================
@dataclass
class ParsedNet:
    """Everything read from the .dat: input normalisation, loss parameters and layers in execution order."""

    mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]
    loss: dict[str, float]
    nodes: list[Node]  # execution order: first node consumes the input image
    bytes_read: int


def _read_con(r: DlibStreamReader, node: Node) -> None:
    r.expect_string("con_4")
    params = r.read_tensor().reshape(-1)
    num_filters, nr, nc = r.read_int(), r.read_int(), r.read_int()
    stride_y, stride_x = r.read_int(), r.read_int()
    pad_y, pad_x = r.read_int(), r.read_int()
    filters_shape = r.read_alias_tensor()
    biases_shape = r.read_alias_tensor()
    for _ in range(4):  # learning-rate / weight-decay multipliers: training only
        r.read_float()
    spec = node.spec
    if (num_filters, nr, nc, stride_y, stride_x) != (spec["n"], spec["k"], spec["k"], spec["s"], spec["s"]):
        raise DlibFormatError(f"con mismatch: found {(num_filters, nr, nc, stride_y, stride_x)}, expected {spec}")
    # dlib's default con_ padding: k/2 when the stride is 1, else 0. Checked, because the .dat stores its own.
    want_pad = spec["k"] // 2 if spec["s"] == 1 else 0
    if (pad_y, pad_x) != (want_pad, want_pad):
        raise DlibFormatError(f"unexpected con padding {(pad_y, pad_x)}")
    nf = int(np.prod(filters_shape))
    weight = params[:nf].reshape(filters_shape)  # (num_filters, k_in, nr, nc) = PyTorch OIHW
    bias = params[nf : nf + int(np.prod(biases_shape))].reshape(-1)
    if weight.shape[0] != num_filters or bias.shape[0] != num_filters:
        raise DlibFormatError("con parameter shapes do not match num_filters")
    node.params = {"weight": weight, "bias": bias, "stride": stride_y, "padding": pad_y}


def _read_affine(r: DlibStreamReader, node: Node) -> None:
    version = r.expect_string("affine_", "bn_con2")
    if version == "affine_":
        params = r.read_tensor().reshape(-1)
        g_shape = r.read_alias_tensor()
        r.read_alias_tensor()
        mode = r.read_int()
        if mode != 0:
            raise DlibFormatError("affine layer is not in CONV_MODE")
        n = int(np.prod(g_shape))
        gamma, beta = params[:n], params[n : 2 * n]
    else:
        # A batch-norm layer saved by the training net; dlib's affine_(bn_) folds its running statistics:
        # gamma' = gamma / sqrt(running_var + eps), beta' = beta - gamma' * running_mean.
        params = r.read_tensor().reshape(-1)
        g_shape = r.read_alias_tensor()
        r.read_alias_tensor()
        r.read_tensor(), r.read_tensor()  # means, invstds of the last training batch: unused
        running_means = r.read_tensor().reshape(-1)
        running_vars = r.read_tensor().reshape(-1)
        r.read_int(), r.read_int()  # num_updates, running_stats_window_size
        for _ in range(4):
            r.read_float()
        eps = r.read_float()
        n = int(np.prod(g_shape))
        g = params[:n].astype(np.float32)
        gamma = (g * (1.0 / np.sqrt(running_vars.astype(np.float32) + np.float32(eps)))).astype(np.float32)
        beta = (params[n : 2 * n] - gamma * running_means).astype(np.float32)
    node.params = {"gamma": gamma.astype(np.float32), "beta": beta.astype(np.float32)}


def _read_pool(r: DlibStreamReader, node: Node) -> None:
    r.expect_string("max_pool_2" if node.kind == "max_pool" else "avg_pool_2")
    nr, nc, sy, sx, py, px = (r.read_int() for _ in range(6))
    k, s = node.spec["k"], node.spec["s"]
    if (nr, nc, sy, sx) != (k, k, s, s):
        raise DlibFormatError(f"{node.kind} mismatch: {(nr, nc, sy, sx)} vs {node.spec}")
    # dlib's default pool padding: k/2 when the stride is 1, else 0 (0 for the *_everything pools).
    want_pad = 0 if k == 0 or s != 1 else k // 2
    if (py, px) != (want_pad, want_pad):
        raise DlibFormatError(f"unexpected {node.kind} padding {(py, px)}")
    node.params = {"k": k, "stride": s, "padding": py}


def _read_fc(r: DlibStreamReader, node: Node) -> None:
    r.expect_string("fc_2")
    num_outputs, num_inputs = r.read_int(), r.read_int()
    params = r.read_tensor().reshape(-1)
    w_shape = r.read_alias_tensor()
    r.read_alias_tensor()  # biases alias (empty for fc_no_bias)
    bias_mode = r.read_int()
    for _ in range(4):
        r.read_float()
    if num_outputs != node.spec["n"] or bias_mode != 1:  # FC_NO_BIAS == 1
        raise DlibFormatError(f"fc mismatch: outputs {num_outputs}, bias_mode {bias_mode}")
    # dlib computes output = input(N x num_inputs) * W(num_inputs x num_outputs).
    weight = params[: int(np.prod(w_shape))].reshape(num_inputs, num_outputs)
    node.params = {"weight": weight}


def _read_details(r: DlibStreamReader, node: Node) -> None:
    if node.kind == "con":
        _read_con(r, node)
    elif node.kind == "affine":
        _read_affine(r, node)
    elif node.kind in ("max_pool", "avg_pool"):
        _read_pool(r, node)
    elif node.kind == "fc":
        _read_fc(r, node)
    elif node.kind == "relu":
        r.expect_string("relu_")
    elif node.kind == "add_prev":
        r.expect_string("add_prev_")
    else:
        raise AssertionError(node.kind)


def _read_add_layer_tail(r: DlibStreamReader, version: int, n_tensors: int) -> None:
    """The training state add_layer stores after its details: three bools and cached tensors (all unused)."""
    for _ in range(3 if version >= 2 else 2):
        r.read_bool()
    for _ in range(n_tensors):
        r.read_tensor()


def parse_dlib_metric_net(data: bytes) -> ParsedNet:
    """Parse ``loss_metric<anet_type>`` from dlib's serialisation.

    dlib writes a nested network as: every wrapper's version number from the outside in (add_layer writes its
    version and then serialises its sub-network before its own details), then the input layer, then each
    layer's details from the inside out. So: read versions along the type list, then the input layer, then
    details in reverse.
    """
    r = DlibStreamReader(data)
    if r.read_int() != 1:
        raise DlibFormatError("unexpected add_loss_layer version")
    r.expect_string("loss_metric_2")
    loss = {"margin": r.read_float(), "dist_thresh": r.read_float()}

    nodes = anet_type()
    versions: list[int] = []
    for node in nodes:
        v = r.read_int()
        ok = {"layer": (1, 2), "tag": (1,), "skip": (1,), "input": (2, 3)}[node.wrapper]
        if v not in ok:
            raise DlibFormatError(f"version {v} for a {node.wrapper} wrapper ({node.kind}) at byte {r.pos}")
        versions.append(v)

    # The add_layer holding the input layer: input details, then its own (innermost) layer details.
    r.expect_string("input_rgb_image_sized")
    mean_rgb = (r.read_float(), r.read_float(), r.read_float())
    input_size = (r.read_int(), r.read_int())
    first = nodes[-1]
    _read_details(r, first)
    _read_add_layer_tail(r, 2, 3)  # x_grad, cached_output, grad_final
    if versions[-1] >= 3:
        r.read_int()  # _sample_expansion_factor
    exec_nodes: list[Node] = [first]
    layer_nodes, layer_versions = nodes[:-1], versions[:-1]
    for node, v in zip(reversed(layer_nodes), reversed(layer_versions)):
        if node.wrapper == "layer":
            _read_details(r, node)
            _read_add_layer_tail(r, v, 3 if v >= 2 else 2)  # x_grad, cached_output[, params_grad]
        exec_nodes.append(node)
    return ParsedNet(mean_rgb, input_size, loss, exec_nodes, r.pos)


# ======================================================================================================
# 4. PyTorch replica
# ======================================================================================================
def _import_torch():
    import torch  # noqa: PLC0415 - torch is only needed for conversion, never by the appliance

    return torch


def build_torch_model(net: ParsedNet):
    """Build ``DlibMetricNet`` (a torch.nn.Module) from the parsed layers, folding each affine into its con."""
    torch = _import_torch()
    nn = torch.nn
    F = torch.nn.functional

    class DlibMetricNet(nn.Module):
        """Replays dlib's layer list in execution order.

        Owns: conv(+folded affine), relu, max/avg pooling, dlib's tag/skip/add_prev routing and the final
        fc_no_bias. Shapes are propagated once at build time (input fixed to 150 x 150) so the zero-fill padding
        of ``add_prev`` is baked in as constants: nothing shape-dependent is traced except the batch size.
        """

        def __init__(self):
            super().__init__()
            self.steps: list[tuple] = []
            self.convs = nn.ModuleList()
            shape = (3, *net.input_size)  # C, H, W
            tags: dict[int, tuple[int, int, int]] = {}
            nodes = net.nodes
            i = 0
            while i < len(nodes):
                node = nodes[i]
                if node.wrapper == "tag":
                    tags[node.spec["id"]] = shape
                    self.steps.append(("tag", node.spec["id"]))
                elif node.wrapper == "skip":
                    shape = tags[node.spec["id"]]
                    self.steps.append(("skip", node.spec["id"]))
                elif node.kind == "con":
                    p = node.params
                    w = torch.from_numpy(p["weight"].copy())
                    b = torch.from_numpy(p["bias"].copy())
                    # Fold the following affine (dlib's inference batch-norm) into the conv: y = g*(Wx+b)+beta.
                    if i + 1 < len(nodes) and nodes[i + 1].kind == "affine":
                        g = torch.from_numpy(nodes[i + 1].params["gamma"].copy())
                        be = torch.from_numpy(nodes[i + 1].params["beta"].copy())
                        w = w * g.view(-1, 1, 1, 1)
                        b = b * g + be
                        i += 1
                    conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2], stride=p["stride"], padding=p["padding"])
                    conv.weight.data.copy_(w)
                    conv.bias.data.copy_(b)
                    self.steps.append(("conv", len(self.convs)))
                    self.convs.append(conv)
                    k, s, pad = w.shape[2], p["stride"], p["padding"]
                    shape = (w.shape[0], 1 + (shape[1] + 2 * pad - k) // s, 1 + (shape[2] + 2 * pad - k) // s)
                elif node.kind == "affine":
                    raise DlibFormatError("affine layer that does not follow a con")
                elif node.kind == "relu":
                    self.steps.append(("relu",))
                elif node.kind in ("max_pool", "avg_pool"):
                    k, s, pad = node.params["k"], node.params["stride"], node.params["padding"]
                    if k == 0:  # *_pool_everything: one window over the whole map
                        self.steps.append(("global_" + node.kind,))
                        shape = (shape[0], 1, 1)
                    else:
                        self.steps.append((node.kind, k, s, pad))
                        shape = (shape[0], 1 + (shape[1] + 2 * pad - k) // s, 1 + (shape[2] + 2 * pad - k) // s)
                elif node.kind == "add_prev":
                    t = tags[node.spec["tag"]]
                    out = tuple(max(a, b) for a, b in zip(shape, t))
                    # dlib's add_prev: output has the max of both shapes; each operand is zero-filled at the end
                    # of the channel, row and column axes (top-left origin preserved), as tt::add does.
                    pad_main = tuple(o - a for o, a in zip(out, shape))
                    pad_tag = tuple(o - a for o, a in zip(out, t))
                    self.steps.append(("add_prev", node.spec["tag"], pad_main, pad_tag))
                    shape = out
                elif node.kind == "fc":
                    w = torch.from_numpy(node.params["weight"].copy())
                    if w.shape[0] != shape[0] * shape[1] * shape[2]:
                        raise DlibFormatError(f"fc expects {w.shape[0]} inputs, the net gives {shape}")
                    self.fc = nn.Linear(w.shape[0], w.shape[1], bias=False)
                    self.fc.weight.data.copy_(w.t())
                    self.steps.append(("fc",))
                    shape = (w.shape[1], 1, 1)
                else:
                    raise AssertionError(node)
                i += 1
            self.output_dim = shape[0]

        @staticmethod
        def _pad(x, pads):
            dc, dh, dw = pads
            if dc == dh == dw == 0:
                return x
            return F.pad(x, (0, dw, 0, dh, 0, dc))

        def forward(self, images):
            x = images
            saved = {}
            for step in self.steps:
                op = step[0]
                if op == "conv":
                    x = self.convs[step[1]](x)
                elif op == "relu":
                    x = F.relu(x)
                elif op == "max_pool":
                    x = F.max_pool2d(x, step[1], step[2], step[3])
                elif op == "avg_pool":
                    x = F.avg_pool2d(x, step[1], step[2], step[3])
                elif op == "global_avg_pool":
                    x = F.adaptive_avg_pool2d(x, 1)
                elif op == "tag":
                    saved[step[1]] = x
                elif op == "skip":
                    x = saved[step[1]]
                elif op == "add_prev":
                    x = self._pad(x, step[2]) + self._pad(saved[step[1]], step[3])
                elif op == "fc":
                    # flatten, not view: OpenCV DNN mis-handles the Reshape a view exports at batch > 1.
                    x = self.fc(torch.flatten(x, 1))
            return x

    model = DlibMetricNet().eval()
    return model


def load_torch_model(dat_path: Path):
    data = dat_path.read_bytes()
    net = parse_dlib_metric_net(data)
    if net.bytes_read != len(data):
        raise DlibFormatError(f"parsed {net.bytes_read} of {len(data)} bytes: trailing data")
    return net, build_torch_model(net)


# ======================================================================================================
# 5. Export
# ======================================================================================================
def export_onnx(model, path: Path) -> None:
    torch = _import_torch()
    path.parent.mkdir(parents=True, exist_ok=True)
    dummy = torch.zeros(1, 3, CHIP_SIZE, CHIP_SIZE)
    with torch.no_grad():
        torch.onnx.export(
            model,
            (dummy,),
            str(path),
            input_names=["images"],
            output_names=["embedding"],
            dynamic_axes={"images": {0: "batch"}, "embedding": {0: "batch"}},
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )
    import onnx

    m = fold_constant_subgraphs(onnx.load(str(path)))
    onnx.checker.check_model(m)
    m.doc_string = (
        "dlib_face_recognition_resnet_model_v1 (dlib, CC0-1.0) converted by training/convert_dlib_embedding.py. "
        "Input images: N x 3 x 150 x 150 RGB float32, (pixel - [122.782, 117.001, 104.298]) / 256 on a dlib "
        "aligned chip (size 150, padding 0.25). Output embedding: N x 128, not L2-normalised; same person if "
        "Euclidean distance < 0.6."
    )
    onnx.save(m, str(path))


def fold_constant_subgraphs(model):
    """Replace every node computed only from constants by an initializer.

    The TorchScript exporter writes each ``F.pad`` as Pad fed by a Constant/Reshape/Slice/Transpose/Cast chain
    that computes the (constant) pad amounts and does not fold it (negative-step Slice). Evaluating those chains
    once with the ONNX reference evaluator leaves a plain graph (Conv, Relu, Add, Pad, pools, Flatten, MatMul)
    that every runtime handles the same way.
    """
    import onnx
    from onnx import helper, numpy_helper
    from onnx.reference import ReferenceEvaluator

    g = model.graph
    known = {init.name for init in g.initializer}
    const_nodes, const_outputs = [], set()
    for node in g.node:  # graph nodes are topologically sorted
        if all((not i) or i in known or i in const_outputs for i in node.input):
            const_nodes.append(node)
            const_outputs.update(node.output)
    if not const_nodes:
        return model
    live = [n for n in g.node if n not in const_nodes]
    needed = sorted({i for n in live for i in n.input if i in const_outputs}
                    | {o.name for o in g.output if o.name in const_outputs})
    sub = helper.make_model(
        helper.make_graph(const_nodes, "consts", [], [helper.make_tensor_value_info(n, 0, None) for n in needed],
                          list(g.initializer)),
        opset_imports=model.opset_import,
    )
    values = ReferenceEvaluator(sub).run(None, {})
    del g.node[:]
    g.node.extend(live)
    g.initializer.extend(numpy_helper.from_array(np.asarray(v), name) for name, v in zip(needed, values))
    used = {i for n in g.node for i in n.input} | {o.name for o in g.output}
    kept = [init for init in g.initializer if init.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    return onnx.shape_inference.infer_shapes(model)


def export_tflite_here(dat_path: Path, out: Path) -> None:
    """Convert with litert-torch (run inside the TFLite venv). Batch fixed to 1."""
    torch = _import_torch()
    try:
        import litert_torch as converter  # type: ignore
    except ImportError:
        import ai_edge_torch as converter  # type: ignore
    _, model = load_torch_model(dat_path)
    sample = (torch.zeros(1, 3, CHIP_SIZE, CHIP_SIZE),)
    edge_model = converter.convert(model, sample)
    out.parent.mkdir(parents=True, exist_ok=True)
    edge_model.export(str(out))
    print(f"wrote {out}")


def export_tflite(dat_path: Path, out: Path, tflite_python: Path | None) -> str | None:
    """Export TFLite in this env if litert-torch imports, otherwise through ``tflite_python``. Returns an error."""
    try:
        import litert_torch  # noqa: F401

        export_tflite_here(dat_path, out)
        return None
    except ImportError:
        pass
    if tflite_python is None or not tflite_python.exists():
        return f"litert-torch is not importable here and no TFLite venv python at {tflite_python}"
    cmd = [str(tflite_python), "-m", "training.convert_dlib_embedding", "--tflite-only", "--dat", str(dat_path),
           "--tflite-out", str(out)]
    print("TFLite export via:", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO_ROOT)
    if proc.returncode != 0 or not out.exists():
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        return "litert-torch conversion failed: " + " | ".join(tail)
    return None


# ======================================================================================================
# 6. Checks against dlib
# ======================================================================================================
def normalise_chips(chips: np.ndarray, mean_rgb) -> np.ndarray:
    """uint8 N x 150 x 150 x 3 RGB chips -> float32 N x 3 x 150 x 150, exactly dlib's input layer arithmetic."""
    x = (chips.astype(np.float32) - np.asarray(mean_rgb, dtype=np.float32)) / np.float32(256.0)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


@dataclass
class Chip:
    source: str  # "people" or "lfw"
    file: str
    person: str
    chip: np.ndarray


def list_people_photos(people_dir: Path) -> list[tuple[str, str]]:
    """(file, person) for single-face photos of the identity set, from labels.csv when present."""
    labels = people_dir / "labels.csv"
    out = []
    if labels.exists():
        with labels.open(newline="") as f:
            for row in csv.DictReader(f):
                # Only rows that say exactly one face: group photos and the video are not single-face photos.
                if (row.get("faces") or "").strip() != "1":
                    continue
                if Path(row["file"]).suffix.lower() in IMAGE_EXTS and (people_dir / row["file"]).exists():
                    out.append((row["file"], row["person"]))
    else:
        for p in sorted(people_dir.iterdir()):
            if p.suffix.lower() in IMAGE_EXTS:
                out.append((p.name, p.stem))
    return out


def list_lfw_photos(lfw_dir: Path, count: int) -> list[tuple[str, str]]:
    """A deterministic spread of ``count`` LFW photos (every k-th row of labels.csv)."""
    labels = lfw_dir / "labels.csv"
    if count <= 0 or not labels.exists():
        return []
    with labels.open(newline="") as f:
        rows = [(r["file"], r.get("identity", "")) for r in csv.DictReader(f)]
    step = max(1, len(rows) // count)
    return [r for r in rows[::step] if (lfw_dir / r[0]).exists()][:count]


def make_chips(dlib, entries: list[tuple[str, str, Path]], source_root: dict[str, Path]) -> tuple[list[Chip], list[str]]:
    """Detect the largest face with dlib's HOG detector and cut a 150 x 150 chip as dlib's examples do."""
    from tqdm import tqdm

    det = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(face_recognition_models_file("shape_predictor_5_face_landmarks.dat")))
    chips, skipped = [], []
    for source, file, person in tqdm(entries, desc="aligning chips", unit="photo", disable=None):
        path = source_root[source] / file
        rgb = dlib.load_rgb_image(str(path))
        rects = det(rgb, 1)
        if len(rects) == 0:
            skipped.append(f"{source}/{file}: no face found")
            continue
        rect = max(rects, key=lambda r: r.area())
        chip = dlib.get_face_chip(rgb, sp(rgb, rect), size=CHIP_SIZE, padding=CHIP_PADDING)
        chips.append(Chip(source, file, person, np.asarray(chip, dtype=np.uint8)))
    return chips, skipped


def median_ms(fn, runs: int = 20, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def run_onnx(path: Path, x: np.ndarray, batch: int = 16) -> np.ndarray:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    outs = [sess.run(["embedding"], {"images": x[i : i + batch]})[0] for i in range(0, len(x), batch)]
    return np.concatenate(outs, axis=0)


def run_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(path))
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    out = interp.get_output_details()[0]
    from tqdm import tqdm

    res = []
    for i in tqdm(range(len(x)), desc=f"tflite {path.name}", unit="chip", disable=None, leave=False):
        sample = x[i : i + 1]
        if tuple(inp["shape"]) != sample.shape:  # e.g. an NHWC signature
            sample = sample.transpose(0, 2, 3, 1)
        interp.set_tensor(inp["index"], sample.astype(np.float32))
        interp.invoke()
        res.append(interp.get_tensor(out["index"]).reshape(1, -1).copy())
    return np.concatenate(res, axis=0)


def compare(ref: np.ndarray, got: np.ndarray) -> dict[str, float]:
    diff = np.abs(ref - got)
    return {
        "max_abs_diff_per_component": float(diff.max()),
        "mean_abs_diff_per_component": float(diff.mean()),
        "max_l2_distance_between_descriptors": float(np.linalg.norm(ref - got, axis=1).max()),
    }


def pair_decisions(ref: np.ndarray, got: np.ndarray, people_idx: list[int], chips: list[Chip]) -> dict[str, Any]:
    """Same/different decisions at the 0.6 threshold on every pair of people/ chips: dlib vs converted."""
    n_pairs = agree = 0
    disagreements = []
    margins = []
    for a in range(len(people_idx)):
        for b in range(a + 1, len(people_idx)):
            i, j = people_idx[a], people_idx[b]
            d_ref = float(np.linalg.norm(ref[i] - ref[j]))
            d_got = float(np.linalg.norm(got[i] - got[j]))
            margins.append(abs(d_ref - SAME_PERSON_THRESHOLD))
            n_pairs += 1
            if (d_ref < SAME_PERSON_THRESHOLD) == (d_got < SAME_PERSON_THRESHOLD):
                agree += 1
            else:
                disagreements.append([chips[i].file, chips[j].file, d_ref, d_got])
    return {
        "pairs": n_pairs,
        "agreements": agree,
        "disagreements": disagreements,
        "closest_dlib_distance_to_threshold": min(margins) if margins else None,
    }


def label_accuracy(ref: np.ndarray, people_idx: list[int], chips: list[Chip]) -> dict[str, Any]:
    """How dlib's own distances relate to the labels (same person < 0.6 < different person)."""
    same, diff = [], []
    for a in range(len(people_idx)):
        for b in range(a + 1, len(people_idx)):
            i, j = people_idx[a], people_idx[b]
            d = float(np.linalg.norm(ref[i] - ref[j]))
            (same if chips[i].person == chips[j].person else diff).append(d)
    return {
        "same_person_pairs": len(same),
        "different_person_pairs": len(diff),
        "max_same_person_distance": max(same) if same else None,
        "min_different_person_distance": min(diff) if diff else None,
    }


# ======================================================================================================
# 7. Reports
# ======================================================================================================
def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def file_info(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    return {"path": str(path.relative_to(REPO_ROOT)) if path.is_relative_to(REPO_ROOT) else str(path),
            "sha256": sha256(path), "bytes": path.stat().st_size}


def write_markdown(report: dict[str, Any], path: Path) -> None:
    src, outs, chk = report["source"], report["outputs"], report.get("check", {})
    lines = [
        "# dlib face-recognition ResNet -> ONNX / TFLite",
        "",
        "Produced by `training/convert_dlib_embedding.py` (parses dlib's `.dat` directly, rebuilds the net in "
        "PyTorch, exports).",
        "",
        "## Source",
        f"- Package: {src['package']}, file `{src['file']}`",
        f"- sha256 `{src['sha256']}`, {src['bytes']:,} bytes",
        f"- Licence: {src['license']} (dlib's face recognition model, public domain dedication)",
        "",
        "## Model contract",
        f"- Input `images`: float32 N x 3 x 150 x 150, RGB, `(pixel - {list(report['input']['mean_rgb'])}) / 256`, "
        "on a dlib aligned chip (`get_face_chip(size=150, padding=0.25)`, 5-point landmarks). "
        "**The caller normalises**; the model has no preprocessing inside.",
        "- Output `embedding`: float32 N x 128, **not** L2-normalised (same as dlib's descriptor); same person "
        "when the Euclidean distance is < 0.6.",
        "- ONNX: opset 17, dynamic batch. TFLite: batch fixed to 1.",
        "",
        "## Conversion notes",
        "- Each `affine` (dlib's inference batch-norm) is folded into the `con` before it.",
        "- dlib's `add_prev` adds tensors of different shapes: the output takes the larger size on every axis and "
        "each operand is zero-filled in its trailing channels, rows and columns (top-left origin kept). It "
        "matters here: in the 128->256 and 256->256 down-sampling blocks the conv branch is 3x3 / 1x1 while the "
        "avg-pooled shortcut is 4x4 / 2x2, and the shortcut has half the channels in the first three. The final "
        "global average therefore runs over a 2x2 map whose conv contribution is only in the top-left cell. "
        "The agreement below (< 1e-6) confirms this reading.",
        "",
        "## Outputs",
    ]
    for name, info in outs.items():
        if info:
            lines.append(f"- `{info['path']}`: {info['bytes']:,} bytes, sha256 `{info['sha256']}`")
        else:
            lines.append(f"- {name}: not produced ({report.get('tflite_error') or 'see log'})")
    lines += ["", "## Check against dlib " + report.get("dlib_version", "")]
    if not chk or chk.get("skipped"):
        lines.append(f"- skipped: {chk.get('skipped', 'not run')}")
    else:
        lines.append(f"- Chips: {chk['n_chips']} ({chk['n_people_chips']} people/ single-face photos, "
                     f"{chk['n_lfw_chips']} LFW photos); skipped photos: {len(chk['skipped_photos'])}")
        for name in ("onnx_vs_dlib", "tflite_vs_dlib", "tflite_vs_onnx"):
            c = chk.get(name)
            if c:
                lines.append(f"- {name}: max |diff| per component {c['max_abs_diff_per_component']:.3g}, "
                             f"mean {c['mean_abs_diff_per_component']:.3g}, max L2 between descriptors "
                             f"{c['max_l2_distance_between_descriptors']:.3g}")
        for name in ("pairs_onnx", "pairs_tflite"):
            p = chk.get(name)
            if p:
                lines.append(f"- {name}: same/different decisions at 0.6 identical on {p['agreements']} of "
                             f"{p['pairs']} pairs of people/ photos (closest dlib distance to the threshold: "
                             f"{p['closest_dlib_distance_to_threshold']:.3f})")
        lab = chk.get("labels")
        if lab:
            lines.append(f"- dlib on people/ labels: max same-person distance {lab['max_same_person_distance']:.3f}, "
                         f"min different-person distance {lab['min_different_person_distance']:.3f}")
    t = report.get("timing_ms_per_face_batch1")
    if t:
        lines += ["", f"## Speed (ms/face, batch 1, median of {t['runs']}, {t['machine']})"]
        for k, v in t.items():
            if isinstance(v, float):
                lines.append(f"- {k}: {v:.1f}")
    path.write_text("\n".join(lines) + "\n")


# ======================================================================================================
# main
# ======================================================================================================
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dat", type=Path, default=None, help="dlib .dat (default: face_recognition_models')")
    ap.add_argument("--onnx-out", type=Path, default=DEFAULT_ONNX)
    ap.add_argument("--tflite-out", type=Path, default=DEFAULT_TFLITE)
    ap.add_argument("--tflite-python", type=Path, default=DEFAULT_TFLITE_PYTHON,
                    help="python of a venv with torch + litert-torch, used when litert-torch is not importable here")
    ap.add_argument("--skip-tflite", action="store_true")
    ap.add_argument("--tflite-only", action="store_true", help="internal: only convert to TFLite, in this env")
    ap.add_argument("--check-images", type=Path, default=DEFAULT_PEOPLE_DIR,
                    help="identity set folder with labels.csv (file, person, faces ...)")
    ap.add_argument("--lfw-dir", type=Path, default=DEFAULT_LFW_DIR)
    ap.add_argument("--lfw-count", type=int, default=50)
    ap.add_argument("--timing-runs", type=int, default=20)
    ap.add_argument("--report-dir", type=Path, default=REPORT_DIR)
    args = ap.parse_args(argv)

    dat = args.dat or default_dat_path()
    if args.tflite_only:
        export_tflite_here(dat, args.tflite_out)
        return 0

    torch = _import_torch()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    net, model = load_torch_model(dat)
    print(f"parsed {dat.name}: {len(net.nodes)} nodes, mean_rgb={net.mean_rgb}, input={net.input_size}, "
          f"loss={net.loss}")
    export_onnx(model, args.onnx_out)
    print(f"wrote {args.onnx_out}")

    tflite_error = None
    if args.skip_tflite:
        tflite_error = "skipped (--skip-tflite)"
    else:
        tflite_error = export_tflite(dat, args.tflite_out, args.tflite_python)
        print("TFLite:", tflite_error or f"wrote {args.tflite_out}")
    have_tflite = tflite_error is None and args.tflite_out.exists()

    report: dict[str, Any] = {
        "source": {"package": SOURCE_PACKAGE, "file": DAT_FILE_NAME, "sha256": sha256(dat),
                   "bytes": dat.stat().st_size, "license": "CC0-1.0"},
        "input": {"name": "images", "shape": ["N", 3, CHIP_SIZE, CHIP_SIZE], "layout": "NCHW RGB float32",
                  "mean_rgb": [round(m, 4) for m in net.mean_rgb], "scale": "1/256", "normalised_by": "caller",
                  "chip": {"size": CHIP_SIZE, "padding": CHIP_PADDING, "landmarks": "dlib 5-point"}},
        "output": {"name": "embedding", "shape": ["N", 128], "l2_normalised": False,
                   "same_person_threshold_l2": SAME_PERSON_THRESHOLD},
        "outputs": {"onnx": file_info(args.onnx_out), "tflite": file_info(args.tflite_out) if have_tflite else None},
        "tflite_error": tflite_error,
    }

    check: dict[str, Any] = {}
    try:
        import dlib
        report["dlib_version"] = dlib.__version__
    except ImportError:
        dlib = None
    if dlib is None:
        check["skipped"] = "dlib is not installed: numerical check against dlib skipped"
    elif not args.check_images.is_dir():
        check["skipped"] = f"check-images folder {args.check_images} is absent: numerical check skipped"
    if check.get("skipped"):
        print("SKIP:", check["skipped"])
    else:
        people = [("people", f, p) for f, p in list_people_photos(args.check_images)]
        lfw = [("lfw", f, p) for f, p in list_lfw_photos(args.lfw_dir, args.lfw_count)] if args.lfw_dir.is_dir() else []
        chips, skipped = make_chips(dlib, people + lfw, {"people": args.check_images, "lfw": args.lfw_dir})
        x = normalise_chips(np.stack([c.chip for c in chips]), net.mean_rgb)
        from tqdm import tqdm

        facerec = dlib.face_recognition_model_v1(str(dat))
        ref = np.stack([np.asarray(facerec.compute_face_descriptor(c.chip), dtype=np.float32)
                        for c in tqdm(chips, desc="dlib descriptors", unit="chip")])
        onnx_out = run_onnx(args.onnx_out, x)
        people_idx = [i for i, c in enumerate(chips) if c.source == "people"]
        check.update({
            "n_chips": len(chips),
            "n_people_chips": len(people_idx),
            "n_lfw_chips": len(chips) - len(people_idx),
            "skipped_photos": skipped,
            "onnx_vs_dlib": compare(ref, onnx_out),
            "pairs_onnx": pair_decisions(ref, onnx_out, people_idx, chips),
            "labels": label_accuracy(ref, people_idx, chips),
        })
        if have_tflite:
            tfl = run_tflite(args.tflite_out, x)
            check["tflite_vs_dlib"] = compare(ref, tfl)
            check["tflite_vs_onnx"] = compare(onnx_out, tfl)
            check["pairs_tflite"] = pair_decisions(ref, tfl, people_idx, chips)

        # Timing: one chip at a time, as the appliance does per face.
        import onnxruntime as ort

        so = ort.SessionOptions()
        sess = ort.InferenceSession(str(args.onnx_out), so, providers=["CPUExecutionProvider"])
        one_chip, one_x = chips[0].chip, x[:1]
        timing = {
            "runs": args.timing_runs,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or 'cpu'}",
            "dlib": median_ms(lambda: facerec.compute_face_descriptor(one_chip), args.timing_runs),
            "onnxruntime": median_ms(lambda: sess.run(["embedding"], {"images": one_x}), args.timing_runs),
        }
        if have_tflite:
            from ai_edge_litert.interpreter import Interpreter

            it = Interpreter(model_path=str(args.tflite_out))
            it.allocate_tensors()
            idx_in, idx_out = it.get_input_details()[0]["index"], it.get_output_details()[0]["index"]

            def tfl_once():
                it.set_tensor(idx_in, one_x)
                it.invoke()
                it.get_tensor(idx_out)

            timing["tflite"] = median_ms(tfl_once, args.timing_runs)
        report["timing_ms_per_face_batch1"] = timing
    report["check"] = check

    args.report_dir.mkdir(parents=True, exist_ok=True)
    (args.report_dir / "embedding_conversion.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, args.report_dir / "embedding_conversion.md")
    print(json.dumps({k: report[k] for k in ("outputs", "tflite_error", "check") if k in report}, indent=2))
    if "timing_ms_per_face_batch1" in report:
        print("timing ms/face (batch 1, median):", json.dumps(report["timing_ms_per_face_batch1"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
