"""`edge doctor`: what this box is, what it will run on, whether camera and broker answer."""

from __future__ import annotations

import os
import socket
import threading

from .backends.select import model_threads, probe_board, probe_runtimes
from .config import AppConfig


def check_camera(cfg: AppConfig, timeout_s: float = 5.0) -> str:
    from .capture import SourceError, open_source

    source = open_source(cfg.source, cfg.capture.width, cfg.capture.height, cfg.capture.fps)
    result: list[str] = []

    def probe():
        try:
            source.open()
            frame = source.read()
            result.append(f"opened {source.description}: " +
                          (f"frame {frame[0].shape[1]}x{frame[0].shape[0]}" if frame else "opened but no frame"))
        except SourceError as exc:
            result.append(f"cannot open: {exc}")
        finally:
            source.close()

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout_s)
    return result[0] if result else f"{source.description}: no answer within {timeout_s:.0f} s"


def check_broker(cfg: AppConfig, timeout_s: float = 3.0) -> str:
    if not cfg.mqtt.enabled:
        return "MQTT disabled in config"
    import paho.mqtt.client as mqtt

    answered = threading.Event()
    outcome: list[str] = []

    def on_connect(client, userdata, flags, reason_code, properties):
        outcome.append("accepted the connection" if not reason_code.is_failure else f"refused: {reason_code}")
        answered.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edge-doctor-{cfg.device}")
    if cfg.mqtt.resolved_username():
        client.username_pw_set(cfg.mqtt.resolved_username(), cfg.mqtt.resolved_password())
    if cfg.mqtt.tls:
        client.tls_set(ca_certs=str(cfg.mqtt.ca_file) if cfg.mqtt.ca_file else None,
                       certfile=str(cfg.mqtt.cert_file) if cfg.mqtt.cert_file else None,
                       keyfile=str(cfg.mqtt.key_file) if cfg.mqtt.key_file else None)
    client.on_connect = on_connect
    where = f"{cfg.mqtt.host}:{cfg.mqtt.port}"
    try:
        client.connect(cfg.mqtt.host, cfg.mqtt.port, keepalive=10)
    except (OSError, socket.timeout) as exc:
        return f"{where}: not reachable ({exc})"
    client.loop_start()
    answered.wait(timeout_s)
    client.disconnect()
    client.loop_stop()
    return f"{where}: {outcome[0] if outcome else 'no MQTT answer'}"


def report(cfg: AppConfig) -> str:
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
    try:
        for name, key, file, why in plan(cfg, board, runtimes):
            lines.append(f"  {name}: {key} ({why}) <- {file.path.name}")
    except Exception as exc:  # doctor reports problems instead of dying on them
        lines.append(f"  cannot plan models: {exc}")
    lines.append(f"camera: {check_camera(cfg)}")
    lines.append(f"broker: {check_broker(cfg)}")
    return "\n".join(lines)
