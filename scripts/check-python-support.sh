#!/usr/bin/env bash
# Python 3.10-3.13 on x86_64 and aarch64, proven without those interpreters (README "Raspberry Pi", "Jetson"):
#   1. vermin: no syntax, module or function newer than Python 3.10 anywhere in the code;
#   2. pip resolves every runtime dependency of setup.py, transitive ones included, as binary wheels for
#      CPython 3.10, 3.11, 3.12 and 3.13 on manylinux x86_64 and aarch64 (--dry-run: metadata only, nothing
#      installed). glibc 2.35 is the floor: Jetson JetPack 6 is Ubuntu 22.04 (2.35); Raspberry Pi OS Bookworm
#      and Debian 12 have 2.36. A dependency with no wheel there would mean a compiler on the box.
# Usage: scripts/check-python-support.sh [PYTHON]   (needs vermin and network access to the package index)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${1:-${PYTHON:-python3}}"
GLIBC_MINOR=35
VERSIONS="3.10 3.11 3.12 3.13"
ARCHES="x86_64 aarch64"

echo "== vermin: minimum Python of the code (target 3.10)"
"$(dirname "$(command -v "$PYTHON")")/vermin" --target=3.10- --no-tips --violations --eval-annotations --backport typing_extensions \
    setup.py edge training benchmarks tests scripts

requirements="$(mktemp)"
work="$(mktemp -d)"
trap 'rm -rf "$requirements" "$work"' EXIT
# install_requires exactly as setup.py declares them (setup() captured, not run).
"$PYTHON" - > "$requirements" <<'PY'
import runpy
import setuptools
captured = {}
setuptools.setup = lambda **kwargs: captured.update(kwargs)
runpy.run_path("setup.py")
print("\n".join(captured["install_requires"]))
PY

failed=0
for arch in $ARCHES; do
  platforms=(--platform "manylinux2014_$arch")
  for minor in $(seq 17 "$GLIBC_MINOR"); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done
  for version in $VERSIONS; do
    report="$work/report-$version-$arch.json"
    if "$PYTHON" -m pip install --quiet --dry-run --ignore-installed --only-binary=:all: --implementation cp \
         --python-version "$version" "${platforms[@]}" --target "$work/target" --report "$report" \
         -r "$requirements" 2> "$work/err"; then
      "$PYTHON" - "$report" "$version" "$arch" <<'PY'
import json, sys
report, version, arch = sys.argv[1:]
wheels = sorted(f"{item['metadata']['name']} {item['metadata']['version']}"
                for item in json.load(open(report))["install"])
print(f"OK   cp{version.replace('.', '')} manylinux_2_35 {arch}: {len(wheels)} wheels: {', '.join(wheels)}")
PY
    else
      failed=$((failed + 1))
      echo "FAIL cp${version/./} manylinux_2_$GLIBC_MINOR $arch: $(grep -E 'ERROR' "$work/err" | head -2 | tr '\n' ' ')"
    fi
  done
done
if [ "$failed" != 0 ]; then
  echo "$failed platform(s) without binary wheels for every dependency" >&2
  exit 1
fi
echo "every dependency resolves as binary wheels for CPython $VERSIONS on $ARCHES"
