"""Build every model the config asks for on the backend chosen for this hardware."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ..backends import ModelLoadError, file_format, load_backend
from ..backends.select import Board, Runtimes, choose_backend, model_threads, probe_board, probe_runtimes
from ..config import AppConfig
from ..detect import Detector, Landmarker, detector_class
from .age import AgeModel
from .embedding import EmbeddingModel
from .reid import ReidEmbeddingModel
from .gender import GenderModel
from .catalog import EMBEDDINGS
from .manifest import load_manifest, model_files, verify_file

# The class that runs each embedding model of the catalog (same interface: model_id, metric, predict_chips).
EMBEDDING_CLASSES = {model.model_id: model for model in (EmbeddingModel, ReidEmbeddingModel)}



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
    detector: Detector              # for still photos (edge analyze, edge enroll)
    video_detector: Detector        # for frames of a stream: may use fastpath.video_* settings
    landmarker: Landmarker | None   # O-Net points for detectors without landmarks
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
    embedding_name = EMBEDDINGS[cfg.identity.model].manifest_name
    names = ["age", "gender", embedding_name, *detector_class(cfg.detector.type).backend_models]
    result = []
    for name in names:
        files = model_files(cfg.models.dir, manifest, name)
        requested = override.get("embedding" if name == embedding_name else name) \
            or (cfg.models.detector_backend if name.startswith("mtcnn") else None) or cfg.models.backend
        key, why = choose_backend(board, runtimes, set(files), requested)
        fmt = file_format(key)
        if fmt not in files:
            raise ModelLoadError(f"model {name}: backend {key} needs a {fmt} file, the manifest has {sorted(files)}")
        result.append((name, key, files[fmt], why))
    return result


def load_models(cfg: AppConfig, board: Board | None = None, runtimes: Runtimes | None = None) -> LoadedModels:
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
    detector_type = detector_class(cfg.detector.type)
    files = {}
    manifest = load_manifest(cfg.models.dir)
    for name in detector_type.file_models:
        file = model_files(cfg.models.dir, manifest, name)["onnx"]
        if cfg.models.verify_hashes:
            verify_file(file)
        files[name] = file.path
        decisions.append(Decision(name, "opencv", "cv2.FaceDetectorYN", file.path,
                                  f"{cfg.detector.type} runs in OpenCV's own detector API"))
    detector = detector_type.from_config(cfg.detector, backends, files)
    video_detector = detector_type.from_config(cfg.detector, backends, files, fastpath=cfg.fastpath)
    landmarker = None if detector_type.gives_landmarks else \
        Landmarker(backends["mtcnn_onet"], cfg.detector.haar_verify_score)
    embedding = EMBEDDING_CLASSES[cfg.identity.model](backends[EMBEDDINGS[cfg.identity.model].manifest_name])
    return LoadedModels(AgeModel(backends["age"]), GenderModel(backends["gender"]),
                        embedding, detector, video_detector, landmarker, board, runtimes, decisions)
