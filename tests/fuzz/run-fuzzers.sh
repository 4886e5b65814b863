#!/usr/bin/env bash
# run-fuzzers.sh [SECONDS] — builds every libFuzzer target (CMake targets named
# fuzz_*) with clang in $BUILD_DIR (default build-fuzz), runs each for SECONDS
# (default 60) on a scratch copy of its seed corpus, and prints a table:
#   target  executions  crashes  exit
# Exits non-zero when any target crashed, leaked, timed out or did not build.
#
# Environment:
#   BUILD_DIR      build directory (default build-fuzz, relative to the source root)
#   FUZZ_TARGETS   space-separated subset of targets to run (default: all found)
#   FUZZ_JOBS      make -j for the build (default 2)
#   FUZZ_KEEP      directory to keep corpora + crash artifacts in (default: a temp dir, removed)
#   FUZZ_ARGS      extra libFuzzer flags (e.g. "-max_len=65536")
set -uo pipefail

secs=${1:-60}
case $secs in
    ''|*[!0-9]*) echo "usage: $0 [SECONDS]" >&2; exit 2 ;;
esac
src=$(cd "$(dirname "$0")/../.." && pwd)
cd "$src" || exit 2
build=${BUILD_DIR:-build-fuzz}
jobs=${FUZZ_JOBS:-2}

if ! command -v clang >/dev/null; then
    echo "run-fuzzers: clang not found (Debian package 'clang')" >&2
    exit 2
fi

echo "== configuring $build (clang, SNAPGATE_FUZZ=ON)"
if ! cmake -S . -B "$build" -DCMAKE_C_COMPILER=clang -DSNAPGATE_FUZZ=ON \
        -DCMAKE_BUILD_TYPE=RelWithDebInfo >"$build.configure.log" 2>&1; then
    cat "$build.configure.log" >&2
    echo "run-fuzzers: configure failed" >&2
    exit 2
fi
rm -f "$build.configure.log"

# Discover targets from the generated build system, so a new fuzz_<x> target
# anywhere in the tree is picked up without editing this script.
mapfile -t found < <(cmake --build "$build" --target help 2>/dev/null |
    sed -nE 's/^(\.\.\. )?(fuzz_[A-Za-z0-9_]+)(:.*)?$/\2/p' | sort -u)
if [[ -n ${FUZZ_TARGETS:-} ]]; then
    read -r -a found <<<"$FUZZ_TARGETS"
fi
if ((${#found[@]} == 0)); then
    echo "run-fuzzers: no fuzz_* targets in $build" >&2
    exit 2
fi

if [[ -n ${FUZZ_KEEP:-} ]]; then
    scratch=$FUZZ_KEEP
    mkdir -p "$scratch"
else
    scratch=$(mktemp -d /tmp/sg-fuzz.XXXXXX)
    trap 'rm -rf "$scratch"' EXIT
fi

# Source directory of a target: where its CMakeFiles/<t>.dir sits in the
# build tree mirrors the source tree (Makefile and Ninja generators alike).
srcdir_of() {
    local t=$1 d
    d=$(find "$build" -type d -name "$t.dir" -path '*/CMakeFiles/*' -print -quit)
    if [[ -n $d ]]; then
        d=${d%/CMakeFiles/*}
        echo "$src/${d#"$build"/}"
        return
    fi
    d=$(grep -rlE "add_executable\(\s*$t\b" --include=CMakeLists.txt tests gateway 2>/dev/null | head -n1)
    [[ -n $d ]] && dirname "$src/$d"
}

declare -a rows=()
status=0
for t in "${found[@]}"; do
    echo "== building $t"
    if ! cmake --build "$build" -j"$jobs" --target "$t" >"$scratch/$t.build.log" 2>&1; then
        tail -n 30 "$scratch/$t.build.log" >&2
        rows+=("$t|-|-|build-failed")
        status=1
        continue
    fi
    exe=$(find "$build" -type f -name "$t" -perm -u+x -print -quit)
    if [[ -z $exe ]]; then
        rows+=("$t|-|-|no-binary")
        status=1
        continue
    fi

    # Seed corpus: <dir>/corpus/<target>/ when one directory holds several
    # targets, else <dir>/corpus/.  Copied: libFuzzer adds inputs to it.
    sd=$(srcdir_of "$t")
    work=$scratch/$t
    mkdir -p "$work/corpus" "$work/artifacts"
    seeds=""
    if [[ -n $sd && -d $sd/corpus/$t ]]; then
        seeds=$sd/corpus/$t
    elif [[ -n $sd && -d $sd/corpus ]]; then
        seeds=$sd/corpus
    fi
    if [[ -n $seeds ]]; then
        find "$seeds" -maxdepth 1 -type f -exec cp {} "$work/corpus/" \;
    fi
    extra=()
    [[ -n $sd && -f $sd/$t.dict ]] && extra+=("-dict=$sd/$t.dict")
    # shellcheck disable=SC2206
    [[ -n ${FUZZ_ARGS:-} ]] && extra+=($FUZZ_ARGS)

    echo "== running $t for ${secs}s (seeds: ${seeds:-none})"
    # The outer timeout is a guard against a hung target; libFuzzer's own
    # -timeout turns a slow input into a reported "timeout" artifact.
    timeout -k 10 $((secs + 120)) "$exe" -max_total_time="$secs" -timeout=25 \
        -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$work/artifacts/" "${extra[@]}" "$work/corpus" \
        >"$work/log" 2>&1
    rc=$?
    execs=$(sed -nE 's/^stat::number_of_executed_units: *([0-9]+).*/\1/p' "$work/log" | tail -n1)
    [[ -z $execs ]] && execs=$(sed -nE 's/^Done ([0-9]+) runs.*/\1/p' "$work/log" | tail -n1)
    crashes=$(find "$work/artifacts" -type f | wc -l)
    if ((rc != 0 || crashes != 0)); then
        status=1
        echo "-- $t failed (exit $rc); last lines of its log:" >&2
        tail -n 40 "$work/log" >&2
        # The scratch dir goes away; keep what reproduces the failure.
        mkdir -p "$build/fuzz-artifacts/$t"
        find "$work/artifacts" -type f -exec cp {} "$build/fuzz-artifacts/$t/" \;
        find "$build/fuzz-artifacts/$t" -type f -printf '   artifact: %p\n' >&2
    fi
    rows+=("$t|${execs:-?}|$crashes|$rc")
done

echo
printf '%-24s %14s %8s %6s\n' target executions crashes exit
for r in "${rows[@]}"; do
    IFS='|' read -r t e c x <<<"$r"
    printf '%-24s %14s %8s %6s\n' "$t" "$e" "$c" "$x"
done
if [[ -n ${FUZZ_KEEP:-} ]]; then
    echo "corpora and artifacts kept in $scratch"
fi
exit $status
