#!/usr/bin/env bash
# Installs the tools the filesystem matrix (tests/fs/) needs to format its
# loop-mounted images: mkfs.xfs (xfsprogs), mkfs.btrfs (btrfs-progs) and, on
# the rare system without it, mkfs.ext4 (e2fsprogs).  losetup and mount come
# with util-linux, which every Debian system has.
#
# Only root can loop-mount images, so only root installs anything: as any
# other user this script does nothing and the matrix skips, saying why in one
# line per filesystem.  It installs with apt-get only what is missing and
# never fails the build: a filesystem it cannot provide is skipped the same way.
set -uo pipefail

[ "$(id -u)" -eq 0 ] || exit 0
PATH="$PATH:/usr/local/sbin:/usr/sbin:/sbin"

missing=()
command -v mkfs.xfs >/dev/null 2>&1 || missing+=(xfsprogs)
command -v mkfs.btrfs >/dev/null 2>&1 || missing+=(btrfs-progs)
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
[ "${#missing[@]}" -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
    echo "fs-tools: no apt-get to install ${missing[*]}; those filesystems will be skipped" >&2
    exit 0
fi
echo "fs-tools: installing ${missing[*]} with apt-get"
if ! apt-get update -q >/dev/null 2>&1 ||
    ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null 2>&1; then
    echo "fs-tools: could not install ${missing[*]}; those filesystems will be skipped" >&2
fi
exit 0
