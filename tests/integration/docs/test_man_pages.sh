#!/usr/bin/env bash
# Every man page renders with groff -ww without a single warning, and the four
# pages the product promises exist.
set -u
command -v groff >/dev/null || { echo "SKIP: groff not installed"; exit 77; }
cd "$SNAPGATE_SRC/man"
fail=0
for p in snapgate.1 snapgate-vmm.1 snapgate-img.1 snapgate-qemu.1 snapgate-hmp.7; do
    [ -f "$p" ] || { echo "FAIL: man/$p missing"; fail=1; }
done
for p in *.[1-8]; do
    out=$(LC_ALL=C.UTF-8 groff -ww -man -Tutf8 -z "$p" 2>&1)
    if [ -n "$out" ]; then echo "FAIL: $p:"; echo "$out"; fail=1; else echo "ok: $p"; fi
done
exit $fail
