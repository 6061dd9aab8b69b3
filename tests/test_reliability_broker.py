"""The broker side on real Mosquitto processes: refused credentials, TLS (server verification, client
certificates, a wrong CA), a 30-second outage with figures. Credentials never reach a log."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from conftest import Broker, free_port, free_ports, require_module, require_mosquitto, require_program
from edge_process import EdgeProcess, base_args

PASSWORD = "s3cret-Pa55w0rd-xyzzy"


def face_appeared(events) -> bool:
    return any(e["type"] == "face_appeared" for e in events)


def outbox(db: Path) -> set[str]:
    with sqlite3.connect(db) as conn:
        return {r[0] for r in conn.execute("SELECT event_id FROM outbox")}


def write_conf(broker: Broker, body: str) -> None:
    """Replace the fixture broker's config: listener 1 (broker.port) stays anonymous for the test's
    subscriber, further listeners carry what is under test."""
    broker.conf.write_text(
        # mosquitto started as root drops to user `mosquitto`, which could not read the test's 0600 files.
        "user root\nper_listener_settings true\n"
        f"persistence false\nlog_dest file {broker.workdir}/mosquitto.log\n"
        f"listener {broker.port} 127.0.0.1\nallow_anonymous true\n" + body)


@pytest.fixture
def auth_broker(tmp_path):
    require_mosquitto()
    binary = require_program("mosquitto_passwd", package="mosquitto")
    passwords = tmp_path / "passwd"
    subprocess.run([binary, "-b", "-c", str(passwords), "edge", PASSWORD], check=True, capture_output=True)
    os.chmod(passwords, 0o600)   # mosquitto 2.x warns about world-readable password files
    broker = Broker(tmp_path)
    broker.auth_port = free_ports(1, avoid={broker.port})[0]
    write_conf(broker, f"listener {broker.auth_port} 127.0.0.1\nallow_anonymous false\npassword_file {passwords}\n")
    broker.start()
    yield broker
    broker.stop()


@pytest.mark.slow
def test_wrong_password_one_clear_error_events_queue_secret_never_logged(auth_broker, tmp_path):
    db = tmp_path / "edge.db"
    daemon = EdgeProcess(*base_args(db, "--set", "mqtt.username=edge", "--set", "log_level=DEBUG",
                                    port=auth_broker.auth_port),
                         env={"EDGE_MQTT_PASSWORD": "wrong-" + PASSWORD})
    daemon.wait_events(lambda ev: len(ev) >= 2)
    time.sleep(3)     # several reconnect attempts
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0, daemon.stderr()
    refused = [line for _, line in daemon.log if "refused the connection" in line]
    assert len(refused) == 1, daemon.stderr()
    assert f"127.0.0.1:{auth_broker.auth_port}" in refused[0] and "Not authorized" in refused[0]
    assert PASSWORD not in daemon.stderr() and "wrong-" not in daemon.stderr()
    assert {e["event_id"] for e in daemon.events} == outbox(db), "every event is kept in the outbox"


@pytest.mark.slow
@pytest.mark.parametrize("source", ["password_file", "env", "config"])
def test_right_password_delivers(source, auth_broker, subscriber_factory, tmp_path):
    subscriber = subscriber_factory(auth_broker.port, topic="door1/events")
    extra, env = ["--set", "mqtt.username=edge"], {"EDGE_MQTT_PASSWORD": ""}
    if source == "password_file":
        secret = tmp_path / "mqtt-password"
        secret.write_text(PASSWORD + "\n")
        extra += ["--set", f"mqtt.password_file={secret}", "--set", "mqtt.password=wrong"]
    elif source == "env":
        env["EDGE_MQTT_PASSWORD"] = PASSWORD
        extra += ["--set", "mqtt.password=wrong"]     # the environment wins over the file and the config
    else:
        extra += ["--set", f"mqtt.password={PASSWORD}"]
    daemon = EdgeProcess(*base_args(tmp_path / "edge.db", "--max-frames", "60", *extra, pace="every_frame",
                                    port=auth_broker.auth_port), env=env)
    assert daemon.wait(120) == 0, daemon.stderr()
    produced = {e["event_id"] for e in daemon.events}
    assert produced and subscriber.wait_for(lambda s: produced <= {e["event_id"] for e in s.events()}, 15)
    assert PASSWORD not in daemon.stderr()


def test_unreadable_password_file_is_a_config_error(tmp_path):
    daemon = EdgeProcess(*base_args(tmp_path / "edge.db", "--set", "mqtt.username=edge", "--set",
                                    f"mqtt.password_file={tmp_path / 'missing'}", port=free_port()),
                         env={"EDGE_MQTT_PASSWORD": ""})
    assert daemon.wait(60) == 2
    assert daemon.stderr().startswith("config error: mqtt.password_file: cannot read"), daemon.stderr()
    assert "Traceback" not in daemon.stderr()


# --- TLS ---------------------------------------------------------------------------------------------


def make_pki(directory: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1/localhost, a client certificate, and an unrelated CA."""
    x509 = require_module("cryptography.x509", "cryptography", "a test CA and certificates")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    files: dict[str, Path] = {}

    def name(cn):
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])

    def save(stem, key, cert):
        files[f"{stem}_key"] = directory / f"{stem}.key"
        files[f"{stem}_key"].write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                           serialization.PrivateFormat.PKCS8,
                                                           serialization.NoEncryption()))
        files[stem] = directory / f"{stem}.crt"
        files[stem].write_bytes(cert.public_bytes(serialization.Encoding.PEM))

    def ca(cn):
        key = ec.generate_private_key(ec.SECP256R1())
        cert = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(name(cn))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(days=1))
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False),
                               critical=True)
                .sign(key, hashes.SHA256()))
        return key, cert

    def leaf(cn, ca_key, ca_cert, server: bool):
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (x509.CertificateBuilder().subject_name(name(cn)).issuer_name(ca_cert.subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server
                                                         else ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False))
        if server:
            builder = builder.add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return key, builder.sign(ca_key, hashes.SHA256())

    ca_key, ca_cert = ca("edge test CA")
    save("ca", ca_key, ca_cert)
    save("server", *leaf("127.0.0.1", ca_key, ca_cert, server=True))
    save("client", *leaf("edge-box", ca_key, ca_cert, server=False))
    save("other_ca", *ca("somebody else's CA"))
    return files


