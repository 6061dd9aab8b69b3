#!/usr/bin/env bash
# Installs the edge daemon as a systemd service:
#   user `edge` (group edge, member of video), /opt/edge/{src,venv,models}, /etc/edge/edge.yaml, edge.service.
# Usage: sudo scripts/install.sh [--no-venv] [--no-enable]
#   DESTDIR=/tmp/stage scripts/install.sh --no-venv   stages the files only (no user, no systemctl): packaging, tests.
# Re-running upgrades the code and the venv; an existing /etc/edge/edge.yaml is never overwritten.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
DESTDIR="${DESTDIR:-}"
PREFIX="$DESTDIR/opt/edge"
ETC="$DESTDIR/etc/edge"
UNITDIR="$DESTDIR/etc/systemd/system"
PYTHON="${PYTHON:-python3}"
VENV=1 ENABLE=1
for arg in "$@"; do
  case "$arg" in
    --no-venv) VENV=0 ;;
    --no-enable) ENABLE=0 ;;
    *) echo "install.sh: unknown option $arg" >&2; exit 2 ;;
  esac
done
if [ -z "$DESTDIR" ] && [ "$(id -u)" != 0 ]; then
  echo "install.sh: run as root (or set DESTDIR to stage the files)" >&2; exit 1
fi

# 1. A system user with no login and no home: the daemon owns nothing but /var/lib/edge.
if [ -z "$DESTDIR" ] && ! id edge >/dev/null 2>&1; then
  getent group video >/dev/null || groupadd --system video
  useradd --system --user-group --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin \
          --groups video --comment "edge face appliance" edge
fi

# 2. Code and models: root-owned, read-only for the service (ProtectSystem=strict).
install -d -m 0755 "$PREFIX" "$PREFIX/src"
rm -rf "$PREFIX/src/edge" "$PREFIX/models"
cp -r "$SRC/edge" "$SRC/setup.py" "$SRC/README.md" "$PREFIX/src/"
cp -r "$SRC/models" "$PREFIX/models"
find "$PREFIX/src" "$PREFIX/models" -name __pycache__ -prune -exec rm -rf {} +
chmod -R u=rwX,go=rX "$PREFIX/src" "$PREFIX/models"
if [ "$VENV" = 1 ]; then
  "$PYTHON" -m venv "$PREFIX/venv"
  "$PREFIX/venv/bin/pip" install --quiet --upgrade "$PREFIX/src"
fi

# 3. Config: group edge may read it (it may hold the MQTT password), nobody else.
install -d -m 0750 "$ETC"
if [ ! -e "$ETC/edge.yaml" ]; then
  # models/ is not inside the installed package: point the config at /opt/edge/models.
  (umask 0027 && sed -e 's|^  dir: models .*|  dir: /opt/edge/models  # installed by scripts/install.sh|' \
      "$SRC/config/default.yaml" > "$ETC/edge.yaml.new")
  mv "$ETC/edge.yaml.new" "$ETC/edge.yaml"
fi
# Per-camera changes for edge@<camera>.service (README "Several cameras on one box").
install -d -m 0750 "$ETC/cameras"
if [ -z "$DESTDIR" ]; then chown -R root:edge "$ETC"; fi

# 4. The unit.
install -d -m 0755 "$UNITDIR"
install -m 0644 "$SRC/systemd/edge.service" "$UNITDIR/edge.service"
# One process per camera instead (README "Several cameras"): edge@<camera>, reading /etc/edge/cameras/<camera>.yaml.
install -m 0644 "$SRC/systemd/edge@.service" "$UNITDIR/edge@.service"
if [ -z "$DESTDIR" ] && [ -d /run/systemd/system ]; then
  systemctl daemon-reload
  if [ "$ENABLE" = 1 ]; then systemctl enable --now edge.service; fi
  echo "installed; follow it with: journalctl -u edge -f   (status: systemctl status edge)"
else
  echo "installed to ${DESTDIR:-/}; systemd is not running here, start it with: systemctl enable --now edge"
fi
