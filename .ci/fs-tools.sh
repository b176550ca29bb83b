#!/usr/bin/env bash
# Installs the mkfs tools the full-disk tests (tests/test_full_disk.py) use to
# make small loop-mounted filesystems: btrfs-progs, xfsprogs, e2fsprogs.
# Only as root and only when one is missing; elsewhere those tests skip.
set -euo pipefail

missing=()
command -v mkfs.btrfs >/dev/null 2>&1 || missing+=(btrfs-progs)
command -v mkfs.xfs >/dev/null 2>&1 || missing+=(xfsprogs)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
if [ "${#missing[@]}" -eq 0 ]; then
    exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
    echo "fs-tools: ${missing[*]} missing; the full-disk tests on those filesystems will skip" >&2
    exit 0
fi
DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null \
    || { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null; }
