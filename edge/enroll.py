"""Enrolment and erasure of people, shared by `edge enroll`, the demo, the people page, the JSON API and
training/enroll_folder.py: the one name rule, the per-photo checks (one face, an image, not too large, not
already enrolled) and what forgetting a person or naming / forgetting a group of unknown faces erases.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from .images import MAX_BYTES, ImageError, decode_image
from . import unknowns
from .snapshots import erase_thumbnails, person_slug, thumbnail_dir

NAME_RULE = "1-100 characters, no '/', '#', '+' or line breaks"
PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
# Photo statuses that leave nothing wrong behind: a duplicate is already stored.
FINE = ("ok", "duplicate")


class BadName(ValueError):
    """A person's name that cannot be used (it becomes an MQTT topic level and a file name part)."""


def valid_name(name: object) -> bool:
    return isinstance(name, str) and 0 < len(name) <= 100 and name == name.strip() and name.isprintable() \
        and not any(c in name for c in "/#+")


def checked_name(raw: str) -> str:
    """The name with surrounding spaces removed, or BadName saying the rule."""
    name = raw.strip() if isinstance(raw, str) else raw
    if not valid_name(name):
        raise BadName(f"invalid name {raw!r}: {NAME_RULE}")
    return name


def photos_in(paths: Iterable[Path]) -> list[Path]:
    """Files as given; a folder stands for its photos (by suffix, hidden files left out), sorted."""
    found = []
    for path in paths:
        if path.is_dir():
            found += sorted(p for p in path.iterdir()
                            if p.is_file() and p.suffix.lower() in PHOTO_SUFFIXES and not p.name.startswith("."))
        else:
            found.append(path)
    return found


@dataclass(frozen=True)
class PhotoResult:
    photo: str                 # the path, or an upload's file name
    status: str                # ok, duplicate, no_face, several_faces, not_an_image, damaged, too_large, missing
    message: str               # one line naming the photo
    sha256: str = ""
    embedding: np.ndarray | None = field(default=None, repr=False, compare=False)

    def as_dict(self) -> dict:
        return {"photo": self.photo, "status": self.status, "message": self.message}


@dataclass(frozen=True)
class Enrolment:
    name: str
    photos: tuple[PhotoResult, ...]
    stored: int                # embeddings written now
    refused: bool              # strict and a photo was bad: nothing was written

    @property
    def bad(self) -> list[PhotoResult]:
        return [p for p in self.photos if p.status not in FINE]

    def summary(self) -> str:
        if self.refused:
            return f"{self.name} not enrolled: {len(self.bad)} of {len(self.photos)} photo(s) unusable " \
                   "and --strict is on (nothing was saved)"
        if not self.stored:
            already = sum(p.status == "duplicate" for p in self.photos)
            return f"{self.name} not enrolled: no usable photo" + (f" ({already} already enrolled)" if already else "")
        skipped = f", {len(self.photos) - self.stored} skipped" if self.stored < len(self.photos) else ""
        return f"enrolled {self.name} from {self.stored} photo(s){skipped}"

    def as_dict(self) -> dict:
        return {"name": self.name, "stored": self.stored, "refused": self.refused, "summary": self.summary(),
                "photos": [p.as_dict() for p in self.photos]}


def check_photo(models, label: str, data: bytes) -> PhotoResult:
    """Decode one photo and embed its single face; any other outcome is a result, not an exception."""
    from .pipeline import analyze_faces
    digest = hashlib.sha256(data).hexdigest()
    try:
        image = decode_image(data, label)
    except ImageError as exc:
        return PhotoResult(label, exc.kind, str(exc), digest)
    _, faces = analyze_faces(models, image)
    if len(faces) == 1:
        return PhotoResult(label, "ok", f"{label}: one face", digest, faces[0].embedding)
    if not faces:
        return PhotoResult(label, "no_face", f"{label}: no face found", digest)
    return PhotoResult(label, "several_faces",
                       f"{label}: {len(faces)} faces found; a photo must show exactly one face", digest)


def read_photo(path: Path) -> tuple[str, bytes | PhotoResult]:
    """A file's bytes, or the result that says why it cannot be read."""
    label = str(path)
    try:
        if not path.is_file():
            return label, PhotoResult(label, "missing", f"{label}: no such file")
        if path.stat().st_size > MAX_BYTES:
            return label, PhotoResult(label, "too_large",
                                      f"{label}: file is larger than {MAX_BYTES // (1024 * 1024)} MB")
        return label, path.read_bytes()
    except OSError as exc:
        return label, PhotoResult(label, "missing", f"{label}: cannot read ({exc.strerror})")


def enroll(models, store, name: str, photos: Iterable[Path | tuple[str, bytes]], strict: bool = False,
           progress: Callable[[Iterable], Iterable] | None = None) -> Enrolment:
    """Add the usable photos of `photos` (paths, or (label, bytes) uploads) to `name` in one transaction.

    A bad photo is reported and left out; with `strict`, one bad photo leaves everything out. A photo
    whose content is already enrolled (or appears twice in the batch) is reported and stored once.
    Raises BadName before any photo is looked at."""
    name = checked_name(name)
    photos = list(photos)
    results: list[PhotoResult] = []
    seen: dict[str, str] = {}
    for item in (progress(photos) if progress else photos):
        label, data = read_photo(item) if isinstance(item, Path) else item
        if isinstance(data, PhotoResult):
            results.append(data)
            continue
        digest = hashlib.sha256(data).hexdigest()
        owner = store.photo_owner(digest, models.embedding.model_id)
        if digest in seen or owner is not None:
            where = f"same photo as {seen[digest]} in this batch" if digest in seen \
                else f"the same photo is already enrolled as {owner}"
            results.append(PhotoResult(label, "duplicate", f"{label}: {where}; not stored again", digest))
            continue
        seen[digest] = label
        results.append(check_photo(models, label, data))
    good = [r for r in results if r.status == "ok"]
    refused = strict and any(r.status not in FINE for r in results)
    if good and not refused:
        store.enroll(name, np.stack([r.embedding for r in good]), [f"sha256:{r.sha256} {r.photo}" for r in good],
                     model=models.embedding.model_id)
    return Enrolment(name, tuple(results), 0 if refused else len(good), refused)


def forget_person(cfg, store, name: str) -> bool:
    """Erase a person: embeddings, sightings, queued events and face thumbnails (see erase_person)."""
    return bool(erase_person(cfg, store, name))


def erase_person(cfg, store, name: str):
    """Store.forget with the person's thumbnails as its files: resumable, so calling it again finishes an
    erasure that a crash or a full disk interrupted; returns the store's Erasure (false: nobody of that name)."""
    return store.forget(name, erase_files=lambda: erase_thumbnails(cfg, name))


def name_unknown_group(cfg, store, group, name: str) -> int:
    """Enrol a group of unknown tracks (edge/unknowns.py Cluster) as `name`; their thumbnails become the
    person's, so forgetting the person erases them. Raises BadName."""
    name = checked_name(name)
    count = store.enroll_unknowns(name, group.ids)
    unknowns.rename_thumbnails(thumbnail_dir(cfg), group.tracks, person_slug(name))
    return count


def forget_unknown_group(cfg, store, group) -> int:
    """Erase a group of unknown tracks: their embeddings, then their thumbnails."""
    count = store.forget_unknowns(group.ids)
    unknowns.erase_thumbnails(thumbnail_dir(cfg), group.tracks)
    return count
