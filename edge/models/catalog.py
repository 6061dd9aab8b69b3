"""The embedding models a box can use, with what matching needs to know about each: metric and thresholds.

Config validation reads this table (no runtime import); `edge.models.loader` builds the model class.
Thresholds are distances: L2 for dlib's vectors, 1 - cosine similarity for unit vectors.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class EmbeddingInfo:
    model_id: str            # stored with every vector; vectors of different ids are never compared
    manifest_name: str       # entry in models/manifest.yaml
    metric: Literal["l2", "cosine"]
    threshold: float         # same person below this distance (default of identity.threshold)
    margin: float            # ... and the next person at least this much further (default of identity.margin)
    cluster_threshold: float  # unknown tracks grouped below this distance (default of unknowns.cluster_threshold)
    why: str


EMBEDDINGS: dict[str, EmbeddingInfo] = {info.model_id: info for info in (
    EmbeddingInfo("dlib_resnet_v1", "embedding", "l2", 0.6, 0.0, 0.5,
                  "dlib's 2017 ResNet, 128-D: dlib's own threshold 0.6; 0.5 keeps unknown groups pure "
                  "(README, Unknown faces). Weak in an open set: 56% of strangers named with 225 enrolled "
                  "at 0.6 (training/reports/openset.md)."),
    EmbeddingInfo("reid_0095", "embedding_reid_0095", "cosine", 0.53, 0.0, 0.5,
                  "Intel Open Model Zoo face-reidentification-retail-0095, 256-D unit vectors. 0.53 = the "
                  "threshold that let 1% of strangers in with 225 people enrolled (chosen on other splits; "
                  "measured 0.81% / 94.9% named, 10 enrolled 0.09%); the margin rule gained nothing "
                  "(training/reports/openset_reid_yunet.md). Unknown groups at 0.5: 212 groups for 200 LFW people, "
                  "none mixing two people (0.45: 225, 0.55: 206); all 1,241 LFW people: 1,288 groups, purity "
                  "0.997, 12 people merged (training/reports/unknown_clusters_reid_0095.md)."),
)}

DEFAULT_EMBEDDING = "reid_0095"
# The model of every vector stored before vectors recorded their model (database schema 3 and older).
LEGACY_MODEL = "dlib_resnet_v1"
