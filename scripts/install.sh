#!/usr/bin/env bash
# Installs the edge daemon as a systemd service:
#   user `edge` (group edge, member of video), the venv /opt/edge/venv (the package carries its models and
#   default config), `edge` on PATH (/usr/local/bin/edge), /etc/edge/edge.yaml, /var/lib/edge, edge.service.
# Usage: sudo scripts/install.sh [--no-venv] [--no-enable] [--system-site-packages]
#   --system-site-packages  the venv also sees apt's Python packages; automatic on a Raspberry Pi, where
#                           python3-picamera2 only exists as a Debian package.
#   DESTDIR=/tmp/stage scripts/install.sh   stages the files under DESTDIR (no user, no chown, no systemctl):
#                           packaging and tests; the staged venv runs as DESTDIR/opt/edge/venv/bin/python -m edge.
# Re-running upgrades the code and the venv; an existing /etc/edge/edge.yaml is never overwritten.
# The service is enabled and started only once /etc/edge/edge.yaml differs from what this script wrote:
# a box with `source: "0"` and `mqtt.host: localhost` it was never told about would only log errors.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
DESTDIR="${DESTDIR:-}"
PREFIX="$DESTDIR/opt/edge"
ETC="$DESTDIR/etc/edge"
STATE="$DESTDIR/var/lib/edge"
BINDIR="$DESTDIR/usr/local/bin"
UNITDIR="$DESTDIR/etc/systemd/system"
PYTHON="${PYTHON:-python3}"
VENV=1 ENABLE=1 SYSTEM_SITE=0
for arg in "$@"; do
  case "$arg" in
    --no-venv) VENV=0 ;;
    --no-enable) ENABLE=0 ;;
    --system-site-packages) SYSTEM_SITE=1 ;;
    *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (or set DESTDIR to stage the files)" >&2; exit 1
fi
if grep -qs "Raspberry Pi" /proc/device-tree/model; then
  SYSTEM_SITE=1     # apt's python3-picamera2 (libcamera bindings) is not on PyPI
fi

# 1. A system user with no login and no home: the daemon owns nothing but /var/lib/edge.
if [ -z "$DESTDIR" ] && ! id edge >/dev/null 2>&1; then
  getent group video >/dev/null || groupadd --system video
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
          --groups video --comment "edge face appliance" edge
fi

# 2. Code: a venv holding the package (which carries models/ and config/default.yaml), root-owned and
#    read-only for the service (ProtectSystem=strict). /opt/edge/src keeps what the README refers to.
install -d -m 0755 "$PREFIX" "$PREFIX/src" "$PREFIX/src/training"
rm -rf "$PREFIX/models" "$PREFIX/src/edge"      # left by versions that copied the source tree
install -m 0644 "$SRC/README.md" "$PREFIX/src/README.md"
install -m 0644 "$SRC/training/enroll_folder.py" "$PREFIX/src/training/enroll_folder.py"
if [ "$VENV" = 1 ]; then
  if [ "$SYSTEM_SITE" = 1 ]; then
    "$PYTHON" -m venv --system-site-packages "$PREFIX/venv"
  else
    "$PYTHON" -m venv "$PREFIX/venv"
  fi
  # Not editable, from a copy: the venv must not depend on the folder this script was started from.
  build="$(mktemp -d)"
  trap 'rm -rf "$build"' EXIT
  (cd "$SRC" && tar --exclude=.git --exclude=build --exclude='*.egg-info' --exclude=__pycache__ -cf - \
      setup.py pyproject.toml MANIFEST.in README.md edge models config scripts/install.sh systemd \
      training/enroll_folder.py) | tar -xf - -C "$build"
  "$PREFIX/venv/bin/python" -m pip install --quiet --upgrade "$build"
  chmod -R u=rwX,go=rX "$PREFIX/venv"
fi
install -d -m 0755 "$BINDIR"
ln -sfn /opt/edge/venv/bin/edge "$BINDIR/edge"

# 3. Config: group edge may read it (it may hold the MQTT password), nobody else. store.path is spelled out so
#    that `sudo -u edge edge enroll ...` writes the database the service reads ($STATE_DIRECTORY exists only
#    inside the service).
template="$(mktemp)"
sed -e 's|^  path: null .*|  path: /var/lib/edge/edge.db   # the service'"'"'s database (StateDirectory=edge)|' \
    "$SRC/config/default.yaml" > "$template"
grep -q '^  path: /var/lib/edge/edge.db' "$template" || { echo "install.sh: store.path not found in config/default.yaml" >&2; exit 1; }
install -d -m 0750 "$ETC"
# Per-camera changes for edge@<camera>.service (README "Several cameras on one box").
install -d -m 0750 "$ETC/cameras"
# edge.yaml.dist is the copy this script last wrote: equal to edge.yaml means nobody has edited it yet.
if [ ! -e "$ETC/edge.yaml" ] || { [ -e "$ETC/edge.yaml.dist" ] && cmp -s "$ETC/edge.yaml" "$ETC/edge.yaml.dist"; }; then
  install -m 0640 "$template" "$ETC/edge.yaml"      # new, or never edited: follows the shipped defaults
  configured=0
else
  configured=1                                      # a person's config: never overwritten
fi
install -m 0640 "$template" "$ETC/edge.yaml.dist"
rm -f "$template"
# The database's folder, for commands run before the service ever started (systemd creates it too).
install -d -m 0700 "$STATE"
if [ -z "$DESTDIR" ]; then
  chown -R root:edge "$ETC"
  chown edge:edge "$STATE"
fi

# 4. The unit; started only once the config was edited.
install -d -m 0755 "$UNITDIR"
install -m 0644 "$SRC/systemd/edge.service" "$UNITDIR/edge.service"
# One process per camera instead (README "Several cameras"): edge@<camera>, reading /etc/edge/cameras/<camera>.yaml.
install -m 0644 "$SRC/systemd/edge@.service" "$UNITDIR/edge@.service"
if [ -n "$DESTDIR" ] || [ ! -d /run/systemd/system ]; then
  if [ "$configured" = 1 ]; then state="edited"; else state="not edited yet: do not start the service before it is"; fi
  echo "installed to ${DESTDIR:-/} (/etc/edge/edge.yaml $state); systemd is not running here"
elif [ "$configured" = 0 ]; then
  systemctl daemon-reload
  echo "installed, not started: edit /etc/edge/edge.yaml first (source: your camera; mqtt.host: your broker),"
  echo "check it with: sudo -u edge edge doctor    then: sudo scripts/install.sh  (or systemctl enable --now edge)"
else
  systemctl daemon-reload
  if [ "$ENABLE" = 1 ]; then
    systemctl enable edge.service
    systemctl restart edge.service
  fi
  echo "installed; follow it with: journalctl -u edge -f   (status: systemctl status edge)"
fi
