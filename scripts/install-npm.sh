#!/usr/bin/env bash
# Installs the pinned npm packages of the page (xterm.js) and of the browser
# tests (playwright-core) from their package-lock.json files.  Skips a folder
# whose node_modules is already up to date with its lock file.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v npm >/dev/null || { echo "install-npm: npm missing (scripts/install-deps.sh)" >&2; exit 1; }
for dir in web tests/web; do
    [ -f "$dir/package-lock.json" ] || continue
    stamp="$dir/node_modules/.package-lock.json"
    if [ -f "$stamp" ] && [ "$stamp" -nt "$dir/package-lock.json" ]; then
        continue
    fi
    echo "install-npm: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
done
