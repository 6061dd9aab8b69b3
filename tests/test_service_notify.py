"""The systemd contract on the real daemon: notify protocol over a real AF_UNIX datagram socket, no
listening port, owner-only state files; the unit file and the install script."""

from __future__ import annotations

import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, Broker, listening_sockets, require_mosquitto, require_program
from edge_process import EdgeProcess, NotifySocket, base_args

UNIT = ROOT / "systemd" / "edge.service"
TEMPLATE = ROOT / "systemd" / "edge@.service"      # one process per camera (tests/test_cameras.py)


@pytest.fixture(scope="module")
def service_run(tmp_path_factory):
    """One realtime run of the demo video as systemd would start it (NOTIFY_SOCKET, WATCHDOG_USEC), with
    a real broker so the daemon holds its MQTT connection while /proc is inspected."""
    require_mosquitto()
    tmp = tmp_path_factory.mktemp("service")
    broker = Broker(tmp).start()
    notify = NotifySocket(tmp / "notify.sock")
    state = tmp / "state"
    daemon = EdgeProcess(*base_args(state / "edge.db", port=broker.port),
                         env={"NOTIFY_SOCKET": notify.path, "WATCHDOG_USEC": "2000000",
                              "WATCHDOG_PID": "", "EDGE_MQTT_PASSWORD": ""})
    try:
        daemon.wait_events(lambda events: any(e["type"] == "face_appeared" for e in events))
        listening = listening_sockets(daemon.pid)
        modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in [state, *state.iterdir()]}
        code = daemon.wait()
    finally:
        daemon.kill()
        notify.close()
        broker.stop()
    return {"notify": notify, "code": code, "listening": listening, "modes": modes, "daemon": daemon}


@pytest.mark.slow
def test_notify_ready_watchdog_status_stopping(service_run):
    notify, code = service_run["notify"], service_run["code"]
    assert code == 0, service_run["daemon"].stderr()
    fields = [f for _, f in notify.messages]
    assert "READY=1" in fields, fields[:10]
    ready_at = notify.fields("READY=1")[0][0]
    # WATCHDOG=1 keeps coming while frames are processed, rate-limited to WATCHDOG_USEC/4 = 0.5 s.
    pings = [t for t, _ in notify.fields("WATCHDOG=1")]
    assert len(pings) >= 10, f"only {len(pings)} watchdog pings over a 16 s video"
    gaps = [b - a for a, b in zip(pings, pings[1:])]
    assert min(gaps) >= 0.45, "pings must be rate-limited, not one datagram per frame"
    assert max(gaps) < 2.0, f"a gap of {max(gaps):.1f} s would trip WatchdogSec=2s"
    statuses = [f for _, f in notify.fields("STATUS=")]
    measured = [s for s in statuses if re.match(r"STATUS=\d+\.\d fps, \d+ faces, outbox \d+$", s)]
    assert measured, statuses
    assert any(float(s.split("=")[1].split()[0]) > 1 for s in measured), f"no frame rate in {measured}"
    assert any(not s.startswith("STATUS=0 faces") and ", 0 faces" not in s for s in measured), \
        f"faces were in view but STATUS never said so: {measured}"
    # STOPPING=1 is the last word and comes after READY.
    assert fields[-1] == "STOPPING=1" and notify.fields("STOPPING=1")[0][0] > ready_at


@pytest.mark.slow
def test_no_listening_port_while_running(service_run):
    assert service_run["listening"] == []


@pytest.mark.slow
def test_state_files_owner_only(service_run):
    modes = service_run["modes"]
    assert modes["state"] == 0o700, oct(modes["state"])
    assert {"edge.db", "edge.db-wal", "edge.db-shm"} <= set(modes), modes
    for name in ("edge.db", "edge.db-wal", "edge.db-shm"):
        assert modes[name] == 0o600, f"{name}: {oct(modes[name])}"


