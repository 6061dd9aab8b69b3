"""Typed configuration: YAML file + `--set key.path=value` overrides, validated at start-up.

Every problem becomes one `ConfigError` line naming the key, e.g.
`config error: detector.min_face: must be >= 8 (got 2)`.
"""

from __future__ import annotations

import os
import re
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator,
                      model_validator)

from .models.catalog import DEFAULT_EMBEDDING, EMBEDDINGS, LEGACY_MODEL

PACKAGE_DIR = Path(__file__).resolve().parent
# A checkout keeps models/ and config/ at the top level (the product's layout); a wheel, an sdist or
# `pip install .` carries them inside the package as edge/_models and edge/_config (setup.py package_dir).
PROJECT_ROOT = PACKAGE_DIR.parent
IN_CHECKOUT = not (PACKAGE_DIR / "_config" / "default.yaml").is_file()


def _shipped(name: str) -> Path:
    return PROJECT_ROOT / name if IN_CHECKOUT else PACKAGE_DIR / f"_{name}"


MODELS_DIR = _shipped("models")
DEFAULT_CONFIG = _shipped("config") / "default.yaml"
DEMO_DIR = PACKAGE_DIR / "demo"
# The service's config (scripts/install.sh). Commands find it without --config so `edge enroll` on a
# service box writes the database the daemon reads; EDGE_SYSTEM_CONFIG moves it (tests, staging).
SYSTEM_CONFIG = Path(os.environ.get("EDGE_SYSTEM_CONFIG") or "/etc/edge/edge.yaml")


def relative_base() -> Path:
    """Relative paths in the config (models.dir, identity.calibration_file): from the checkout's root, or from
    the current directory for an installed package (site-packages is no place for a user's files)."""
    return PROJECT_ROOT if IN_CHECKOUT else Path.cwd()


def config_source(explicit: Path | str | None) -> tuple[Path, str]:
    """The config file and why it was chosen: --config, else $EDGE_CONFIG, else the service's
    /etc/edge/edge.yaml when present, else the shipped default."""
    if explicit:
        return Path(explicit), "--config"
    if os.environ.get("EDGE_CONFIG"):
        return Path(os.environ["EDGE_CONFIG"]), "EDGE_CONFIG"
    if SYSTEM_CONFIG.exists():
        return SYSTEM_CONFIG, "the service's config"
    return DEFAULT_CONFIG, "the shipped default"


class ConfigError(ValueError):
    """A config problem a person can act on; str() is the one line to print."""


class Section(BaseModel):
    # Unknown keys are errors: a typo must not silently fall back to a default.
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CaptureConfig(Section):
    width: int = Field(640, ge=64, le=7680)
    height: int = Field(480, ge=48, le=4320)
    fps: float = Field(15, gt=0, le=240)
    # realtime: a file plays at its own frame rate and late frames are dropped, like a camera.
    # every_frame: every frame of a file is processed (tests, benchmarks, the demo).
    pace: Literal["realtime", "every_frame"] = "realtime"
    loop: bool = False
    reopen_initial_s: float = Field(0.5, gt=0, le=60)
    reopen_max_s: float = Field(30.0, gt=0, le=3600)


class DetectorConfig(Section):
    # A detector plugin of edge/detect/ by its type_key: haar, mtcnn, yunet.
    type: str = "yunet"
    detect_width: int = Field(640, ge=80, le=4096)
    min_face: int = Field(40, ge=8, le=2000)
    scale_factor: float = Field(1.1, gt=1.0, le=2.0)
    min_neighbors: int = Field(5, ge=0, le=50)
    # O-Net at 0.9, not 0.8: a blurred background patch of people/_multi/obama_and_biden.jpg scores 0.82, the
    # real faces 0.997-0.9999 (Haar boxes are held to the same 0.9 by haar_verify_score).
    mtcnn_thresholds: tuple[float, float, float] = (0.6, 0.7, 0.9)
    # Haar boxes are kept only if MTCNN's O-Net (which also gives their landmarks) scores them this high.
    haar_verify_score: float = Field(0.9, ge=0, lt=1)
    yunet_score_threshold: float = Field(0.7, gt=0, lt=1)

    @field_validator("type")
    @classmethod
    def _registered(cls, value: str) -> str:
        from .detect import REGISTRY, detector_class
        try:
            detector_class(value)
        except KeyError:
            raise ValueError(f"must be one of {', '.join(sorted(REGISTRY))}") from None
        return value

    @field_validator("mtcnn_thresholds")
    @classmethod
    def _probabilities(cls, value):
        if not all(0.0 < v < 1.0 for v in value):
            raise ValueError("each threshold must be between 0 and 1")
        return value


