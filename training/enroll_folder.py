"""Bulk enrollment from a folder tree: one sub-folder per person, named after them, holding their photos.

Each person goes through the same code path as `edge enroll NAME PHOTO...` (edge.cli._enroll): every
photo must hold exactly one face, otherwise nothing is saved for that person (the others still are).
Folders starting with "_" or "." are skipped (group photos, videos).

    python -m training.enroll_folder PEOPLE_DIR [--set store.path=/var/lib/edge/edge.db] [--skip-existing]
        [--skip-bad-photos]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from edge.cli import EXIT_INPUT, _enroll, _faces_in
from edge.config import ConfigError, load_config
from edge.images import ImageError
from edge.models.loader import load_models
from edge.store import Store

PHOTO_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}


def people_in(folder: Path) -> dict[str, list[Path]]:
    return {person.name: sorted(p for p in person.iterdir() if p.suffix.lower() in PHOTO_SUFFIXES)
            for person in sorted(folder.iterdir()) if person.is_dir() and person.name[0] not in "._"}


def usable_photos(models, photos: list[Path]) -> list[Path]:
    """Photos holding exactly one face (the others are named and left out)."""
    keep = []
    for photo in photos:
        try:
            count = len(_faces_in(models, photo))
        except ImageError as exc:
            tqdm.write(f"left out: {exc}")
            continue
        if count == 1:
            keep.append(photo)
        else:
            tqdm.write(f"left out: {photo}: {count} faces")
    return keep


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--config", type=Path)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY.PATH=VALUE")
    parser.add_argument("--skip-existing", action="store_true", help="leave people already enrolled untouched")
    parser.add_argument("--skip-bad-photos", action="store_true",
                        help="leave out photos without exactly one face instead of failing the person")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, args.overrides)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    if not args.folder.is_dir():
        print(f"{args.folder}: not a folder", file=sys.stderr)
        return EXIT_INPUT
    people = {name: photos for name, photos in people_in(args.folder).items() if photos}
    models = load_models(cfg)
    store = Store(cfg.store.path)
    enrolled, failed, skipped = [], [], []
    for name, photos in tqdm(people.items(), desc="enrolling", unit="person"):
        if args.skip_existing and store.identity_id(name) is not None:
            skipped.append(name)
            continue
        try:
            if len(name) > 100 or any(c in name for c in "/#+\n\r\0"):   # edge enroll's name rule
                raise ImageError(f"invalid name {name!r}: 1-100 characters, no '/', '#', '+' or newlines")
            if args.skip_bad_photos:
                photos = usable_photos(models, photos)
                if not photos:
                    raise ImageError("no photo holds exactly one face")
            _enroll(models, store, name, photos)
            enrolled.append(name)
        except ImageError as exc:
            tqdm.write(f"{name}: not enrolled: {exc}")
            failed.append(name)
    print(f"enrolled {len(enrolled)} people into {cfg.store.path}" + (f", skipped {len(skipped)} already enrolled"
          if skipped else "") + (f"; failed: {', '.join(failed)}" if failed else ""))
    return EXIT_INPUT if failed else 0


if __name__ == "__main__":
    sys.exit(main())
