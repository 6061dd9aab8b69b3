"""`edge doctor`: what this box is, what it will run on, whether camera and broker answer."""

from __future__ import annotations

import os
import socket
import threading

from .backends.select import model_threads, probe_board, probe_runtimes
from .config import AppConfig, ConfigError
from .publish import login_and_tls


def check_camera(cfg: AppConfig, timeout_s: float = 5.0) -> tuple[bool, str]:
    from .capture import SourceError, open_source

    source = open_source(cfg.source, cfg.capture.width, cfg.capture.height, cfg.capture.fps)
    result: list[tuple[bool, str]] = []

    def probe():
        try:
            source.open()
            frame = source.read()
            result.append((frame is not None, f"opened {source.description}: " +
                           (f"frame {frame[0].shape[1]}x{frame[0].shape[0]}" if frame else "opened but no frame")))
        except SourceError as exc:
            result.append((False, f"cannot open: {exc}"))
        finally:
            source.close()

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return result[0] if result else (False, f"{source.description}: no answer within {timeout_s:.0f} s")


def check_broker(cfg: AppConfig, timeout_s: float = 3.0) -> tuple[bool, str]:
    if not cfg.mqtt.enabled:
        return True, "MQTT disabled in config"
    import paho.mqtt.client as mqtt

    answered = threading.Event()
    outcome: list[tuple[bool, str]] = []

    def on_connect(client, userdata, flags, reason_code, properties):
        outcome.append((True, "accepted the connection") if not reason_code.is_failure
                       else (False, f"refused: {reason_code}"))
        answered.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-doctor-{cfg.device}")
    try:
        login_and_tls(client, cfg.mqtt)       # the daemon's own login and TLS (server certificate required)
    except ConfigError as exc:
        return f"{cfg.mqtt.host}:{cfg.mqtt.port}: {exc}"
    client.on_connect = on_connect
    where = f"{cfg.mqtt.host}:{cfg.mqtt.port}"
    try:
        client.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=10)
    except (OSError, socket.timeout) as exc:
        return False, f"{where}: not reachable ({exc})"
    client.loop_start()
    answered.wait(timeout_s)
    client.disconnect()
    client.loop_stop()
    ok, what = outcome[0] if outcome else (False, "no MQTT answer")
    return ok, f"{where}: {what}"


def check_database(cfg: AppConfig) -> tuple[bool, str]:
    """The database this config points at, and whether this user may write it (the service's may not be)."""
    from .store import StoreError
    from .service_box import check_store_owner
    path = cfg.store.path
    try:
        check_store_owner(path, "edge doctor")
    except StoreError as exc:
        return False, str(exc)
    if path.exists():
        return os.access(path, os.W_OK), f"{path} ({'writable' if os.access(path, os.W_OK) else 'not writable'})"
    parent = next((p for p in path.parents if p.exists()), path.anchor)
    ok = os.access(parent, os.W_OK)
    return ok, f"{path} (not created yet; {parent} is {'writable' if ok else 'not writable'})"


def report(cfg: AppConfig, config_file: str = "") -> tuple[str, int]:
    """The report text and the number of failed checks (`edge doctor` exits 1 when there is any)."""
    from .models.loader import plan

    board = probe_board()
    runtimes = probe_runtimes()
    lines = [f"board: {board.kind} ({board.model})",
             f"onnxruntime: {runtimes.onnxruntime or 'not installed'}"
             + (f" providers {', '.join(runtimes.onnx_providers)}" if runtimes.onnxruntime else ""),
             f"LiteRT: {runtimes.litert or 'not installed'}" + (" + Edge TPU" if runtimes.edgetpu else ""),
             f"OpenCV: {runtimes.opencv or 'not installed'}" + (" with CUDA" if runtimes.opencv_cuda else ""),
             f"detector: {cfg.detector.type}",
             f"models: {model_threads(cfg.models.threads)} thread(s) each"
             + (" (models.threads: 0 = half of %d cores)" % (os.cpu_count() or 1) if not cfg.models.threads else "")]
    if config_file:
        lines.insert(0, f"config: {config_file}")
    failed = 0
    try:
        for name, key, file, why in plan(cfg, board, runtimes):
            lines.append(f"  {name}: {key} ({why}) <- {file.path.name}")
    except Exception as exc:  # doctor reports problems instead of dying on them; counted as a failure
        lines.append(f"  FAIL cannot plan models: {exc}")
        failed += 1
    for what, (ok, text) in (("database", check_database(cfg)), ("camera", check_camera(cfg)),
                             ("broker", check_broker(cfg))):
        lines.append(f"{what}: {text}" if ok else f"{what}: FAIL {text}")
        failed += not ok
    lines.append("all checks passed" if not failed else f"{failed} check(s) failed")
    return "\n".join(lines), failed
