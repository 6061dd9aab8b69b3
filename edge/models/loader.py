"""Build every model the config asks for on the backend chosen for this hardware."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..backends import ModelLoadError, load_backend
from ..backends.select import Board, Runtimes, choose_backend, model_threads, probe_board, probe_runtimes
from ..config import AppConfig
from .age import AgeModel
from .embedding import EmbeddingModel
from .gender import GenderModel
from .manifest import load_manifest, model_files, verify_file

FORMAT_OF = {"onnxruntime": "onnx", "opencv": "onnx", "litert": "tflite"}


@dataclass(frozen=True)
class Decision:
    model: str
    backend: str
    device: str
    file: Path
    why: str


@dataclass
class LoadedModels:
    age: AgeModel
    gender: GenderModel
    embedding: EmbeddingModel
    detector: object
    landmarker: object | None
    board: Board
    runtimes: Runtimes
    decisions: list[Decision] = field(default_factory=list)


def plan(cfg: AppConfig, board: Board | None = None, runtimes: Runtimes | None = None) -> list[tuple[str, str, Path, str]]:
    """(model, backend key, file, why) for every model, without loading anything."""
    board = board or probe_board()
    runtimes = runtimes or probe_runtimes()
    manifest = load_manifest(cfg.models.dir)
    override = {"age": cfg.models.age_backend, "gender": cfg.models.gender_backend,
                "embedding": cfg.models.embedding_backend}
    names = ["age", "gender", "embedding", "mtcnn_onet"]
    if cfg.detector.type == "mtcnn":
        names += ["mtcnn_pnet", "mtcnn_rnet"]
    result = []
    for name in names:
        files = model_files(cfg.models.dir, manifest, name)
        requested = override.get(name) or (cfg.models.detector_backend if name.startswith("mtcnn") else None) \
            or cfg.models.backend
        key, why = choose_backend(board, runtimes, set(files), requested)
        fmt = FORMAT_OF[key]
        if fmt not in files:
            raise ModelLoadError(f"model {name}: backend {key} needs a {fmt} file, the manifest has {sorted(files)}")
        result.append((name, key, files[fmt], why))
    return result


def load_models(cfg: AppConfig, board: Board | None = None, runtimes: Runtimes | None = None) -> LoadedModels:
    from ..detect import Landmarker
    from ..detect.haar import HaarDetector

    board = board or probe_board()
    runtimes = runtimes or probe_runtimes()
    backends, decisions = {}, []
    for name, key, file, why in plan(cfg, board, runtimes):
        if cfg.models.verify_hashes:
            verify_file(file)
        path = file.path
        edgetpu_variant = path.with_name(path.stem + "_edgetpu.tflite")
        use_edgetpu = key == "litert" and runtimes.edgetpu and edgetpu_variant.is_file()
        backend = load_backend(key, edgetpu_variant if use_edgetpu else path, threads=model_threads(cfg.models.threads),
                               providers=cfg.models.onnx_providers, edgetpu=use_edgetpu,
                               cache_dir=cfg.store.path.parent / "tensorrt")
        backends[name] = backend
        decisions.append(Decision(name, key, backend.device, path, why))
    if cfg.detector.type == "mtcnn":
        from ..detect.mtcnn import MtcnnDetector
        detector = MtcnnDetector(backends["mtcnn_pnet"], backends["mtcnn_rnet"], backends["mtcnn_onet"],
                                 min_face=cfg.detector.min_face, thresholds=cfg.detector.mtcnn_thresholds)
        landmarker = None
    else:
        detector = HaarDetector(cfg.detector.detect_width, cfg.detector.min_face, cfg.detector.scale_factor,
                                cfg.detector.min_neighbors)
        landmarker = Landmarker(backends["mtcnn_onet"], cfg.detector.haar_verify_score)
    return LoadedModels(AgeModel(backends["age"]), GenderModel(backends["gender"]),
                        EmbeddingModel(backends["embedding"]), detector, landmarker, board, runtimes, decisions)
