"""Installs as users do: a wheel and an sdist that carry models and config, a fresh venv, commands run from
another directory; which config a command finds; the service's database refused to other users; the demo's
own name on the broker; loud failures and quiet success."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tarfile
import time
import venv
import zipfile
from pathlib import Path

import pytest

from conftest import DEMO_GALLERY, DEMO_VIDEO, ROOT, edge_command, free_port

COLLINS = DEMO_GALLERY / "eileen_collins.jpg"     # NASA photo, public domain (edge/demo/ASSETS.md)


def clean_env(tmp_path: Path, **extra: str) -> dict:
    """No EDGE_CONFIG (conftest pins it), no service config, a home of its own."""
    env = {k: v for k, v in os.environ.items() if k not in ("EDGE_CONFIG", "STATE_DIRECTORY", "PYTHONPATH")}
    env.update(HOME=str(tmp_path / "home"), EDGE_SYSTEM_CONFIG=str(tmp_path / "no-such-etc" / "edge.yaml"))
    env.update(extra)
    return env


def run(command: list[str], env: dict, cwd: Path = ROOT, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=cwd, env=env)


# --- the wheel and the sdist ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("dist")
    started = time.monotonic()
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    print(f"wheel + sdist built in {time.monotonic() - started:.1f} s")
    return {"wheel": next(out.glob("*.whl")), "sdist": next(out.glob("*.tar.gz"))}


def shipped_files() -> set[str]:
    return {p.name for p in (ROOT / "models").iterdir() if p.is_file()}


@pytest.mark.slow
def test_wheel_and_sdist_carry_every_model_file_and_the_default_config(built):
    names = set(zipfile.ZipFile(built["wheel"]).namelist())
    assert {f"edge/_models/{name}" for name in shipped_files()} <= names
    assert "edge/_config/default.yaml" in names and "edge/demo/demo.mp4" in names
    with tarfile.open(built["sdist"]) as sdist:
        members = {m.name.split("/", 1)[1] for m in sdist.getmembers() if "/" in m.name}
    assert {f"models/{name}" for name in shipped_files()} | {"config/default.yaml", "scripts/install.sh"} <= members


@pytest.mark.slow
def test_installed_wheel_runs_every_command_from_another_directory(built, tmp_path):
    venv_dir = tmp_path / "venv"
    started = time.monotonic()
    # System site-packages: the heavy dependencies are reused; the project itself comes from the wheel.
    venv.EnvBuilder(system_site_packages=True, with_pip=True).create(venv_dir)
    python = venv_dir / "bin" / "python"
    install = run([str(python), "-m", "pip", "install", "--quiet", str(built["wheel"])], os.environ.copy())
    assert install.returncode == 0, install.stderr[-3000:]
    print(f"venv + wheel install in {time.monotonic() - started:.1f} s")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = clean_env(tmp_path)
    where = run([str(python), "-c", "import edge; print(edge.__file__)"], env, cwd=elsewhere)
    assert Path(where.stdout.strip()).is_relative_to(venv_dir), where.stdout + where.stderr
    site = Path(where.stdout.strip()).parent
    before = sorted(p for p in site.rglob("*") if "__pycache__" not in p.parts)
    edge = str(venv_dir / "bin" / "edge")

    verify = run([edge, "models", "verify"], env, cwd=elsewhere)
    assert verify.returncode == 0 and "FAIL" not in verify.stdout, verify.stdout + verify.stderr
    in_checkout = run(edge_command("models", "verify"), os.environ.copy())
    assert verify.stdout.count("OK ") == in_checkout.stdout.count("OK ") > 0
    assert str(site / "_models") in verify.stdout

    analyzed = run([edge, "analyze", str(COLLINS), "--json"], env, cwd=elsewhere)
    assert analyzed.returncode == 0, analyzed.stderr
    faces = json.loads(analyzed.stdout)["faces"]
    assert len(faces) == 1 and faces[0]["gender"]["label"] == "female"

    started = time.monotonic()
    demo = run([edge, "demo"], env, cwd=elsewhere)
    print(f"edge demo from the wheel in {time.monotonic() - started:.1f} s")
    assert demo.returncode == 0, demo.stderr[-2000:]
    events = [json.loads(line) for line in demo.stdout.splitlines()]
    assert any(e["type"] == "face_identified" and (e["identity"] or {}).get("name") == "eileen_collins"
               for e in events)
    assert {e["device"] for e in events} == {"edge-demo"}
    assert "WARNING" not in demo.stderr and "Traceback" not in demo.stderr

    doctor = run([edge, "doctor", "--set", "mqtt.enabled=false", "--set", f"source={DEMO_VIDEO}"], env,
                 cwd=elsewhere)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert f"config: {site / '_config' / 'default.yaml'} (the shipped default)" in doctor.stdout
    # Nothing was written into site-packages (no database, calibration or snapshot there).
    assert sorted(p for p in site.rglob("*") if "__pycache__" not in p.parts) == before


@pytest.mark.slow
def test_install_script_makes_a_venv_that_runs_with_the_service_config(tmp_path):
    """scripts/install.sh for real, staged under DESTDIR (no user, no systemctl): the venv, the PATH link, the
    config every command then finds. The staged venv runs through its own python (its scripts name /opt/edge)."""
    stage = tmp_path / "stage"
    started = time.monotonic()
    result = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), "--system-site-packages"],
                            capture_output=True, text=True, timeout=900, env={**os.environ, "DESTDIR": str(stage)})
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    print(f"install.sh with its venv in {time.monotonic() - started:.1f} s")
    assert os.readlink(stage / "usr/local/bin/edge") == "/opt/edge/venv/bin/edge"
    assert (stage / "opt/edge/venv/bin/edge").read_text().startswith(f"#!{stage}/opt/edge/venv/bin/python")
    assert (stage / "var/lib/edge").is_dir() and not (stage / "opt/edge/models").exists()
    python = str(stage / "opt/edge/venv/bin/python")
    env = clean_env(tmp_path, EDGE_SYSTEM_CONFIG=str(stage / "etc/edge/edge.yaml"))
    where = run([python, "-c", "import edge; print(edge.__file__)"], env, cwd=tmp_path)
    assert Path(where.stdout.strip()).is_relative_to(stage / "opt/edge/venv"), where.stdout + where.stderr
    verify = run([python, "-m", "edge", "models", "verify"], env, cwd=tmp_path)
    assert verify.returncode == 0 and "FAIL" not in verify.stdout, verify.stdout + verify.stderr
    doctor = run([python, "-m", "edge", "doctor", "--set", "mqtt.enabled=false"], env, cwd=tmp_path)
    assert f"config: {stage / 'etc/edge/edge.yaml'} (the service's config)" in doctor.stdout, doctor.stdout
    assert "database: /var/lib/edge/edge.db" in doctor.stdout
    # Camera "0" of the untouched config is not here: doctor says so in its exit code.
    assert doctor.returncode == 1 and "camera: FAIL" in doctor.stdout


# --- which config, which database -----------------------------------------------------------------------

def write_config(path: Path, db: Path, device: str = "box1") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"device: {device}\nstore:\n  path: {db}\nmqtt:\n  enabled: false\n")
    return path


def enrolled(env: dict, *args: str) -> subprocess.CompletedProcess:
    return run(edge_command("enroll", "eileen", str(COLLINS), *args), env)


def test_commands_find_the_service_config_then_edge_config_then_the_option(tmp_path):
    service_db, env_db, option_db = tmp_path / "var" / "edge.db", tmp_path / "env.db", tmp_path / "option.db"
    service = write_config(tmp_path / "etc" / "edge.yaml", service_db)
    env = clean_env(tmp_path, EDGE_SYSTEM_CONFIG=str(service))
    result = enrolled(env)
    assert result.returncode == 0 and service_db.exists(), result.stderr
    assert "WARNING" not in result.stderr        # a successful enroll is quiet

    env_config = write_config(tmp_path / "env.yaml", env_db)
    assert enrolled({**env, "EDGE_CONFIG": str(env_config)}).returncode == 0 and env_db.exists()

    option = write_config(tmp_path / "option.yaml", option_db)
    result = enrolled({**env, "EDGE_CONFIG": str(env_config)}, "--config", str(option))
    assert result.returncode == 0 and option_db.exists()
    listed = run(edge_command("identities", "list", "--json"), env)
    assert [r["name"] for r in json.loads(listed.stdout)] == ["eileen"]

    # No service config on this box: the shipped default, with the database in the user's home.
    home_db = tmp_path / "home" / ".local" / "share" / "edge" / "edge.db"
    assert enrolled(clean_env(tmp_path)).returncode == 0 and home_db.exists()


def test_calibration_is_written_beside_the_database_not_into_the_package(tmp_path):
    import cv2
    from matplotlib import cbook
    people = tmp_path / "people"
    for person in ("collins", "hopper"):
        (people / person).mkdir(parents=True)
    # Two photos of one person (a mirrored copy is another photo of the same face) and one of someone else.
    image = cv2.imread(str(COLLINS))
    cv2.imwrite(str(people / "collins" / "a.jpg"), image)
    cv2.imwrite(str(people / "collins" / "b.jpg"), cv2.flip(image, 1))
    (people / "hopper" / "h.jpg").write_bytes(Path(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False))
                                              .read_bytes())
    config = write_config(tmp_path / "etc" / "edge.yaml", tmp_path / "state" / "edge.db")
    result = run(edge_command("calibrate", str(people), "--json"), clean_env(tmp_path, EDGE_SYSTEM_CONFIG=str(config)))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["output"] == str(tmp_path / "state" / "calibrated.yaml")
    assert "threshold" in (tmp_path / "state" / "calibrated.yaml").read_text()


def test_the_service_database_is_refused_to_other_users_with_the_command_to_run(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the database to another user (CI runs as root)")
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    db = state / "edge.db"
    config = write_config(tmp_path / "edge.yaml", db)
    env = clean_env(tmp_path, EDGE_SYSTEM_CONFIG=str(config))
    assert enrolled(env).returncode == 0
    nobody = 65534
    for path in (state, db, *state.glob("edge.db-*")):
        os.chown(path, nobody, nobody)
    result = enrolled(env)
    assert result.returncode == 1
    line = result.stderr.strip()
    assert len(line.splitlines()) == 1 and f"{db} belongs to user" in line, line
    assert "sudo -u" in line and f"edge enroll eileen {COLLINS}" in line
    assert os.stat(db).st_uid == nobody and all(p.stat().st_uid == nobody for p in state.iterdir())
    assert run(edge_command("identities", "list"), env).returncode == 1


# --- the demo and the device name -----------------------------------------------------------------------

def test_demo_publishes_under_its_own_name_and_never_as_the_box(broker, subscriber_factory, tmp_path):
    box = write_config(tmp_path / "etc" / "edge.yaml", tmp_path / "box.db", device="door1")
    subscriber = subscriber_factory(broker.port)
    env = clean_env(tmp_path, EDGE_CONFIG=str(box))
    result = run(edge_command("demo", "--max-frames", "120", "--set", "mqtt.enabled=true",
                              "--set", "mqtt.host=127.0.0.1", "--set", f"mqtt.port={broker.port}"), env)
    assert result.returncode == 0, result.stderr
    assert subscriber.wait_for(lambda s: s.payloads("edge-demo/status")[-1:] == [b"offline"], 10)
    topics = {t for t, _, _ in subscriber.messages}
    assert topics and all(t.startswith(("edge-demo/", "homeassistant/")) for t in topics), topics
    configs = [json.loads(p) for t, p, _ in subscriber.messages if t.endswith("/config") and p]
    assert configs and all(c["unique_id"].startswith("edge_edge-demo_") for c in configs)
    assert not [t for t in topics if "door1" in t or t.startswith("edge/")]
    assert {e["device"] for e in subscriber.events()} == {"edge-demo"}


def test_default_device_is_the_sanitised_host_name(monkeypatch):
    from edge import config
    monkeypatch.setattr(socket, "gethostname", lambda: "Kitchen Pi #2.local")
    assert config.validate({}).device == "Kitchen-Pi-2"
    assert config.validate({"device": None}).device == "Kitchen-Pi-2"
    monkeypatch.setattr(socket, "gethostname", lambda: "...")
    assert config.validate({}).device == "edge"


# --- loud failures, quiet success -----------------------------------------------------------------------

def test_a_missing_source_file_stops_run_with_one_line(tmp_path):
    result = run(edge_command("run", "--source", str(tmp_path / "typo.mp4"), "--set", f"store.path={tmp_path / 'db'}"),
                 clean_env(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip() == (f"config error: --source: no such video file: {tmp_path / 'typo.mp4'} (a camera "
                                     "is a device index like 0, an rtsp:// URL, a GStreamer pipeline or picamera2)")


def test_a_missing_camera_is_retried_with_one_warning_and_opencv_speaks_once(tmp_path):
    process = subprocess.Popen(edge_command("run", "--source", "57", "--set", "capture.reopen_initial_s=0.1",
                                            "--set", "capture.reopen_max_s=0.2", "--set", "mqtt.enabled=false",
                                            "--set", f"store.path={tmp_path / 'db'}"),
                               cwd=ROOT, env=clean_env(tmp_path), stderr=subprocess.PIPE, text=True)
    time.sleep(8)       # models load, then ~20 reopen attempts
    assert process.poll() is None, "a camera that is not there yet must be retried, not end the daemon"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0, stderr
    assert stderr.count("unavailable") == 1, stderr
    assert stderr.count("can't open camera by index") <= 1, stderr


def test_a_status_page_that_cannot_listen_stops_start_up_unless_optional(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        common = ("--source", str(DEMO_VIDEO), "--max-frames", "5", "--set", "capture.pace=every_frame",
                  "--set", "mqtt.enabled=false", "--set", f"store.path={tmp_path / 'db'}",
                  "--set", "web.enabled=true", "--set", f"web.port={port}")
        result = run(edge_command("run", *common), clean_env(tmp_path))
        assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
        assert result.stderr.startswith(f"config error: web.port: status page cannot listen on 127.0.0.1:{port}")
        optional = run(edge_command("run", *common, "--set", "web.optional=true"), clean_env(tmp_path))
        assert optional.returncode == 0 and "web page off (web.optional)" in optional.stderr, optional.stderr


def test_doctor_exits_non_zero_only_when_a_check_fails(broker, tmp_path):
    args = ("doctor", "--set", "mqtt.host=127.0.0.1", "--set", f"store.path={tmp_path / 'db'}")
    good = run(edge_command(*args, "--set", f"mqtt.port={broker.port}", "--set", f"source={DEMO_VIDEO}"),
               clean_env(tmp_path))
    assert good.returncode == 0 and good.stdout.rstrip().endswith("all checks passed"), good.stdout
    no_broker = run(edge_command(*args, "--set", f"mqtt.port={free_port()}", "--set", f"source={DEMO_VIDEO}"),
                    clean_env(tmp_path))
    assert no_broker.returncode == 1 and "broker: FAIL" in no_broker.stdout and "1 check(s) failed" in no_broker.stdout


def test_a_clean_stop_logs_no_warning_and_leaves_stopped_in_diagnostics(broker, subscriber_factory, tmp_path):
    subscriber = subscriber_factory(broker.port, topic="door9/diagnostics")
    result = run(edge_command("run", "--source", str(DEMO_VIDEO), "--max-frames", "60", "--set",
                              "capture.pace=every_frame", "--set", "mqtt.host=127.0.0.1", "--set",
                              f"mqtt.port={broker.port}", "--set", "mqtt.prefix=door9", "--set",
                              f"store.path={tmp_path / 'db'}"), clean_env(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "WARNING" not in result.stderr and "ERROR" not in result.stderr, result.stderr
    assert subscriber.wait_for(lambda s: s.payloads("door9/diagnostics"), 10)
    assert json.loads(subscriber.payloads("door9/diagnostics")[-1])["status"] == "stopped"


def test_tensorrt_engines_are_cached_in_the_state_directory(tmp_path):
    """No GPU here: the provider list handed to ONNX Runtime is what can be checked (option names from the
    TensorRT execution provider documentation); on this CPU build the same code path runs a real model."""
    from edge.backends.onnxruntime import OnnxRuntimeBackend, provider_options
    from edge.config import load_config
    cfg = load_config(None, [f"store.path={tmp_path / 'state' / 'edge.db'}"])
    cache = cfg.store.path.parent / "tensorrt"
    chosen = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_options(chosen, cache) == [
        ("TensorrtExecutionProvider", {"trt_engine_cache_enable": True, "trt_engine_cache_path": str(cache)}),
        "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert provider_options(["CPUExecutionProvider"], cache) == ["CPUExecutionProvider"]
    backend = OnnxRuntimeBackend(cfg.models.dir / "gender_v1.onnx", cache_dir=cache)
    assert backend.device == "CPUExecutionProvider" and not cache.exists()   # no TensorRT: no folder
