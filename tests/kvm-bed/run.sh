#!/bin/sh
# tests/kvm-bed/run.sh [--share DIR]... [--timeout S] [--mem SIZE] [options] -- COMMAND...
# Runs COMMAND on a conventional KVM (kvm_amd inside QEMU/TCG); see README.md and --help.
exec python3 "$(dirname "$0")/bed.py" "$@"
