# `make test` installs what the tests need (Mosquitto from Debian, Python packages) and runs them.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTHON ?= python3

.PHONY: install test-deps test demo bench

install:
	$(PYTHON) -m pip install -e .

test-deps: install
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || \
		($(SUDO) apt-get update && $(SUDO) apt-get install -y mosquitto)
	$(PYTHON) -m pip install -e '.[test]'

test: test-deps
	$(PYTHON) -m pytest -q tests

demo: install
	edge demo

# --- service (systemd/edge.service, scripts/install.sh) ---
.PHONY: install-service test-deps-service
install-service:
	$(SUDO) scripts/install.sh

# systemd-analyze (Debian's `systemd`, works in a container without systemd as PID 1) verifies the unit;
# cryptography makes the CA and broker certificates of the TLS tests.
test-deps: test-deps-service
test-deps-service:
	command -v systemd-analyze >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y systemd)
	$(PYTHON) -c 'import cryptography' 2>/dev/null || $(PYTHON) -m pip install cryptography

# Kiosk and status page tests (tests/test_display.py, tests/test_web.py): a real X server (Xvfb), headless
# Chromium, and tkinter for the kiosk window (python3-tk serves Debian's python3; a pyenv Python has its own).
test-deps: test-deps-view
.PHONY: test-deps-view
test-deps-view:
	command -v Xvfb >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y xvfb)
	command -v chromium >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)
	$(PYTHON) -c 'import tkinter' 2>/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y python3-tk)
