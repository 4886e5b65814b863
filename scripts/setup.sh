#!/usr/bin/env bash
# One-step set-up: Debian packages (as root), the page's npm packages, and the
# build into ./build.  Idempotent and quick when everything is in place.
#   scripts/setup.sh            install + build
# Environment: CI=true turns warnings into errors; BUILD_DIR (default build);
#   CMAKE_ARGS adds configure options (e.g. -DSNAPGATE_SANITIZE=ON).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -eq 0 ]; then
    scripts/install-deps.sh
else
    scripts/install-deps.sh || {
        echo "setup: some packages are missing; run this script as root to install them" >&2
        exit 1
    }
fi
scripts/install-npm.sh

build=${BUILD_DIR:-build}
werror=OFF
[ "${CI:-}" = true ] && werror=ON
# shellcheck disable=SC2086
cmake -S . -B "$build" -DSNAPGATE_WERROR=$werror ${CMAKE_ARGS:-} >/dev/null
cmake --build "$build" -j"$(nproc)"
echo "setup: built into $build/"
