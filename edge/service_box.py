"""What a command may write on a service box: the database belongs to the service user, and nobody else
(root included) should write it, or the daemon finds files it cannot open."""

from __future__ import annotations

import os
import pwd
import stat
from pathlib import Path

from .store import StoreError


def _user(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def store_owner(path: Path) -> int | None:
    """The uid that owns the database (or, before it exists, its folder); None when the caller may write it."""
    me = os.geteuid()
    try:
        return None if path.stat().st_uid == me else path.stat().st_uid
    except PermissionError:        # /var/lib/edge is 0700 edge: another user cannot even look inside
        try:
            return path.parent.stat().st_uid
        except OSError:
            return None
    except FileNotFoundError:
        pass
    parent = path.parent
    try:
        mode = parent.stat()
    except OSError:
        return None                # not there yet: Store creates it (or names the error)
    # A folder of another user (the service's state directory) is theirs, even when root could write into
    # it; a shared sticky folder like /tmp is everyone's.
    if mode.st_uid == me or (mode.st_mode & stat.S_ISVTX and mode.st_mode & stat.S_IWOTH):
        return None
    return mode.st_uid


def check_store_owner(path: Path, command_line: str) -> None:
    """Raise StoreError naming the owner and the command to run instead, when the database is someone else's."""
    owner = store_owner(path)
    if owner is None:
        return
    name = _user(owner)
    raise StoreError(f"{path} belongs to user {name} (the service's database); writing it as "
                     f"{_user(os.geteuid())} would leave files the service cannot open: run the command as "
                     f"{name}, e.g. sudo -u {name} {command_line}")