def _backend_key(value: str | None) -> str | None:
    """"auto" or a backend of edge/backends/ by its key (onnxruntime, litert, opencv)."""
    from .backends import registered
    if value is None or value == "auto" or value in registered():
        return value
    raise ValueError(f"must be auto or one of {', '.join(sorted(registered()))}")


BackendKey = Annotated[str, AfterValidator(_backend_key)]


class ModelsConfig(Section):
    dir: Path = MODELS_DIR
    backend: BackendKey = "auto"
    # Per-model override of `backend`; null follows it.
    age_backend: BackendKey | None = None
    gender_backend: BackendKey | None = None
    embedding_backend: BackendKey | None = None
    detector_backend: BackendKey | None = None
    # Intra-op threads per model; 0 = half the board's cores (edge.backends.select.model_threads), so
    # models and detection do not fight for cores (README, Performance).
    threads: int = Field(0, ge=0, le=64)
    onnx_providers: list[str] = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    verify_hashes: bool = True

    @field_validator("dir", mode="before")
    @classmethod
    def _shipped_when_null(cls, value):
        return MODELS_DIR if value is None else value

    @field_validator("dir", mode="after")
    @classmethod
    def _relative_to_project(cls, value: Path) -> Path:
        return value if value.is_absolute() else relative_base() / value


class TrackingConfig(Section):
    iou_threshold: float = Field(0.25, gt=0, lt=1)
    min_hits: int = Field(3, ge=1, le=100)
    max_missed_s: float = Field(1.0, gt=0, le=60)
    window: int = Field(10, ge=1, le=500)
    min_frames: int = Field(5, ge=1, le=500)

    @model_validator(mode="after")
    def _window_holds_min_frames(self):
        if self.min_frames > self.window:
            raise ValueError(f"min_frames: must be <= tracking.window ({self.window}) (got {self.min_frames})")
        return self


