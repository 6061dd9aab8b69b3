"""What a fleet message must prove before a box applies it: the fleet's signature, a fresh timestamp
and unseen nonce (live messages), the embedding model this box uses, and embeddings that look like one
real face rather than an average of many (README "Fleet trust model").
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import time
from collections import OrderedDict

import numpy as np

from .config import AppConfig, ConfigError

# Per model: dimensions and the L2 norm range of a real face's embedding. dlib ResNet vectors are not unit
# length: 1.27-1.61 on one photo each of 300 LFW people (this project's model); a margin either side.
# reid_0095 vectors are unit length (edge/models/reid.py normalises them). A model missing here is checked
# for finite values and the dimensions of this box's gallery only.
# "centre": an average of many faces sits near the centre of face space: on the same 300 LFW faces, no single
# dlib vector was nearer than 0.47 to the centre of 3-10 others, the average of 120 faces 0.09-0.36 from it.
# Not measured for reid_0095: there only the "matches several people" rule applies.
MODELS = {"dlib_resnet_v1": {"dimensions": 128, "norm": (1.0, 2.0), "centre": 0.40},
          "reid_0095": {"dimensions": 256, "norm": (0.99, 1.01)}}
MIN_PEOPLE_FOR_CENTRE = 3
MAX_NONCES = 20000
MIN_KEY_BYTES = 16


def model_id(cfg: AppConfig) -> str:
    """The embedding model in force (identity.model): fleet messages carry it, vectors of another are ignored."""
    return cfg.identity.model


def l2_threshold(cfg: AppConfig) -> float:
    """identity.threshold as an L2 distance: cosine models' 1 - similarity is L2^2 / 2 between unit vectors."""
    threshold = cfg.identity.threshold
    return float(np.sqrt(2 * threshold)) if cfg.identity.metric == "cosine" else threshold


def canonical(message: dict) -> bytes:
    """The signed bytes: every field but the signature, keys sorted, no spaces (same on every box)."""
    return json.dumps({k: v for k, v in message.items() if k != "sig"}, sort_keys=True,
                      separators=(",", ":")).encode()


class FleetTrust:
    """Signs outgoing messages and decides whether an incoming one is authentic and fresh."""

    def __init__(self, cfg: AppConfig):
        fleet = cfg.fleet
        try:
            self.key = fleet.resolved_key()
        except OSError as exc:
            raise ConfigError(f"config error: fleet.key_file: cannot read {fleet.key_file}: {exc.strerror}") from None
        if self.key is not None and len(self.key) < MIN_KEY_BYTES:
            raise ConfigError(f"config error: fleet.key_file: the fleet key must be at least {MIN_KEY_BYTES} bytes "
                              "(e.g. `head -c 32 /dev/urandom | base64`)")
        self.skew_ms = fleet.max_clock_skew_s * 1000
        self._nonces: OrderedDict[str, int] = OrderedDict()      # nonce -> timestamp, oldest first

    def sign(self, message: dict, now_ms: int | None = None) -> dict:
        """`message` with a fresh timestamp and nonce and, with a key, its signature."""
        signed = {**message, "ts": now_ms or int(time.time() * 1000), "nonce": secrets.token_hex(12)}
        signed.pop("sig", None)
        if self.key is not None:
            signed["sig"] = hmac.new(self.key, canonical(signed), hashlib.sha256).hexdigest()
        return signed

    def authentic(self, message: dict) -> str | None:
        """None when the message carries the fleet's signature (or no key is configured); else why not."""
        if self.key is None:
            return None
        sig = message.get("sig")
        if not isinstance(sig, str):
            return "unsigned (this box has a fleet key)"
        expected = hmac.new(self.key, canonical(message), hashlib.sha256).hexdigest()
        return None if hmac.compare_digest(sig.encode(), expected.encode()) else "wrong signature"

    def fresh(self, message: dict, now_ms: int | None = None) -> str | None:
        """For live (not retained) messages: None when signed within max_clock_skew_s of our clock and its
        nonce is new; else why not. Retained messages are old by nature: the version order guards those."""
        ts, nonce = message.get("ts"), message.get("nonce")
        if not isinstance(ts, int) or isinstance(ts, bool) or not isinstance(nonce, str) or not 8 <= len(nonce) <= 64:
            return "no timestamp or nonce"
        now_ms = now_ms or int(time.time() * 1000)
        if ts < now_ms - self.skew_ms:
            return f"stale: signed {(now_ms - ts) / 1000:.0f} s ago (replayed, or clocks apart; check NTP)"
        if ts > now_ms + self.skew_ms:
            return f"signed {(ts - now_ms) / 1000:.0f} s in this box's future (clocks apart; check NTP)"
        while self._nonces and (len(self._nonces) >= MAX_NONCES
                                or next(iter(self._nonces.values())) < now_ms - self.skew_ms):
            self._nonces.popitem(last=False)
        if nonce in self._nonces:
            return "replayed (nonce seen before)"
        self._nonces[nonce] = ts
        return None


def implausible(vectors: np.ndarray, model: str, names: np.ndarray, gallery: np.ndarray,
                threshold: float) -> str | None:
    """None when every vector could be one real face's embedding for `model`; else why not.

    `names`, `gallery`: the other enrolled people's embeddings, one row each (Store.gallery() without the
    person in question). A vector within `threshold` of several other people at once, or near the centre
    of the gallery, is what an average of many faces looks like: it would make strangers match the name
    it is sent under."""
    spec = MODELS.get(model, {})
    if vectors.ndim != 2 or vectors.shape[1] != spec.get("dimensions", vectors.shape[1]):
        return f"embeddings must have {spec['dimensions']} values for {model}"
    if not np.isfinite(vectors).all():
        return "an embedding holds NaN or infinity"
    if "norm" in spec:
        norms = np.linalg.norm(vectors, axis=1)
        low, high = spec["norm"]
        if ((norms < low) | (norms > high)).any():
            return f"an embedding's length is outside {low}-{high} (not a {model} face embedding)"
    if len(gallery) == 0 or gallery.shape[1] != vectors.shape[1]:
        return None
    # Squared distances of every incoming vector to every gallery row in one matrix product.
    squared = (vectors ** 2).sum(1)[:, None] + (gallery ** 2).sum(1)[None, :] - 2 * vectors @ gallery.T
    near = (squared < threshold ** 2).any(axis=0)
    people, person_of_row = np.unique(names.astype(str), return_inverse=True)
    matched = len(np.unique(person_of_row[near]))
    # Two people already look alike now and then (twins); a tenth of a large gallery never does.
    if matched >= max(2, len(people) // 10):
        return f"matches {matched} other enrolled people at once (an average of faces?)"
    if len(people) >= MIN_PEOPLE_FOR_CENTRE and "centre" in spec:
        sums = np.zeros((len(people), gallery.shape[1]))
        np.add.at(sums, person_of_row, gallery)
        centre = (sums / np.bincount(person_of_row)[:, None]).mean(axis=0)      # each person counts once
        nearest = float(np.linalg.norm(vectors - centre, axis=1).min())
        if nearest < spec["centre"]:
            return f"{nearest:.2f} from the centre of the gallery (an average of faces?)"
    return None
