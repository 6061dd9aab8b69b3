# `make test` installs what the tests need (Debian packages, Python packages) and runs them.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PYTHON ?= python3

.PHONY: install test-deps test demo bench install-service

install:
	$(PYTHON) -m pip install -e .

# Debian packages the tests start for real, each installed only when missing (one apt-get run):
#   mosquitto        the MQTT broker of every daemon test (plain, TLS, restarts)
#   systemd          systemd-analyze verify on systemd/edge.service (works without systemd as PID 1)
#   xvfb, chromium   the kiosk window on a real X server; the status page rendered in headless Chromium
#   chromium-driver  chromedriver, through which selenium drives that Chromium on the people page
#   python3-tk       Tk for the kiosk window (pulls libtk8.6, which a pyenv Python's tkinter also links)
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

test: test-deps
	$(PYTHON) -m pytest -q tests

demo: install
	edge demo

# the bench extra: sample photos for the generated videos, dlib for the face_recognition loop compared with
bench: install
	$(PYTHON) -m pip install -e '.[bench]'
	$(PYTHON) -m benchmarks.bench_pipeline --detector haar --json benchmarks/results/haar.json

# systemd/edge.service, the edge user, /etc/edge/config.yaml (scripts/install.sh)
install-service:
	$(SUDO) scripts/install.sh