class IdentityConfig(Section):
    # Which embedding model names people (edge/models/catalog.py). Every stored vector records the model that
    # made it, and matching uses only vectors of this one: after a change, people enrolled with another model
    # must be enrolled again (start-up and `edge identities list` say who).
    model: str = DEFAULT_EMBEDDING
    # Distance under which a face is the enrolled person; null = the model's calibrated value
    # (dlib_resnet_v1: L2 0.6, dlib's own; cosine models: 1 - similarity).
    threshold: float | None = Field(None, gt=0, le=2)
    # A face is named only when the next enrolled person is at least this much further (distance units);
    # null = the model's measured value (edge/models/catalog.py).
    margin: float | None = Field(None, ge=0, le=2)
    # Share of a track's per-frame matches that must agree with the averaged decision.
    min_agreement: float = Field(0.6, gt=0, le=1)
    # YAML written by `edge calibrate` ({identity: {threshold: X, model: M}}); when set, its threshold replaces
    # `threshold`. Relative paths are from the project root (a checkout) or the current directory, like models.dir.
    calibration_file: Path | None = None

    @field_validator("model")
    @classmethod
    def _known_model(cls, value: str) -> str:
        if value not in EMBEDDINGS:
            raise ValueError(f"must be one of {', '.join(sorted(EMBEDDINGS))}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _calibrated_threshold(cls, data):
        model = data.get("model", DEFAULT_EMBEDDING) if isinstance(data, dict) else None
        if isinstance(model, str) and model in EMBEDDINGS:
            for key in ("threshold", "margin"):
                if data.get(key) is None:
                    data = {**data, key: getattr(EMBEDDINGS[model], key)}
        if not isinstance(data, dict) or not data.get("calibration_file"):
            return data
        if not isinstance(data["calibration_file"], (str, Path)):
            return data      # not a path: the field's own type check names the key (Path(1) would raise TypeError)
        path = Path(data["calibration_file"]).expanduser()
        path = path if path.is_absolute() else relative_base() / path
        try:
            calibrated = yaml.safe_load(path.read_text())
            threshold = calibrated["identity"]["threshold"]
        except OSError as exc:
            raise ValueError(f"calibration_file: cannot read {path}: {exc.strerror}") from None
        except (yaml.YAMLError, TypeError, KeyError):
            raise ValueError(f"calibration_file: {path} has no identity.threshold (write it with edge calibrate)") \
                from None
        model = data.get("model", DEFAULT_EMBEDDING)
        calibrated_model = calibrated["identity"].get("model", LEGACY_MODEL)
        if calibrated_model != model:
            raise ValueError(f"calibration_file: {path} was calibrated for embedding model {calibrated_model}, "
                             f"not {model} (run edge calibrate again)")
        return {**data, "calibration_file": path, "threshold": threshold}

    @property
    def metric(self) -> str:
        return EMBEDDINGS[self.model].metric


class FastPathConfig(Section):
    """Work skipped when it cannot change the result; every switch measured in benchmarks/bench_pipeline.py."""
    # No face detection while the scene is still (frame differencing on a small grey frame).
    motion_gate: bool = True
    motion_width: int = Field(80, ge=16, le=640)
    motion_pixel_threshold: int = Field(12, ge=1, le=255)
    motion_min_changed: float = Field(0.002, gt=0, le=1)
    # While gated, detection still runs every N frames when faces are in view (a standing person
    # barely moves) and every M frames on an empty still scene (safety net).
    redetect_every: int = Field(5, ge=1, le=1000)
    idle_detect_every: int = Field(150, ge=1, le=10000)
    # Detect only in the region that moved plus around the faces in view (whole frame every idle_detect_every).
    motion_roi: bool = True
    # Haar settings for video frames (0 = detector.*); stills (`edge analyze`, `edge enroll`) keep detector.*.
    video_detect_width: int = Field(320, ge=0, le=4096)
    video_scale_factor: float = Field(1.2, ge=0, le=2.0)

    @field_validator("video_scale_factor")
    @classmethod
    def _pyramid_step(cls, value):
        if value != 0 and value <= 1.0:
            raise ValueError("must be 0 (use detector.scale_factor) or greater than 1")
        return value
    # Stop age/gender/embedding on a track whose identity is decided and whose averages hold
    # `throttle_after` frames; re-run them every `recheck_every` frames.
    throttle: bool = True
    throttle_after: int = Field(10, ge=1, le=500)
    recheck_every: int = Field(15, ge=1, le=10000)
    # Landmarks + models of frame N run on a worker thread while frame N+1 is detected.
    overlap: bool = True


def default_store_path() -> Path:
    """systemd's StateDirectory= when run as a service, else the user's XDG data folder."""
    if os.environ.get("STATE_DIRECTORY"):
        return Path(os.environ["STATE_DIRECTORY"].split(":")[0]) / "edge.db"
    data_home = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return data_home / "edge" / "edge.db"


class StoreConfig(Section):
    path: Path = Field(default_factory=default_store_path)

    @field_validator("path", mode="before")
    @classmethod
    def _default_when_null(cls, value):
        return default_store_path() if value is None else Path(value).expanduser() if isinstance(value, str) else value
    retention_days: int = Field(30, ge=1, le=3650)


class UnknownsConfig(Section):
    """Averaged embeddings of unknown tracks, clustered by `edge unknowns` (biometric data: see README, Privacy)."""
    keep: bool = True
    # Distance under which unknown tracks are grouped; null = the embedding model's value (edge/models/catalog.py;
    # dlib: 0.5, not 0.6: among many strangers 0.6 merges different people, purity 0.73 on 1,229 LFW people,
    # 0.97 at 0.5; README, Unknown faces).
    cluster_threshold: float | None = Field(None, gt=0, le=2)
    # scipy linkage: average = mean pairwise distance under the threshold; complete = every pair under it.
    linkage: Literal["average", "complete", "single"] = "average"


class MqttConfig(Section):
    enabled: bool = True
    host: str = Field("localhost", min_length=1)
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = Field("edge", min_length=1)
    client_id: str | None = None
    username: str | None = None
    # SecretStr: its repr is '**********', so a logged or printed config never shows it.
    password: SecretStr | None = None
    password_file: Path | None = None
    tls: bool = False
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None
    keepalive: int = Field(30, ge=5, le=3600)
    qos: Literal[0, 1, 2] = 1
    # v5: the broker's acknowledgement says when it refuses a message (an ACL), which then stays in the outbox.
    # v3.1.1 only for a broker without MQTT 5 (Mosquitto < 1.6): it cannot say so, refused events are lost.
    protocol: Literal["v5", "v3.1.1"] = "v5"

    @field_validator("prefix")
    @classmethod
    def _topic_safe(cls, value: str) -> str:
        if any(c in value for c in "#+") or value.startswith("/") or value.endswith("/"):
            raise ValueError("must not contain '#' or '+' nor start or end with '/'")
        return value

    @field_validator("password", mode="before")
    @classmethod
    def _digits_are_text(cls, value):
        # A password given as data rather than YAML text (load_config keeps the text itself, see
        # _secrets_as_text): an integer's digits are the password; a bool or float has lost them.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    def resolved_password(self) -> str | None:
        """Password from EDGE_MQTT_PASSWORD, then password_file, then the config value."""
        if os.environ.get("EDGE_MQTT_PASSWORD"):
            return os.environ["EDGE_MQTT_PASSWORD"]
        if self.password_file:
            return self.password_file.read_text().strip()
        return self.password.get_secret_value() if self.password is not None else None

    def resolved_username(self) -> str | None:
        return os.environ.get("EDGE_MQTT_USERNAME") or self.username


class _Switchable(Section):
    """A section that may also be written as a plain switch: `display: true` means `display: {enabled: true}`."""
    enabled: bool = False

    @model_validator(mode="before")
    @classmethod
    def _switch(cls, data):
        return {"enabled": data} if isinstance(data, bool) else data


class DisplayConfig(_Switchable):
    """Kiosk window (edge/display.py): the live picture with boxes, names, age, gender and a status line."""
    fullscreen: bool = True
    max_fps: float = Field(15, gt=0, le=60)     # drawing rate cap; the pipeline never waits for the screen


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or localhost: reachable from this machine only."""
    import ipaddress
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class WebConfig(_Switchable):
    """Status page, people page, JSON API, /healthz, /metrics, /snapshot.jpg, /stream (edge/web*.py).
    Off: no listening port."""
    host: str = Field("127.0.0.1", min_length=1)   # 0.0.0.0 exposes names and the live picture to the network
    port: int = Field(8080, ge=1, le=65535)
    optional: bool = False   # true: a port that cannot be opened is logged and the daemon runs without the page
    stream_max_fps: float = Field(10, gt=0, le=60)
    jpeg_quality: int = Field(80, ge=10, le=100)
    recent_events: int = Field(50, ge=1, le=1000)
    # Login for actions (and for every page when host is not loopback): a password, or its hash from
    # `edge hash-password` ("scrypt$..."); EDGE_WEB_PASSWORD and password_file win over password.
    password: str | None = None
    password_file: Path | None = None
    # Bearer token for the JSON API (EDGE_WEB_TOKEN, token_file, token; plain or "scrypt$..."); the password works too.
    token: str | None = None
    token_file: Path | None = None
    # Host header values accepted when host is not loopback (besides the address the client connected to).
    allowed_hosts: list[str] = []
    workers: int = Field(8, ge=2, le=64)           # request threads, fixed: a flood of clients waits, never spawns
    queue: int = Field(32, ge=0, le=1024)          # accepted connections waiting for a worker; more are closed
    max_streams: int = Field(2, ge=0, le=32)       # /stream viewers at once (each holds a worker)
    header_timeout_s: float = Field(10, gt=0, le=300)   # whole request line + headers, however slowly sent
    body_timeout_s: float = Field(60, gt=0, le=3600)    # whole upload body
    max_upload_bytes: int = Field(10 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024)
    max_upload_files: int = Field(20, ge=1, le=200)
    session_hours: float = Field(12, gt=0, le=24 * 30)
    login_failures_per_minute: int = Field(5, ge=1, le=1000)   # per client address; then HTTP 429

    @field_validator("password", "token", mode="before")
    @classmethod
    def _secret_text(cls, value):
        # YAML reads `password: 123456` as a number; a secret is text (and never echoed in an error).
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _login_beyond_loopback(self):
        if self.enabled and not is_loopback(self.host) and not self.has_password():
            raise ValueError(f"host: serving the page on {self.host} (not loopback) needs a login: set web.password, "
                             "web.password_file or EDGE_WEB_PASSWORD")
        return self

    def has_password(self) -> bool:
        return bool(os.environ.get("EDGE_WEB_PASSWORD") or self.password_file or self.password)

    def resolved_password(self) -> str | None:
        return _secret(os.environ.get("EDGE_WEB_PASSWORD"), self.password_file, self.password, "web.password_file")

    def resolved_token(self) -> str | None:
        return _secret(os.environ.get("EDGE_WEB_TOKEN"), self.token_file, self.token, "web.token_file")


def _secret(from_env: str | None, file: Path | None, value: str | None, key: str) -> str | None:
    if from_env:
        return from_env
    if file:
        try:
            return file.read_text().strip() or None
        except OSError as exc:
            raise ConfigError(f"config error: {key}: cannot read {file}: {exc.strerror}") from None
    return value


def _topic_safe_path(value: str) -> str:
    if any(c in value for c in "#+") or value.startswith("/") or value.endswith("/") or not value:
        raise ValueError("must not be empty, contain '#' or '+' nor start or end with '/'")
    return value


class HomeAssistantConfig(Section):
    """MQTT discovery: retained <discovery_prefix>/<component>/<node_id>/<object_id>/config (edge/homeassistant.py)."""
    enabled: bool = True
    discovery_prefix: str = "homeassistant"
    node_id: str | None = Field(None, pattern=r"^[A-Za-z0-9_-]+$")   # null = device
    # Entity names shown in Home Assistant: enrolled name -> display name; others are derived
    # ("eileen_collins" -> "Eileen Collins").
    display_names: dict[str, str] = {}
    # Link on the device page; null = the status page when web.enabled, else none.
    configuration_url: str | None = Field(None, pattern=r"^https?://")

    @field_validator("discovery_prefix")
    @classmethod
    def _topic_safe(cls, value: str) -> str:
        return _topic_safe_path(value)


FLEET_KEY_ENV = "EDGE_FLEET_KEY"


class FleetConfig(Section):
    """Boxes sharing one gallery through retained, versioned messages on the broker (edge/fleet.py)."""
    enabled: bool = False
    topic: str = "edge-fleet/gallery"        # shared by every box of the fleet: one retained message per person
    # The fleet's shared secret (HMAC-SHA256 over every message; README "Fleet trust model"): a file holding it,
    # or the environment variable EDGE_FLEET_KEY, which wins. At least 16 bytes.
    key_file: Path | None = None
    # Without a key every message is taken on trust: only with this set explicitly.
    allow_unsigned: bool = False
    max_clock_skew_s: int = Field(300, ge=10, le=86400)   # live messages signed further from our clock are dropped
    max_message_bytes: int = Field(262144, ge=1024, le=16777216)
    max_embeddings: int = Field(100, ge=1, le=10000)     # per person in one message
    max_people: int = Field(1000, ge=1, le=100000)       # people the fleet may enrol on this box
    max_changes_per_s: float = Field(5.0, gt=0, le=1000)  # applied enrollments/forgets; the rest wait, coalesced

    @field_validator("topic")
    @classmethod
    def _topic_safe(cls, value: str) -> str:
        return _topic_safe_path(value)

    @model_validator(mode="after")
    def _key_or_explicitly_unsigned(self):
        if self.enabled and not self.allow_unsigned and not self.key_file and not os.environ.get(FLEET_KEY_ENV):
            raise ValueError(f"key_file: the fleet needs a shared key (fleet.key_file or {FLEET_KEY_ENV}); "
                             "or set fleet.allow_unsigned: true to accept anyone who can publish on fleet.topic")
        return self

    def resolved_key(self) -> bytes | None:
        """The key from EDGE_FLEET_KEY, then key_file (OSError when unreadable); None without one."""
        if os.environ.get(FLEET_KEY_ENV):
            return os.environ[FLEET_KEY_ENV].strip().encode()
        if self.key_file:
            return self.key_file.read_bytes().strip()
        return None


class SnapshotsConfig(Section):
    """Cropped JPEG of a track's best frame (edge/snapshots.py); off by default: these are face images."""
    enabled: bool = False                    # publish on <mqtt.prefix>/snapshot/<name> (MQTT only, never queued)
    retain: bool = False
    jpeg_quality: int = Field(85, ge=10, le=100)
    max_size: int = Field(320, ge=32, le=4096)   # longest side of the crop, pixels
    margin: float = Field(0.3, ge=0, le=2)       # added around the face box, as a share of its size
    keep_thumbnails: bool = False            # also write them to <store dir>/thumbnails/ (0600) ...
    thumbnail_retention_days: int = Field(7, ge=1, le=3650)   # ... deleted after this many days


class CameraEnrolmentConfig(Section):
    """Enrolment from the running camera: `edge enroll NAME --camera`, the people page's button, POST
    /api/enrolments (edge/enroll_camera.py). A frame counts when the single face in view passes all three checks."""
    frames: int = Field(5, ge=1, le=50)             # good frames to collect (--frames)
    timeout_s: float = Field(30.0, gt=0, le=600)    # refused when they are not collected within this time
    min_face_px: int = Field(96, ge=24, le=4000)     # shorter side of the face box ("large enough")
    # Laplacian variance over the contrast of the face resized to 112 px: 99% of LFW photos are >= 0.94,
    # 99% of the same photos blurred (Gaussian sigma 2) are <= 0.69.
    min_sharpness: float = Field(0.8, ge=0, le=100)
    # Nose offset from the eyes' midpoint over the eye distance: 0 frontal, about 0.25 at 20-25 degrees of yaw.
    max_yaw: float = Field(0.25, gt=0, le=1)
    min_interval_s: float = Field(0.2, ge=0, le=10)  # between two kept frames, so they are not one picture N times


def default_device() -> str:
    """This host's name in [A-Za-z0-9_-], so two boxes left on defaults never share Home Assistant unique ids."""
    name = re.sub(r"[^A-Za-z0-9_-]+", "-", socket.gethostname().split(".")[0]).strip("-")
    return name[:64] or "edge"


class AppConfig(Section):
    device: str = Field(default_factory=default_device, min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    camera: str = Field("camera", min_length=1)
    # Device index ("0"), file path, rtsp:// URL, GStreamer pipeline (contains "!"), or "picamera2".
    source: str = "0"
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    capture: CaptureConfig = CaptureConfig()
    detector: DetectorConfig = DetectorConfig()
    models: ModelsConfig = ModelsConfig()
    tracking: TrackingConfig = TrackingConfig()
    identity: IdentityConfig = IdentityConfig()
    fastpath: FastPathConfig = FastPathConfig()
    store: StoreConfig = StoreConfig()
    unknowns: UnknownsConfig = UnknownsConfig()
    mqtt: MqttConfig = MqttConfig()
    homeassistant: HomeAssistantConfig = HomeAssistantConfig()
    fleet: FleetConfig = FleetConfig()
    snapshots: SnapshotsConfig = SnapshotsConfig()
    camera_enrolment: CameraEnrolmentConfig = CameraEnrolmentConfig()
    display: DisplayConfig = DisplayConfig()
    web: WebConfig = WebConfig()

    @field_validator("device", mode="before")
    @classmethod
    def _host_name_when_null(cls, value):
        return default_device() if value is None else value

    @model_validator(mode="before")
    @classmethod
    def _cluster_threshold_follows_model(cls, data):
        # Unknown faces are grouped in the identity model's own distance.
        if not isinstance(data, dict):
            return data
        identity, unknowns = data.get("identity") or {}, data.get("unknowns") or {}
        model = identity.get("model", DEFAULT_EMBEDDING) if isinstance(identity, dict) else None
        if isinstance(unknowns, dict) and unknowns.get("cluster_threshold") is None and isinstance(model, str) \
                and model in EMBEDDINGS:
            data = {**data, "unknowns": {**unknowns, "cluster_threshold": EMBEDDINGS[model].cluster_threshold}}
        return data


# A key naming any of these holds a secret (mqtt.password, a fleet key, an API token): its value is never
# echoed in an error, and YAML reads it as the text written (`password: 0123` is "0123", not the integer 83).
SECRET_WORDS = ("password", "passwd", "secret", "token", "key")
_URL_CREDENTIALS = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@")


def is_secret_key(name: Any) -> bool:
    return any(word in str(name).lower() for word in SECRET_WORDS)


def redact(text: str) -> str:
    """rtsp://user:password@host/... -> rtsp://***@host/..."""
    return _URL_CREDENTIALS.sub(r"\1***@", text)


def _parse_scalar(text: str, secret: bool = False) -> Any:
    """`--set` values are YAML scalars, so `true`, `1884` and `[1, 2]` get their natural types;
    a secret keeps the characters typed (`--set mqtt.password=483920` is the text "483920")."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    if secret and value is not None and not isinstance(value, str):
        return text
    return value


def _key_only(assignment: str) -> str:
    # The leading key-like part only: `--set mqtt.password:hunter2` must not echo the password.
    return re.match(r"[\w.-]*", assignment).group() or "(no key)"


def apply_override(data: dict, assignment: str) -> None:
    """`key.path=value` (a --set argument) into raw config data."""
    if "=" not in assignment:
        raise ConfigError(f"config error: --set {_key_only(assignment)}...: expected key.path=value")
    key, _, value = assignment.partition("=")
    _set_key(data, key.strip(), _parse_scalar(value, secret=is_secret_key(key.strip().split(".")[-1])))


def _set_key(data: dict, key: str, value: Any) -> None:
    parts = key.split(".")
    if not all(parts):
        raise ConfigError(f"config error: --set {redact(key)!r}: empty key")
    node = data
    for i, part in enumerate(parts[:-1]):
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"config error: {'.'.join(parts[:i + 1])}: is not a section, cannot set {key}")
        node = child
    node[parts[-1]] = value


def with_changes(cfg: AppConfig, changes: dict[str, Any]) -> AppConfig:
    """A re-validated copy of `cfg` with dotted keys changed, e.g. {"display.enabled": True} (what a command
    line flag such as `--display` means; the same path as `--set`)."""
    data = cfg.model_dump()
    for key, value in changes.items():
        _set_key(data, key, value)
    return validate(data)


def _key_part(part: Any) -> str:
    # A fuzzed or mistyped key may hold newlines, dots or nothing at all: quote it so the error stays one line.
    text = str(part)
    return text if text.isprintable() and text and "." not in text and ":" not in text else repr(text)


def _describe(error: dict) -> str:
    key = ".".join(_key_part(p) for p in error["loc"]) or "(top level)"
    kind = error["type"]
    given = error.get("input")
    if kind == "extra_forbidden":
        return f"config error: {key}: unknown key"
    message = error["msg"].removeprefix("Value error, ")
    if any(is_secret_key(p) for p in error["loc"]):
        # Name the key and the problem, never the value (it would reach journald).
        if isinstance(given, (str, int, float)) and str(given) and str(given) in message:
            message = "invalid value"      # a validator quoted it
        return f"config error: {key}: {message}" + ("" if given is None else f" (got {type(given).__name__})")
    if isinstance(given, (dict, list)):
        # Cross-field checks name their own field first ("min_frames: must be ...").
        return f"config error: {key}.{message}" if kind == "value_error" else f"config error: {key}: {message}"
    return f"config error: {key}: {message} (got {given!r})"


def validate(data: Any) -> AppConfig:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"config error: (top level): expected a mapping of keys, got {type(data).__name__}")
    try:
        return AppConfig.model_validate(data)
    except ValidationError as exc:
        # pydantic messages are single lines; this guarantees it for whatever a future version says.
        raise ConfigError(redact(" ".join(_describe(exc.errors()[0]).splitlines()))) from None


def _secrets_as_text(node: yaml.Node, seen: set[int]) -> None:
    """Re-tag plain scalars under secret keys as strings, before YAML turns 0123 into 83 or yes into True."""
    if id(node) in seen:
        return           # an alias to a node already visited (YAML anchors can even make cycles)
    seen.add(id(node))
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if (isinstance(key, yaml.ScalarNode) and is_secret_key(key.value) and isinstance(value, yaml.ScalarNode)
                    and value.style is None and value.tag != "tag:yaml.org,2002:null"):
                value.tag = "tag:yaml.org,2002:str"
            _secrets_as_text(value, seen)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _secrets_as_text(item, seen)


def _load_yaml(text: str) -> Any:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _secrets_as_text(node, set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _read_yaml(path: Path, why: str = "--config") -> dict:
    try:
        text = path.read_text()
    except PermissionError:
        hint = ("; it is the service's config, found because no --config was given: run the command as the "
                "service user (sudo -u edge edge ...) or pass --config" if why == "the service's config" else "")
        raise ConfigError(f"config error: cannot read {path}: Permission denied{hint}") from None
    except OSError as exc:
        raise ConfigError(f"config error: cannot read {path}: {exc.strerror}") from None
    try:
        data = _load_yaml(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config error: {path}{where}: not valid YAML ({getattr(exc, 'problem', exc)})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config error: {path}: expected a mapping of keys at the top level")
    return data


def _merge(base: dict, changes: dict) -> dict:
    """`changes` over `base`, section by section (a later file changes only the keys it names)."""
    merged = dict(base)
    for key, value in changes.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def load_config(path: Path | str | list[Path | str] | None = None,
                overrides: list[str] | tuple[str, ...] = ()) -> AppConfig:
    """Read YAML (several files: each later one changes the keys it names, e.g. a box-wide file then a
    per-camera one; none: the one config_source finds), apply `--set` overrides, validate."""
    if isinstance(path, (list, tuple)) and path:
        sources = [(Path(p), "--config") for p in path]
    else:
        sources = [config_source(None if isinstance(path, (list, tuple)) else path)]
    data: dict = {}
    for one, why in sources:
        data = _merge(data, _read_yaml(one, why))
    for assignment in overrides:
        apply_override(data, assignment)
    return validate(data)
