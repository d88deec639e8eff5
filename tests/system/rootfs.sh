#!/usr/bin/env bash
# Prints the path of a cached Debian 12 minbase rootfs with systemd, dbus and python3 (what
# tests/system/boot.sh boots), creating it with debootstrap from the Debian package registry when it
# is not cached yet. The cache lives outside the clone, keyed by the suite, variant and package list:
#   ${OEA_SYSTEM_TEST_CACHE:-/var/cache/oea-system-test}/rootfs-<hash>
# A rootfs is only ever read after it is complete (built aside, then renamed into place).
set -euo pipefail

SUITE=bookworm
VARIANT=minbase
MIRROR=${OEA_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# systemd as PID 1 and its bus; python3 for the fake TikTok; adduser (the .deb depends on it).
# procps is left out on purpose: the unit must not need /bin/kill.
PACKAGES=systemd,systemd-sysv,dbus,python3,adduser
CACHE=${OEA_SYSTEM_TEST_CACHE:-/var/cache/oea-system-test}

key=$(printf '%s\n' "$SUITE" "$VARIANT" "$PACKAGES" | sha256sum | cut -c1-16)
rootfs=$CACHE/rootfs-$key
if [[ ! -x $rootfs/usr/lib/systemd/systemd ]]; then
    mkdir -p "$CACHE"
    building=$(mktemp -d "$CACHE/building.XXXXXX")
    trap 'rm -rf "$building"' EXIT
    echo "rootfs: debootstrap $SUITE ($VARIANT, $PACKAGES) into $rootfs" >&2
    debootstrap --variant="$VARIANT" --include="$PACKAGES" "$SUITE" "$building/rootfs" "$MIRROR" \
        >"$building/debootstrap.log" 2>&1 || {
        tail -20 "$building/debootstrap.log" >&2
        echo "rootfs: debootstrap failed" >&2
        exit 1
    }
    rm -rf "$building/rootfs/var/cache/apt/archives/"*.deb "$building/rootfs/var/lib/apt/lists/"*
    # No machine id: each boot makes its own (an overlay per run).
    : >"$building/rootfs/etc/machine-id"
    # A leftover without systemd is not a rootfs; a complete one made meanwhile by a concurrent
    # run wins (mv -T refuses to replace it).
    [[ -x $rootfs/usr/lib/systemd/systemd ]] || rm -rf "$rootfs"
    mv -T "$building/rootfs" "$rootfs" 2>/dev/null || [[ -x $rootfs/usr/lib/systemd/systemd ]]
fi
echo "$rootfs"
