"""Still-photo analysis shared by `edge analyze` and the web API's recognise call: the faces of one image
and the one JSON shape they are reported in."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .images import load_image


def faces_in(models, image: Path | np.ndarray) -> list:
    """Every face of a photo (a path, or a BGR array already decoded), with age, gender and embedding."""
    from .pipeline import analyze_faces
    _, faces = analyze_faces(models, load_image(image) if isinstance(image, (str, Path)) else image)
    return faces


def face_results(faces, gallery, threshold: float, metric: str = "l2", margin: float = 0.0) -> list[dict]:
    """`edge analyze --json`'s "faces" list: box, age, gender and the enrolled person matched (or null)."""
    from .events import analysis_record
    from .identify import match_one
    return [analysis_record(face, None if gallery is None else match_one(face.embedding, gallery, threshold, metric,
                                                                          margin)) for face in faces]
