#!/usr/bin/env bash
# Builds the Debian package of snapgate with CPack:
#   scripts/make-deb.sh [OUTDIR]      (default: build-deb/)
# A fresh /usr build in build-deb/ (no tests, no fall-back to this source
# tree's web page), then `cpack -G DEB`; prints the .deb's path.  Needs the
# page's npm packages (scripts/install-npm.sh) and dpkg-dev (dpkg-shlibdeps
# fills in Depends from the binaries).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-build-deb}
bdir=${DEB_BUILD_DIR:-build-deb}
if [ ! -f web/node_modules/@xterm/xterm/lib/xterm.mjs ]; then
    echo "make-deb: web/node_modules is missing; run scripts/install-npm.sh first" >&2
    exit 1
fi
for tool in cpack dpkg-deb dpkg-shlibdeps; do
    command -v "$tool" >/dev/null || {
        echo "make-deb: $tool not found (apt-get install cmake dpkg-dev)" >&2
        exit 1
    }
done
cmake -S . -B "$bdir" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INSTALL_PREFIX=/usr \
      -DSNAPGATE_TESTS=OFF -DSNAPGATE_SOURCE_WEB=OFF -DSNAPGATE_WERROR=OFF >/dev/null
cmake --build "$bdir" -j"${JOBS:-2}" >/dev/null
mkdir -p "$out"
out_abs=$(realpath "$out")
(cd "$bdir" && cpack -G DEB -B "$out_abs" >/dev/null)
rm -rf "$out_abs/_CPack_Packages"
ls -t "$out_abs"/snapgate_*.deb | head -1