@pytest.fixture
def tls_broker(tmp_path):
    require_mosquitto()
    pki = make_pki(tmp_path)
    broker = Broker(tmp_path)
    broker.pki = pki
    broker.tls_port, broker.mtls_port = free_ports(2, avoid={broker.port})
    tls = f"cafile {pki['ca']}\ncertfile {pki['server']}\nkeyfile {pki['server_key']}\n"
    write_conf(broker, f"listener {broker.tls_port} 127.0.0.1\nallow_anonymous true\n{tls}"
                       f"listener {broker.mtls_port} 127.0.0.1\nallow_anonymous true\n{tls}"
                       "require_certificate true\nuse_identity_as_username true\n")
    broker.start()
    yield broker
    broker.stop()


@pytest.mark.slow
@pytest.mark.parametrize("client_cert", [False, True], ids=["server-verified", "client-certificate"])
def test_tls_events_arrive(client_cert, tls_broker, subscriber_factory, tmp_path):
    pki = tls_broker.pki
    subscriber = subscriber_factory(tls_broker.port, topic="door1/events")
    extra = ["--set", "mqtt.tls=true", "--set", f"mqtt.ca_file={pki['ca']}", "--set", "mqtt.host=localhost"]
    port = tls_broker.tls_port
    if client_cert:
        extra += ["--set", f"mqtt.cert_file={pki['client']}", "--set", f"mqtt.key_file={pki['client_key']}"]
        port = tls_broker.mtls_port
    args = base_args(tmp_path / "edge.db", "--max-frames", "60", pace="every_frame", port=port)
    daemon = EdgeProcess(*args, *extra)
    assert daemon.wait(120) == 0, daemon.stderr()
    produced = {e["event_id"] for e in daemon.events}
    assert produced and subscriber.wait_for(lambda s: produced <= {e["event_id"] for e in s.events()}, 15), \
        daemon.stderr()
    assert outbox(tmp_path / "edge.db") == set()


@pytest.mark.slow
def test_tls_wrong_ca_is_refused_with_a_clear_error(tls_broker, tmp_path):
    db = tmp_path / "edge.db"
    daemon = EdgeProcess(*base_args(db, "--set", "mqtt.tls=true", "--set",
                                    f"mqtt.ca_file={tls_broker.pki['other_ca']}", port=tls_broker.tls_port))
    daemon.wait_log(r"certificate verification failed", timeout=60)
    daemon.wait_events(face_appeared)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0
    errors = [line for _, line in daemon.log if "certificate verification failed" in line]
    assert len(errors) == 1 and f"127.0.0.1:{tls_broker.tls_port}" in errors[0], daemon.stderr()
    assert {e["event_id"] for e in daemon.events} == outbox(db), "nothing was sent to an unverified broker"


def test_tls_ca_file_missing_is_a_config_error(tmp_path):
    daemon = EdgeProcess(*base_args(tmp_path / "edge.db", "--set", "mqtt.tls=true", "--set",
                                    f"mqtt.ca_file={tmp_path / 'nope.crt'}", port=free_port()))
    assert daemon.wait(60) == 2 and daemon.stderr().startswith("config error: mqtt."), daemon.stderr()


# --- a long outage, for the figures --------------------------------------------------------------------


@pytest.mark.slow
def test_30_second_broker_outage_loses_nothing(broker, subscriber_factory, tmp_path):
    subscriber = subscriber_factory(broker.port, topic="door1/events", client_id="outage-30")
    daemon = EdgeProcess(*base_args(tmp_path / "edge.db", "--set", "capture.loop=true", port=broker.port))
    daemon.wait_events(face_appeared)
    broker.stop()
    before = len(daemon.events)
    time.sleep(30)
    during = len(daemon.events) - before
    broker.start()
    time.sleep(8)
    daemon.signal(signal.SIGTERM)
    assert daemon.wait(30) == 0, daemon.stderr()
    produced = {e["event_id"] for e in daemon.events}
    assert subscriber.wait_for(lambda s: produced <= {e["event_id"] for e in s.events()}, timeout=30)
    delivered = produced & {e["event_id"] for e in subscriber.events()}
    print(f"\n30 s broker outage: {len(produced)} events produced ({during} during the outage), "
          f"{len(delivered)} delivered")
    assert during >= 3 and delivered == produced


