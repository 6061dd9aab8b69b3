"""Every stored embedding records the model that made it; matching never crosses models (issue 11, part 3)."""

from __future__ import annotations

import sqlite3

import numpy as np
import sqlite_utils

from edge.identify import match_one
from edge.store import MIGRATIONS, Store


def _schema3_database(path, vector: np.ndarray) -> None:
    """A database as the previous release left it: schema 3, vectors without a model column."""
    db = sqlite_utils.Database(sqlite3.connect(str(path), isolation_level=None))
    for migration in MIGRATIONS[:3]:
        migration(db)
    db.execute("PRAGMA user_version = 3")
    person = db["identities"].insert({"name": "ada", "created_at": 1.0}).last_pk
    db["embeddings"].insert({"identity_id": person, "vector": vector.tobytes(), "source": "ada.jpg",
                             "created_at": 1.0})
    db.conn.close()


def test_an_old_gallery_is_migrated_as_dlib_vectors_and_reported_under_another_model(tmp_path):
    vector = np.linspace(-0.1, 0.1, 128, dtype=np.float32)
    _schema3_database(tmp_path / "edge.db", vector)
    store = Store(tmp_path / "edge.db")
    assert store.schema_version == len(MIGRATIONS)
    # The old rows are the dlib model's: matched under it ...
    assert match_one(vector, store.gallery("dlib_resnet_v1"), 0.6).name == "ada"
    # ... and never under another model, where the person is reported as needing enrolment again.
    assert len(store.gallery("reid_0095").vectors) == 0
    assert store.needing_reenrolment("reid_0095") == {"ada": ["dlib_resnet_v1"]}
    assert store.needing_reenrolment("dlib_resnet_v1") == {}
    row = store.identities("reid_0095")[0]
    assert row["embeddings"] == 0 and row["other_models"] == ["dlib_resnet_v1"]


def test_vectors_of_two_models_live_side_by_side_and_are_matched_separately(tmp_path):
    store = Store(tmp_path / "edge.db")
    rng = np.random.default_rng(1)
    dlib_vector = rng.normal(size=128).astype(np.float32) * 0.05
    unit = rng.normal(size=256).astype(np.float32)
    unit /= np.linalg.norm(unit)
    store.enroll("bob", dlib_vector[None], ["bob.jpg"], model="dlib_resnet_v1")
    store.enroll("bob", unit[None], ["bob.jpg"], model="reid_0095")
    assert store.gallery("dlib_resnet_v1").vectors.shape == (1, 128)
    assert store.gallery("reid_0095").vectors.shape == (1, 256)
    assert match_one(unit, store.gallery("reid_0095"), 0.5, "cosine").name == "bob"
    assert store.identities("reid_0095")[0]["models"] == ["dlib_resnet_v1", "reid_0095"]
    # Forgetting erases the person's vectors of every model.
    store.forget("bob")
    assert len(store.gallery("dlib_resnet_v1").vectors) == len(store.gallery("reid_0095").vectors) == 0


def test_unknown_faces_are_kept_per_model(tmp_path):
    store = Store(tmp_path / "edge.db")
    sighting = {"track": "t1", "camera": "camera", "first_seen": 1.0, "last_seen": 2.0, "frames": 5}
    store.keep_unknown(sighting, np.ones(256, np.float32) / 16, 5, model="reid_0095")
    assert [r["track"] for r in store.unknown_faces("reid_0095")] == ["t1"]
    assert store.unknown_faces("dlib_resnet_v1") == []