def test_watchdog_pid_of_another_process_disables_pings(monkeypatch):
    from edge.notify import Notifier
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert Notifier("/nonexistent").watchdog_usec == 0
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    notifier = Notifier("/nonexistent")
    assert notifier.watchdog_usec == 30_000_000 and notifier.watchdog_interval_s == 7.5


# --- the unit file and the install path -------------------------------------------------------------


def test_unit_has_the_service_contract():
    text = UNIT.read_text()
    for line in ("Type=notify", "WatchdogSec=30", "Restart=on-failure", "User=edge", "SupplementaryGroups=video",
                 "StateDirectory=edge", "ExecStart=/opt/edge/venv/bin/edge run --config /etc/edge/edge.yaml",
                 "NoNewPrivileges=yes", "ProtectSystem=strict", "ProtectHome=yes", "PrivateTmp=yes",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6", "DeviceAllow=char-video4linux rw",
                 "UMask=0077", "RestartPreventExitStatus=2 3"):
        assert re.search(rf"^{re.escape(line)}$", text, re.M), f"missing {line}"


@pytest.mark.parametrize("shipped, installed_as", [(UNIT, "edge.service"), (TEMPLATE, "edge@door.service")])
def test_units_pass_systemd_analyze_verify_and_security(shipped, installed_as, tmp_path):
    analyze = require_program("systemd-analyze", package="systemd")
    # verify checks that ExecStart exists; /opt/edge is only there after install.sh, so point it at this
    # checkout's `edge` (same arguments) and verify everything else as shipped.
    edge_bin = Path(sys.executable).with_name("edge")
    if not edge_bin.exists():
        pytest.skip(f"{edge_bin} missing: pip install -e . first")
    unit = tmp_path / installed_as
    unit.write_text(shipped.read_text().replace("/opt/edge/venv/bin/edge", str(edge_bin)))
    result = subprocess.run([analyze, "verify", "--man=no", str(unit)], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if installed_as in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr
    security = subprocess.run([analyze, "security", "--offline=yes", str(unit)], capture_output=True, text=True,
                              timeout=60, cwd=tmp_path)
    score = re.search(rf"Overall exposure level for {re.escape(installed_as)}: ([\d.]+)", security.stdout)
    assert score and float(score.group(1)) <= 2.5, security.stdout[-500:]


def test_install_script_stages_files(tmp_path):
    stage = tmp_path / "stage"
    result = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), "--no-venv"], capture_output=True,
                            text=True, timeout=120, env={**os.environ, "DESTDIR": str(stage)})
    assert result.returncode == 0, result.stderr
    assert (stage / "etc/systemd/system/edge.service").read_text() == UNIT.read_text()
    # Several cameras: the per-camera template and the folder of their config files.
    assert (stage / "etc/systemd/system/edge@.service").read_text() == TEMPLATE.read_text()
    assert stat.S_IMODE((stage / "etc/edge/cameras").stat().st_mode) == 0o750
    config = stage / "etc/edge/edge.yaml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert stat.S_IMODE((stage / "etc/edge").stat().st_mode) == 0o750
    assert os.readlink(stage / "usr/local/bin/edge") == "/opt/edge/venv/bin/edge"
    assert (stage / "opt/edge/src/training/enroll_folder.py").exists()
    from edge.config import load_config
    # The service's database for every command that finds this config (not the caller's home folder).
    assert load_config(config).store.path == Path("/var/lib/edge/edge.db")
    assert "edge.yaml not edited yet" in result.stdout       # the service is started only once it is
    # Re-running never overwrites a config a person has edited, and then counts it as configured.
    config.write_text(config.read_text() + "# edited\n")
    again = subprocess.run(["bash", str(ROOT / "scripts" / "install.sh"), "--no-venv"], check=True,
                           capture_output=True, text=True, timeout=120, env={**os.environ, "DESTDIR": str(stage)})
    assert config.read_text().endswith("# edited\n") and "edge.yaml edited)" in again.stdout
