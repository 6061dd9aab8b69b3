#!/usr/bin/env bash
# An emulated arm64 box: builds a Debian 12 (bookworm) arm64 root filesystem with debootstrap and runs it
# through qemu-user-static, then inside it (chroot) makes a venv, pip-installs this checkout from PyPI's
# aarch64 wheels and runs `edge demo`, `edge doctor`, and with the LiteRT backend forced `edge models verify`,
# `edge analyze` and `edge doctor`. Ends with a summary; exits non-zero when any step fails.
#
# Usage: sudo scripts/check-arm64.sh [--fresh] [ROOT]     (or: make check-arm64)
#   ROOT     where the root filesystem lives (default /var/tmp/edge-arm64/bookworm); kept between runs, so a
#            second run skips debootstrap and apt and reuses pip's cache.
#   --fresh  delete the venv first (the root filesystem and pip's download cache stay).
#   EDGE_ARM64_MIRROR  Debian mirror for debootstrap (default http://deb.debian.org/debian).
# Needs root (debootstrap, mount, chroot) and network access to the Debian mirror and PyPI. Under emulation
# every step is slow: the first run takes several minutes; see the README ("Checked on an emulated arm64
# Debian 12").
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
MIRROR="${EDGE_ARM64_MIRROR:-http://deb.debian.org/debian}"
ROOT=/var/tmp/edge-arm64/bookworm
FRESH=0
for arg in "$@"; do
  case "$arg" in
    --fresh) FRESH=1 ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    -*) echo "check-arm64: unknown option $arg" >&2; exit 2 ;;
    *) ROOT="$arg" ;;
  esac
done
if [ "$(id -u)" != 0 ]; then
  echo "check-arm64: run as root (debootstrap, mount and chroot need it): sudo $0 $*" >&2; exit 1
fi
ROOT="$(mkdir -p "$ROOT" && cd "$ROOT" && pwd)"

VENV=/opt/edge-venv            # paths inside the chroot
CHECKOUT=/opt/edge-src
LOGS="$ROOT/../logs-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$LOGS"
LOGS="$(cd "$LOGS" && pwd)"
STARTED=$(date +%s.%N)
SUMMARY=()                     # one line per step, printed at the end
FAILED=0

note() { printf '\n== check-arm64: %s\n' "$*"; }
seconds_since() { awk -v a="$1" -v b="$(date +%s.%N)" 'BEGIN { printf "%.0f", b - a }'; }

# step NAME DETAIL-FUNCTION COMMAND...: runs COMMAND with its output in $LOGS/NAME.log (and on the terminal),
# times it, and records one summary line; DETAIL-FUNCTION (or -) turns the log into the line's detail and
# fails the step when the output is wrong. Bash ignores `set -e` inside a function called from `if`/`||`,
# so the step functions below chain their commands with `|| return`.
step() {
  local name="$1" detail="$2"; shift 2
  local log="$LOGS/$(echo "$name" | sed 's/[^a-z0-9]\+/-/g; s/-$//').log" t0 rc=0 text=""
  note "$name: $*"
  t0=$(date +%s.%N)
  "$@" > >(tee "$log") 2> >(tee "$log.err" >&2) || rc=$?
  wait   # let tee finish writing before the detail function reads the logs
  if [ "$detail" != - ] && ! text="$("$detail" "$log" 2>&1)" && [ "$rc" = 0 ]; then rc=1; fi
  SUMMARY+=("$(printf '%-34s %6s s  %-4s %s' "$name" "$(seconds_since "$t0")" \
                "$([ "$rc" = 0 ] && echo ok || echo "FAIL($rc)")" "$text")")
  if [ "$rc" != 0 ]; then FAILED=1; fi
  return "$rc"
}

print_summary() {
  printf '\n== check-arm64 summary (%s, logs in %s)\n' "$ROOT" "$LOGS"
  printf '%s\n' "${SUMMARY[@]}"
  printf '%-34s %6s s  %s\n' "total" "$(seconds_since "$STARTED")" "$([ "$FAILED" = 0 ] && echo ok || echo FAILED)"
}

# --- host tools: Debian's qemu-user-static (binfmt entries registered by binfmt-support) and debootstrap
missing=""
command -v debootstrap >/dev/null || missing="$missing debootstrap"
[ -e /usr/libexec/qemu-binfmt/aarch64-binfmt-P ] || command -v qemu-aarch64-static >/dev/null \
  || missing="$missing qemu-user-static"
command -v update-binfmts >/dev/null || missing="$missing binfmt-support"
if [ -n "$missing" ]; then
  note "apt-get install$missing"
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $missing
fi
# A container or VM may come without binfmt_misc mounted; the kernel then cannot hand arm64 binaries to qemu.
if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
  mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