# --- an ACL that refuses our events (MQTT v5 PUBACK reason codes) ---------------------------------------


@pytest.fixture
def acl_broker(tmp_path):
    """Listener 1 (broker.port): anonymous, no ACL, for the test's subscriber. Listener 2 (broker.acl_port):
    the daemon's, with an ACL file that refuses publishing on door1/events (Mosquitto 2 answers a v5
    PUBACK "Not authorized", 0x87)."""
    require_mosquitto()
    broker = Broker(tmp_path)
    broker.acl_port = free_port()
    broker.acl = tmp_path / "acl"
    broker.acl.write_text("topic readwrite #\ntopic deny door1/events\n")
    write_conf(broker, f"listener {broker.acl_port} 127.0.0.1\nallow_anonymous true\nacl_file {broker.acl}\n")
    broker.start()
    yield broker
    broker.stop()


def test_events_the_broker_refuses_stay_in_the_outbox_are_reported_and_go_out_once_allowed(
        acl_broker, subscriber_factory, tmp_path):
    db = tmp_path / "edge.db"
    subscriber = subscriber_factory(acl_broker.port, topic="door1/events")
    web_port = free_port()
    daemon = EdgeProcess(*base_args(db, "--max-frames", "400", "--set", "web.enabled=true", "--set",
                                    f"web.port={web_port}", pace="realtime", port=acl_broker.acl_port))
    daemon.wait_log(r"refused a message on door1/events", timeout=60)

    def served(path: str) -> str:
        import urllib.request
        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}{path}", timeout=5) as reply:
            return reply.read().decode()
    # The refusal is counted on /metrics and named in /healthz (the status page's figures).
    daemon.wait_until(lambda p: re.search(r"^edge_mqtt_refused_total [1-9]", served("/metrics"), re.M), 30,
                      "edge_mqtt_refused_total > 0")
    assert json.loads(served("/healthz"))["broker_refuses"] == ["door1/events"]
    assert daemon.wait(120) == 0, daemon.stderr()
    produced = {e["event_id"] for e in daemon.events}
    refused = [line for _, line in daemon.log if "refused a message on door1/events" in line]
    print(f"\nACL refusing door1/events: {len(produced)} events produced, {len(outbox(db))} still in the outbox, "
          f"{len(subscriber.events())} received; log: {refused}")
    assert len(produced) >= 3 and outbox(db) == produced, "nothing the broker refused left the outbox"
    assert len(refused) == 1 and "Not authorized" in refused[0] and "0x87" in refused[0], daemon.stderr()
    assert subscriber.events() == []

    # The ACL is fixed: the next start delivers every held event.
    acl_broker.stop()
    acl_broker.acl.write_text("topic readwrite #\n")
    acl_broker.start()
    subscriber = subscriber_factory(acl_broker.port, topic="door1/events", client_id="after-acl-fix")
    daemon = EdgeProcess(*base_args(db, "--max-frames", "30", pace="every_frame", port=acl_broker.acl_port))
    assert daemon.wait(120) == 0, daemon.stderr()
    assert subscriber.wait_for(lambda s: produced <= {e["event_id"] for e in s.events()}, 15)
    assert outbox(db) == set() and "refused" not in daemon.stderr()


def test_a_refused_topic_is_retried_with_backoff_and_counted(acl_broker, tmp_path):
    """In-process, for the figures: the publisher holds the topic back, probes it, and delivers once allowed."""
    from conftest import pump_until
    from edge.config import validate
    from edge.publish import Publisher
    from edge.store import Store

    store = Store(tmp_path / "edge.db")
    cfg = validate({"mqtt": {"host": "127.0.0.1", "port": acl_broker.acl_port, "prefix": "door1"}})
    for i in range(5):
        store.record("door1/events", {"event_id": f"e{i}", "type": "face_appeared"}, None)
    publisher = Publisher(cfg.mqtt, "door1", store)
    publisher.start()
    try:
        # The first pump sends all five at once; wait for every one of their refusals before counting.
        assert pump_until(publisher, lambda: publisher.refused_count == 5, timeout=10)
        first = publisher.refused["door1/events"]
        assert first.delay_s == 5.0 and store.outbox_depth() == 5
        refusals = publisher.refused_count
        pump_until(publisher, lambda: False, timeout=2)
        assert publisher.refused_count == refusals, "nothing is re-sent before the retry time"
        assert pump_until(publisher, lambda: publisher.refused_count > refusals, timeout=10)
        assert publisher.refused["door1/events"].delay_s == 10.0 and store.outbox_depth() == 5
        # One probe per retry, not the whole queue.
        assert publisher.refused_count == refusals + 1
    finally:
        publisher.stop()
