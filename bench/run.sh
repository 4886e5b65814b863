#!/bin/sh
# bench/run.sh [--quick|--full|--smoke] [bench.py options]: snapgate vs QEMU 7.2
# benchmarks (bench/README.md).  Builds nothing: run `cmake --build build
# --target bench` first.  BUILD defaults to $SNAPGATE_BUILD or ./build.
here=$(cd "$(dirname "$0")" && pwd)
mode=quick
case "$1" in
  --quick) mode=quick; shift ;;
  --full) mode=full; shift ;;
  --smoke) mode=smoke; shift ;;
esac
build=${SNAPGATE_BUILD:-$here/../build}
exec python3 "$here/bench.py" --mode "$mode" --build "$build" "$@"
