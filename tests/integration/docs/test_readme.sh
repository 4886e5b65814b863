#!/usr/bin/env bash
# The README keeps its promise: exactly two quick-start command lines, the test
# one is what .ci/run executes, and every program it names is built.
set -u
cd "$SNAPGATE_SRC"
block=$(awk '/^## Quick start/{q=1;next} q&&/^```/{n++; if(n==2)exit; next} q&&n==1' README.md)
lines=$(printf '%s\n' "$block" | grep -cv '^\s*$')
[ "$lines" -eq 2 ] || { echo "FAIL: quick start has $lines command lines, want 2"; exit 1; }
printf '%s\n' "$block" | grep -q '^scripts/setup\.sh && ctest ' || { echo "FAIL: no test line"; exit 1; }
grep -q "grep -m1 -E '^scripts/setup" .ci/run || { echo "FAIL: .ci/run does not run the README line"; exit 1; }
for b in snapgate snapgate-vmm snapgate-img snapgate-qemu; do
    [ -x "$SNAPGATE_BUILD/$b" ] || { echo "FAIL: build/$b not built"; exit 1; }
done
echo "ok: README quick start"
