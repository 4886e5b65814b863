#!/usr/bin/env bash
# Installs every Debian 12 package snapgate needs to build and to run its tests.
# Idempotent: when everything is present it only checks (no apt-get update).
# Usage (as root): scripts/install-deps.sh [--build-only]
set -euo pipefail

build_pkgs=(build-essential cmake pkg-config libjansson-dev libreadline-dev
            libwebsockets-dev libssl-dev libcmocka-dev)
test_pkgs=(qemu-system-x86 qemu-utils chromium tmux clang
           libclang-rt-14-dev groff man-db python3 openssl xz-utils
           libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu)

pkgs=("${build_pkgs[@]}")
[ "${1:-}" = "--build-only" ] || pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

# Node.js: machines of this kind ship their own nodejs (with npm) that conflicts with
# Debian's npm package; take Debian's only when no npm is present at all.
if [ "${1:-}" != "--build-only" ] && ! command -v npm >/dev/null 2>&1; then
    missing+=(nodejs npm)
fi

if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all ${#pkgs[@]} packages present"
    exit 0
fi

if [ "$(id -u)" -ne 0 ]; then
    echo "install-deps: missing packages: ${missing[*]}" >&2
    echo "install-deps: run as root (sudo $0) to install them" >&2
    exit 1
fi

echo "install-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}"