fi
if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || ! grep -q '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
  update-binfmts --enable qemu-aarch64
fi
# The F flag makes the kernel open qemu once at registration, so it works inside the chroot without a copy.
grep -q '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
  || { echo "check-arm64: binfmt entry qemu-aarch64 lacks the F flag (qemu-user-static from Debian sets it)" >&2
       exit 1; }

# --- the root filesystem, built once: debootstrap writes .edge-debootstrap-done only after a complete run
debootstrap_root() {
  if [ -e "$ROOT/.edge-debootstrap-done" ]; then echo "cached: $ROOT"; return 0; fi
  find "$ROOT" -mindepth 1 -maxdepth 1 -exec rm -rf {} +   # a half-built root from an interrupted run
  debootstrap --arch=arm64 --variant=minbase bookworm "$ROOT" "$MIRROR" || return
  touch "$ROOT/.edge-debootstrap-done"
}
step "debootstrap bookworm arm64" - debootstrap_root || { print_summary; exit 1; }

# --- mounts for the chroot, undone on any exit
MOUNTS=()
cleanup() {
  local i
  for ((i = ${#MOUNTS[@]} - 1; i >= 0; i--)); do
    umount "${MOUNTS[i]}" 2>/dev/null || umount -l "${MOUNTS[i]}"
  done
}
trap cleanup EXIT
mount_in() {   # mount_in TARGET MOUNT-ARGS...
  mountpoint -q "$ROOT$1" && return 0
  mkdir -p "$ROOT$1"
  mount "${@:2}" "$ROOT$1"
  MOUNTS+=("$ROOT$1")
}
# No /sys: the host's x86 sysfs under an arm64 userland makes onnxruntime's cpuinfo crash at import
# (SIGSEGV, onnxruntime 1.32 under qemu 7.2); without it cpuinfo gives up with one warning.
mount_in /proc -t proc proc
mount_in /dev --bind /dev
mount_in /dev/pts --bind /dev/pts
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# CAs the host trusts locally (e.g. a company TLS proxy) are trusted inside too; empty on most machines.
mkdir -p "$ROOT/usr/local/share/ca-certificates"
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
fi

# in_root COMMAND...: runs COMMAND in the chroot with a clean environment, from /tmp (not the checkout,
# so the installed package must find its own models and config).
in_root() {
  chroot "$ROOT" /usr/bin/env -i -C /tmp HOME=/root LANG=C.UTF-8 TERM=dumb \
    PATH="$VENV/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" \
    DEBIAN_FRONTEND=noninteractive PIP_CERT=/etc/ssl/certs/ca-certificates.crt PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_DEFAULT_TIMEOUT=120 ${http_proxy:+http_proxy=$http_proxy} ${https_proxy:+https_proxy=$https_proxy} \
    "$@"
}

apt_python() {
  local packages="python3 python3-venv ca-certificates"
  if [ "$(cat "$ROOT/.edge-apt-done" 2>/dev/null)" = "$packages" ]; then
    echo "cached: $packages"
  else
    in_root apt-get update -q || return
    in_root apt-get install -y -q --no-install-recommends $packages || return
    echo "$packages" > "$ROOT/.edge-apt-done"
  fi
  local crt   # slow under emulation: only when a host CA is not in the bundle yet
  for crt in "$ROOT"/usr/local/share/ca-certificates/*.crt; do
    [ -e "$crt" ] && [ ! -e "$ROOT/etc/ssl/certs/$(basename "$crt" .crt).pem" ] || continue
    in_root update-ca-certificates >/dev/null || return
    break
  done
  in_root sh -c 'echo "$(uname -m), $(python3 --version), $(. /etc/os-release; echo $PRETTY_NAME)"'
}
last_line() { tail -n 1 "$1"; }
step "apt python3 python3-venv" last_line apt_python || { print_summary; exit 1; }

# --- the checkout: what git tracks plus untracked files it does not ignore (the working tree as it is)
copy_checkout() {
  rm -rf "${ROOT:?}$CHECKOUT" && mkdir -p "$ROOT$CHECKOUT" || return
  if git -C "$SRC" rev-parse --git-dir >/dev/null 2>&1; then
    (cd "$SRC" && git ls-files -z --cached --others --exclude-standard \
      | tar --null --ignore-failed-read -T - -cf -) | tar -xf - -C "$ROOT$CHECKOUT" || return
  else
    tar -C "$SRC" --exclude=.git --exclude='*.egg-info' --exclude=__pycache__ -cf - . \
      | tar -xf - -C "$ROOT$CHECKOUT" || return
  fi
  du -sh "$ROOT$CHECKOUT" | cut -f1
}
size_detail() { echo "$(tail -n 1 "$1") copied to $CHECKOUT"; }
step "copy checkout" size_detail copy_checkout || { print_summary; exit 1; }

pip_install() {
  if [ "$FRESH" = 1 ]; then rm -rf "${ROOT:?}$VENV"; fi
  [ -x "$ROOT$VENV/bin/python" ] || in_root python3 -m venv "$VENV" || return
  # A kept venv holds the last run's install, editable or not: remove it so only this checkout is imported.
  in_root pip uninstall -y -q edge-face-appliance || return
  # A normal install, as a user makes it: pip builds the wheel, which carries models/ and config/.
  in_root pip install "$CHECKOUT" || return
  in_root pip list --format=freeze
}
pip_detail() {
  local versions
  versions=$(grep -iE '^(onnxruntime|ai-edge-litert|opencv-python-headless|numpy)==' "$1" | tr '\n' ' ')
  echo "wheel built and installed; $versions"
}
step "venv + pip install" pip_detail pip_install || { print_summary; exit 1; }

# --- the appliance's own commands, run from /tmp inside the arm64 root
DEMO_DIR=$(in_root python -c 'import edge.cli as c; print(c.DEMO_DIR)') \
  || { SUMMARY+=("the installed package does not import: python -c 'import edge.cli' failed"); FAILED=1
       print_summary; exit 1; }
FACE="$DEMO_DIR/gallery/eileen_collins.jpg"
LITERT=(--set models.backend=litert)
# The doctor's camera check opens the demo video (a chroot has no camera) and no broker is expected.
DOCTOR_SETTINGS=(--set "source=$DEMO_DIR/demo.mp4" --set mqtt.enabled=false)

demo_detail() {   # events by type, who was identified, the demo's own frames/s line; Eileen Collins is
                  # enrolled from the gallery, Grace Hopper is not
  python3 - "$1" "$1.err" <<'EOF'
import collections, json, sys
events = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
types = collections.Counter(e["type"] for e in events)
who = sorted({(e["identity"] or {}).get("name", "unknown") for e in events if e["type"] == "face_identified"})
rate = [l.strip() for l in open(sys.argv[2]) if l.startswith("demo:") and "frames/s" in l]
print(", ".join(f"{n} {t}" for t, n in sorted(types.items())) + f"; identified: {', '.join(who) or 'nobody'}"
      + (f"; {rate[-1][6:]}" if rate else ""))
if "eileen_collins" not in who:
    sys.exit("the enrolled person (eileen_collins) was not identified")
if set(who) - {"eileen_collins", "unknown"}:
    sys.exit(f"a face was identified as someone who is not enrolled: {who}")
EOF
}
doctor_detail() {   # board and the backend chosen per model
  python3 - "$1" <<'EOF'
import re, sys
text = open(sys.argv[1]).read()
board = re.search(r"^board: (.*)$", text, re.M)
plans = re.findall(r"^  (\w+): (\w+) \((.*)\) <- (\S+)$", text, re.M)
print(f"board {board.group(1) if board else '?'}; " + ", ".join(f"{m} {k}" for m, k, _, _ in plans)
      + (f"; why: {plans[0][2]}" if plans else ""))
if not plans:
    sys.exit("doctor printed no backend plan")
EOF
}
verify_detail() {   # how many files, and where the installed package found them
  local dirs
  dirs=$(awk '/^(OK|FAIL) / { sub(/:.*/, "", $2); sub(/\/[^\/]*$/, "", $2); print $2 }' "$1" | sort -u)
  echo "$(grep -c '^OK' "$1") files OK, $(grep -c '^FAIL' "$1") failed, in ${dirs//$'\n'/ }"
}
analyze_detail() {
  python3 - "$1" <<'EOF'
import json, sys
results = [json.loads(line) for line in open(sys.argv[1]) if line.startswith("{")]
faces = [f for r in results for f in r["faces"]]
print(f"{len(faces)} face(s): " + "; ".join(
    f"age {f['age']:.0f}, {f['gender']['label']} {f['gender']['confidence']:.2f}" for f in faces))
if len(faces) != 1:
    sys.exit("expected exactly one face in the gallery photo")
EOF
}

step "edge demo" demo_detail in_root edge demo || true
step "edge doctor" doctor_detail in_root edge doctor "${DOCTOR_SETTINGS[@]}" || true
step "edge models verify [litert]" verify_detail in_root edge models verify "${LITERT[@]}" || true
step "edge analyze [litert]" analyze_detail in_root edge analyze --json "${LITERT[@]}" "$FACE" || true
step "edge doctor [litert]" doctor_detail in_root edge doctor "${LITERT[@]}" "${DOCTOR_SETTINGS[@]}" || true

print_summary
exit "$FAILED"
