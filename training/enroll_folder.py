"""Bulk enrollment from a folder tree: one sub-folder per person, named after them, holding their photos.

Each person goes through the same code path as `edge enroll NAME PHOTO...` (edge.enroll.enroll): every
photo must hold exactly one face, otherwise nothing is saved for that person (the others still are) unless
--skip-bad-photos leaves the bad photos out. The same photo is never stored twice.
Folders starting with "_" or "." are skipped (group photos, videos).

    python -m training.enroll_folder PEOPLE_DIR [--set store.path=/var/lib/edge/edge.db] [--skip-existing]
        [--skip-bad-photos]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tqdm import tqdm

from edge.cli import EXIT_INPUT
from edge.config import ConfigError, load_config
from edge.enroll import BadName, enroll, photos_in
from edge.models.loader import load_models
from edge.store import Store


def people_in(folder: Path) -> dict[str, list[Path]]:
    return {person.name: photos_in([person])
            for person in sorted(folder.iterdir()) if person.is_dir() and person.name[0] not in "._"}


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
            result = enroll(models, store, name, photos, strict=not args.skip_bad_photos)
        except BadName as exc:
            tqdm.write(f"{name}: not enrolled: {exc}")
            failed.append(name)
            continue
        for photo in result.bad:
            tqdm.write(("left out: " if args.skip_bad_photos else f"{name}: ") + photo.message)
        if result.stored or not result.bad:
            enrolled.append(name)
        else:
            tqdm.write(result.summary())
            failed.append(name)
    print(f"enrolled {len(enrolled)} people into {cfg.store.path}" + (f", skipped {len(skipped)} already enrolled"
          if skipped else "") + (f"; failed: {', '.join(failed)}" if failed else ""))
    return EXIT_INPUT if failed else 0


if __name__ == "__main__":
    sys.exit(main())
