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
