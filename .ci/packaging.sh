#!/usr/bin/env bash
# Packaging CI: builds the .deb and the .rpm from Cargo.toml's metadata and checks them: lintian,
# the installed layout and modes (shell completions and man pages generated from the command line's
# definitions by examples/generate.rs included), the conffile, the config template (check-config by the installed
# binary, as the service's group would read it), install/upgrade/remove/purge with the maintainer
# scripts, the unit (systemd-analyze verify: no output) and its sandboxing (systemd-analyze security
# exposure at most 2.0), and the .rpm's scriptlets (install, upgrade, erase in a throwaway root).
#
# Runs as root on Debian 12 with the Rust toolchain; installs what it needs (apt: systemd, lintian,
# rpm; cargo: cargo-deb, cargo-generate-rpm, each only when missing). The package itself is never
# installed on this machine: the .deb goes into throwaway roots under a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=never
export CARGO_INCREMENTAL=0
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
MAX_EXPOSURE=2.0

PKG=offline-events-agent
UNIT=$PKG.service
T0=$SECONDS
step() { echo "== $* [$((SECONDS - T0))s]"; }
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
check_mode() { # path expected-octal-mode
    local got
    got=$(stat -c %a "$1") || fail "$1 is missing"
    [[ $got == "$2" ]] || fail "$1 has mode $got, expected $2"
    echo "ok: $1 mode $2"
}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

step "system packages (systemd, lintian, rpm)"
missing=()
for p in systemd lintian rpm; do
    [[ $(dpkg-query -W -f='${Status}' "$p" 2>/dev/null) == "install ok installed" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
systemd-analyze --version | sed -n 1p
lintian --version

step "cargo-deb $CARGO_DEB_VERSION, cargo-generate-rpm $CARGO_GENERATE_RPM_VERSION"
# "cargo-deb 3.8.0" / "cargo-generate-rpm 0.21.1"; reinstalled only when absent or another version.
# Built at opt-level 0 (their own per-crate overrides, e.g. cargo-deb's xz at 2, still apply):
# installing both takes about 90 s instead of about 190 s, and packaging takes 5 s longer.
installed_version() { "$1" --version 2>/dev/null | awk '{ print $2 }'; }
[[ $(installed_version cargo-deb) == "$CARGO_DEB_VERSION" ]] \
    || CARGO_PROFILE_RELEASE_OPT_LEVEL=0 cargo install --locked --quiet "cargo-deb@$CARGO_DEB_VERSION"
[[ $(installed_version cargo-generate-rpm) == "$CARGO_GENERATE_RPM_VERSION" ]] \
    || CARGO_PROFILE_RELEASE_OPT_LEVEL=0 cargo install --locked --quiet "cargo-generate-rpm@$CARGO_GENERATE_RPM_VERSION"

step "release build"
cargo build --release --locked

step "shell completions and man pages (generated from the command line's definitions)"
# Where Cargo.toml's assets expect them; the man pages gzipped as both distributions install them.
ASSETS=target/assets
rm -rf "$ASSETS"
# examples/generate.rs: the generators are dev-dependencies, not part of the shipped binary. A
# debug build (the tests' build is reused): it only writes text.
cargo run --locked --quiet --example generate -- completions "$ASSETS/completions"
cargo run --locked --quiet --example generate -- man "$ASSETS/man"
gzip -9n "$ASSETS"/man/*.1
man_pages=$(ls "$ASSETS"/man/*.1.gz | wc -l)
((man_pages >= 10)) || fail "only $man_pages man pages were generated"
ls "$ASSETS"/completions "$ASSETS"/man

step "build the .deb and the .rpm"
OUT=$CARGO_TARGET_DIR/packages
rm -rf "$OUT"
mkdir -p "$OUT"
cargo deb --no-build --locked --quiet --output "$OUT/"
DEB=$(ls "$OUT"/*.deb)
# The next revision of the same build, to test an upgrade.
next_revision=$(($(dpkg-deb -f "$DEB" Version | sed 's/.*-//') + 1))
cargo deb --no-build --locked --quiet --deb-revision "$next_revision" --output "$WORK/"
cargo generate-rpm --output "$OUT/"
DEB2=$(ls "$WORK"/*-"$next_revision"_*.deb)
RPM=$(ls "$OUT"/*.rpm)
ls -l "$OUT"

deb_version=$(dpkg-deb -f "$DEB" Version)
changelog_version=$(sed -n '1s/^[^ ]* (\([^)]*\)).*/\1/p' packaging/debian/changelog)
[[ $deb_version == "$changelog_version" ]] \
    || fail "the .deb is $deb_version but packaging/debian/changelog starts with $changelog_version: add a changelog entry"

step "lintian"
# Errors and warnings fail; the overrides, each with its reason, are packaging/debian/lintian-overrides.
# (TMPDIR: lintian leaves mldbm-elf-* files behind in it.)
TMPDIR=$WORK lintian --pedantic --fail-on error,warning "$DEB"
echo "ok: lintian"

step "deb metadata"
# (Output is captured before grep -q reads it: an early exit would SIGPIPE the producer.)
conffiles=$(dpkg-deb -I "$DEB" conffiles)
grep -qx "/etc/$PKG/config.toml" <<<"$conffiles" || fail "config.toml is not a conffile"
echo "ok: /etc/$PKG/config.toml is a conffile"
contents=$(dpkg-deb -c "$DEB")
grep -q "/token$" <<<"$contents" && fail "the package must not ship a token"
for f in usr/share/bash-completion/completions/$PKG usr/share/zsh/vendor-completions/_$PKG \
    usr/share/fish/vendor_completions.d/$PKG.fish usr/share/man/man1/$PKG.1.gz \
    usr/share/man/man1/$PKG-import.1.gz usr/share/man/man1/$PKG-dead-letter-reread.1.gz; do
    grep -Eq "^-rw-r--r-- .* \./$f\$" <<<"$contents" || fail "the .deb lacks /$f (mode 644)"
done
[[ $(grep -c "\./usr/share/man/man1/.*\.1\.gz$" <<<"$contents") == "$man_pages" ]] || fail "the .deb lacks man pages"
echo "ok: completions (bash, zsh, fish) and $man_pages man pages in the .deb"
grep -q adduser <<<"$(dpkg-deb -f "$DEB" Depends)" || fail "Depends lacks adduser"

step "the config template lists every key README.md documents"
# Table rows `| `key` | ...` of README.md's "## Configuration" section.
readme_keys=$(awk '/^## /{ in_config = ($0 == "## Configuration") } in_config' README.md \
    | sed -n 's/^| `\([a-z_]*\)` |.*/\1/p' | sort -u)
[[ -n $readme_keys ]] || fail "no keys found in README.md's Configuration tables"
for key in $readme_keys; do
    grep -Eq "^#?$key = " packaging/config.toml || fail "packaging/config.toml lacks \`$key\`"
done
echo "ok: $(wc -w <<<"$readme_keys") keys"

step "install the .deb into a throwaway root (maintainer scripts run, chrootless)"
# dpkg --root with --force-script-chrootless runs the maintainer scripts on this machine with
# DPKG_ROOT set; ours act on DPKG_ROOT (useradd/groupadd --prefix, paths under it), as do
# deb-systemd-helper's snippets, so the machine itself is not changed. The root gets an empty dpkg
# database and the account files base-passwd seeds; --force-depends because that database has no
# libc6 or adduser. (A plain `dpkg-deb -x` would test the files but not the scripts.)
ROOT=$WORK/root
mkdir -p "$ROOT"/var/lib/dpkg/{info,updates,triggers} "$ROOT/etc"
chmod 0755 "$WORK" "$ROOT"
touch "$ROOT"/var/lib/dpkg/{status,available,statoverride}
cp /usr/share/base-passwd/passwd.master "$ROOT/etc/passwd"
cp /usr/share/base-passwd/group.master "$ROOT/etc/group"
DPKG=(dpkg --root="$ROOT" --log=/dev/null --force-not-root --force-script-chrootless
    --force-depends --force-confold)
"${DPKG[@]}" --install "$DEB"

step "installed layout"
status=$("${DPKG[@]}" -s "$PKG")
grep -qx "Status: install ok installed" <<<"$status" || fail "not installed"
grep -q "^ /etc/$PKG/config.toml " <<<"$status" || fail "dpkg does not list the conffile"
check_mode "$ROOT/usr/bin/$PKG" 755
check_mode "$ROOT/usr/lib/systemd/system/$UNIT" 644
check_mode "$ROOT/etc/$PKG" 750
check_mode "$ROOT/etc/$PKG/config.toml" 644
grep -q "^$PKG:[^:]*:[0-9]*:[0-9]*:[^:]*:/nonexistent:/usr/sbin/nologin$" "$ROOT/etc/passwd" || fail "no system user $PKG"
uid=$(awk -F: -v n="$PKG" '$1 == n { print $3 }' "$ROOT/etc/passwd")
gid=$(awk -F: -v n="$PKG" '$1 == n { print $3 }' "$ROOT/etc/group")
((uid < 1000 && gid < 1000)) || fail "$PKG is not a system account (uid $uid, gid $gid)"
[[ $(stat -c %u:%g "$ROOT/etc/$PKG") == "0:$gid" ]] || fail "/etc/$PKG is not root:$PKG"
echo "ok: user $PKG ($uid:$gid), /etc/$PKG root:$PKG"
[[ -L $ROOT/etc/systemd/system/multi-user.target.wants/$UNIT ]] || fail "the unit is not enabled"
echo "ok: $UNIT enabled (not started: no systemd here, and the package never starts it)"
[[ ! -e $ROOT/var/lib/$PKG ]] || fail "the package must not create the state directory"

step "check-config: the installed binary on the installed template"
# As the service would run it: an unprivileged user in the service's group (the package's 0750
# directory), the token as a systemd credential, the state directory in the root.
cred=$WORK/credentials
install -d -m 0700 -o "$uid" -g "$gid" "$cred"
install -m 0400 -o "$uid" -g "$gid" /dev/null "$cred/access-token"
echo "placeholder-token-for-ci" >"$cred/access-token"
as_service=(setpriv --reuid="$uid" --regid="$gid" --clear-groups
    env -i PATH=/usr/bin:/bin CREDENTIALS_DIRECTORY="$cred" STATE_DIRECTORY="$ROOT/var/lib/$PKG")
"${as_service[@]}" "$ROOT/usr/bin/$PKG" --config "$ROOT/etc/$PKG/config.toml" check-config
# Every commented-out key uncommented (the example [[source]] too) must be valid as well.
sed -e 's/^#\([a-z_]* = \)/\1/' -e 's/^#\(Verkauf = \)/\1/' -e 's/^#\[\[source\]\]/[[source]]/' \
    -e '/^access_token\(_file\|_env\)\? = /d' "$ROOT/etc/$PKG/config.toml" >"$WORK/all-keys.toml"
CREDENTIALS_DIRECTORY="$cred" STATE_DIRECTORY="$WORK/state" \
    "$ROOT/usr/bin/$PKG" --config "$WORK/all-keys.toml" check-config >/dev/null \
    || fail "the template with every key uncommented does not pass check-config"
echo "ok: template with every key uncommented"
if "${as_service[@]}" CREDENTIALS_DIRECTORY="$WORK/none" "$ROOT/usr/bin/$PKG" \
    --config "$ROOT/etc/$PKG/config.toml" check-config >/dev/null 2>&1; then
    fail "check-config passed without a token"
else
    [[ $? == 78 ]] || fail "check-config without a token did not exit 78"
fi
echo "ok: no token -> exit 78"

step "systemd-analyze verify (must print nothing)"
# verify resolves ExecStart= and ExecReload= inside --root, and needs the targets the unit refers to:
# the package's files, plus this machine's systemd units and sh(1) (ExecReload=).
VROOT=$WORK/verify-root
dpkg-deb -x "$DEB" "$VROOT"
ln -s usr/bin "$VROOT/bin"
ln -s usr/lib "$VROOT/lib"
cp -a --no-clobber /lib/systemd/system/. "$VROOT/usr/lib/systemd/system/"
cp -L /bin/sh "$VROOT/usr/bin/sh"
verify() {
    local out
    if ! out=$(systemd-analyze verify --root="$VROOT" "/usr/lib/systemd/system/$UNIT" 2>&1) || [[ -n $out ]]; then
        printf '%s\n' "$out"
        fail "systemd-analyze verify $*"
    fi
    echo "ok: verify $*"
}
verify "(shipped unit)"
dropin=$VROOT/etc/systemd/system/$UNIT.d
mkdir -p "$dropin"
cp systemd/pos-folders.conf.example "$dropin/pos-folders.conf"
verify "(with the example drop-in pos-folders.conf)"
rm -r "$dropin"

step "systemd-analyze security (exposure at most $MAX_EXPOSURE)"
exposure() {
    local report level
    report=$(systemd-analyze security --offline=yes --root="$VROOT" "/usr/lib/systemd/system/$UNIT" 2>&1)
    level=$(sed -n 's/.*Overall exposure level for .*: \([0-9.]*\) .*/\1/p' <<<"$report")
    [[ -n $level ]] || {
        printf '%s\n' "$report"
        fail "no exposure level in systemd-analyze security's report"
    }
    if ! awk -v l="$level" -v max="$MAX_EXPOSURE" 'BEGIN { exit !(l <= max) }'; then
        grep '^✗' <<<"$report" || true
        fail "exposure $level $* is above $MAX_EXPOSURE"
    fi
    echo "ok: exposure $level $*"
}
exposure "(shipped unit)"
mkdir -p "$dropin"
cp systemd/pos-folders.conf.example "$dropin/pos-folders.conf"
exposure "(with the example drop-in)"
rm -r "$dropin"

step "upgrade keeps the queue and the administrator's config"
state=$ROOT/var/lib/$PKG
install -d -m 0700 -o "$uid" -g "$gid" "$state"
head -c 4096 /dev/urandom >"$state/queue.sqlite"
chown "$uid:$gid" "$state/queue.sqlite"
queue_sum=$(sha256sum <"$state/queue.sqlite")
install -m 0600 /dev/null "$ROOT/etc/$PKG/token"
echo "# edited by the administrator" >>"$ROOT/etc/$PKG/config.toml"
"${DPKG[@]}" --install "$DEB2"
[[ $("${DPKG[@]}" -s "$PKG" | sed -n 's/^Version: //p') == *-"$next_revision" ]] || fail "upgrade did not happen"
[[ $(sha256sum <"$state/queue.sqlite") == "$queue_sum" ]] || fail "upgrade changed the queue"
[[ $(stat -c %u:%g:%a "$state") == "$uid:$gid:700" ]] || fail "upgrade changed the state directory"
grep -q "edited by the administrator" "$ROOT/etc/$PKG/config.toml" || fail "upgrade replaced the edited config"
check_mode "$ROOT/etc/$PKG" 750
echo "ok: queue, state directory and edited config kept"

step "remove keeps the queue; purge deletes it and the account"
"${DPKG[@]}" --remove "$PKG"
[[ -f $state/queue.sqlite ]] || fail "remove deleted the queue"
[[ -f $ROOT/etc/$PKG/config.toml ]] || fail "remove deleted the config"
grep -q "^$PKG:" "$ROOT/etc/passwd" || fail "remove deleted the account"
[[ ! -e $ROOT/usr/bin/$PKG ]] || fail "remove left the binary"
echo "ok: remove"
# dpkg warns that /etc/$PKG is not empty: the token file is the administrator's.
"${DPKG[@]}" --purge "$PKG"
[[ ! -e $state ]] || fail "purge left $state"
[[ ! -e $ROOT/etc/$PKG/config.toml ]] || fail "purge left the config"
[[ -f $ROOT/etc/$PKG/token ]] || fail "purge deleted the administrator's token file"
! grep -q "^$PKG:" "$ROOT/etc/passwd" "$ROOT/etc/group" || fail "purge left the account"
[[ ! -e $ROOT/etc/systemd/system/multi-user.target.wants/$UNIT ]] || fail "purge left the unit enabled"
echo "ok: purge (the administrator's token file stays)"

step "rpm contents"
listing=$(rpm -qlpv "$RPM")
printf '%s\n' "$listing"
expect_rpm() { # mode path
    grep -Eq "^$1 .* $2\$" <<<"$listing" || fail "the .rpm lacks $2 with mode $1"
}
expect_rpm '-rwxr-xr-x' "/usr/bin/$PKG"
expect_rpm '-rw-r--r--' "/usr/lib/systemd/system/$UNIT"
expect_rpm '-rw-r-----' "/etc/$PKG/config.toml"
expect_rpm '-rw-r--r--' "/usr/share/bash-completion/completions/$PKG"
expect_rpm '-rw-r--r--' "/usr/share/zsh/site-functions/_$PKG"
expect_rpm '-rw-r--r--' "/usr/share/fish/vendor_completions.d/$PKG.fish"
expect_rpm '-rw-r--r--' "/usr/share/man/man1/$PKG.1.gz"
expect_rpm '-rw-r--r--' "/usr/share/man/man1/$PKG-import.1.gz"
[[ $(grep -c "/usr/share/man/man1/.*\.1\.gz$" <<<"$listing") == "$man_pages" ]] || fail "the .rpm lacks man pages"
flags=$(rpm -qp --qf '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM" | sed -n "s| /etc/$PKG/config.toml$||p")
[[ $flags == *c* && $flags == *n* ]] || fail "config.toml is not %config(noreplace) (flags '$flags')"
echo "ok: /etc/$PKG/config.toml is %config(noreplace)"
grep -q "/token$" <<<"$listing" && fail "the .rpm must not ship a token"
scripts=$(rpm -qp --scripts "$RPM")
for s in preinstall postinstall preuninstall postuninstall; do
    grep -q "^$s scriptlet" <<<"$scripts" || fail "the .rpm lacks its $s scriptlet"
done
for f in packaging/rpm/*.sh packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm; do
    sh -n "$f" || fail "$f: shell syntax"
done
echo "ok: rpm scriptlets"

step "install, upgrade and erase the .rpm in a throwaway root (scriptlets run)"
# rpm --root runs the scriptlets chrooted into the root, so the root needs /bin/sh and the tools they
# call (getent, groupadd, useradd, chown, systemctl): this machine's /usr, under an overlay so that
# nothing is written to the machine, mounted in a mount namespace of its own (unshare) so that nothing
# stays mounted. --nodeps: the root's rpm database is empty (no glibc, no shadow-utils).
# (--force-debian: Debian's rpm otherwise warns that dpkg should install packages here.)
# Not executed here: the `[ -d /run/systemd/system ]` branches (daemon-reload, and try-restart on
# upgrade: no systemd runs in the root), the stop of `disable --now` in %preun, dependency resolution,
# and RHEL's own shadow-utils (Debian's useradd/groupadd stand in).
RROOT=$WORK/rpm-root
RUSR=$WORK/rpm-usr
mkdir -p "$RROOT"/{usr,etc,dev,tmp,var/lib} "$RUSR"/{upper,work}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$RROOT/$d"; done
touch "$RROOT/dev/null"
cp /usr/share/base-passwd/passwd.master "$RROOT/etc/passwd"
cp /usr/share/base-passwd/group.master "$RROOT/etc/group"
install -m 0640 /dev/null "$RROOT/etc/shadow"
install -m 0640 /dev/null "$RROOT/etc/gshadow"
cp /etc/login.defs "$RROOT/etc/"
rpm_root() { # rpm arguments, run with the overlay mounted
    unshare --mount --propagation private sh -euc '
        mount -t overlay overlay -o "lowerdir=/usr,upperdir=$2/upper,workdir=$2/work" "$1/usr"
        mount --bind /dev/null "$1/dev/null"
        root=$1
        shift 2
        exec rpm --force-debian --root "$root" "$@"
    ' sh "$RROOT" "$RUSR" "$@"
}
# A later release of the same build, for the upgrade.
rpm_release=$(rpm -qp --qf '%{RELEASE}' "$RPM")
cargo generate-rpm --set-metadata "release = \"$((rpm_release + 1))\"" --output "$WORK/"
RPM2=$(ls "$WORK"/*-"$((rpm_release + 1))".*.rpm)
rpm_root -i --nodeps "$RPM"
[[ $(rpm --root "$RROOT" -q --qf '%{VERSION}-%{RELEASE}' "$PKG") == *-"$rpm_release" ]] || fail "the .rpm is not installed"
grep -q "^$PKG:[^:]*:[0-9]*:[0-9]*:[^:]*:/nonexistent:/sbin/nologin$" "$RROOT/etc/passwd" || fail "%pre made no account"
ruid=$(awk -F: -v n="$PKG" '$1 == n { print $3 }' "$RROOT/etc/passwd")
rgid=$(awk -F: -v n="$PKG" '$1 == n { print $3 }' "$RROOT/etc/group")
((ruid < 1000 && rgid < 1000)) || fail "$PKG is not a system account (uid $ruid, gid $rgid)"
[[ $(stat -c %u:%g:%a "$RROOT/etc/$PKG") == "0:$rgid:750" ]] || fail "%post did not make /etc/$PKG root:$PKG 0750"
[[ $(stat -c %u:%g:%a "$RROOT/etc/$PKG/config.toml") == "0:$rgid:640" ]] || fail "config.toml is not root:$PKG 0640"
[[ -x $RUSR/upper/bin/$PKG ]] || fail "no /usr/bin/$PKG"
[[ -L $RROOT/etc/systemd/system/multi-user.target.wants/$UNIT ]] || fail "%post did not enable the unit"
echo "ok: rpm -i: account $PKG ($ruid:$rgid), /etc/$PKG root:$PKG 0750, unit enabled"
rstate=$RROOT/var/lib/$PKG
install -d -m 0700 -o "$ruid" -g "$rgid" "$rstate"
head -c 4096 /dev/urandom >"$rstate/queue.sqlite"
rqueue_sum=$(sha256sum <"$rstate/queue.sqlite")
echo "# edited by the administrator" >>"$RROOT/etc/$PKG/config.toml"
rpm_root -U --nodeps "$RPM2"
[[ $(rpm --root "$RROOT" -q --qf '%{RELEASE}' "$PKG") == "$((rpm_release + 1))" ]] || fail "rpm -U did not upgrade"
grep -q "edited by the administrator" "$RROOT/etc/$PKG/config.toml" || fail "rpm -U replaced the edited config"
[[ $(sha256sum <"$rstate/queue.sqlite") == "$rqueue_sum" ]] || fail "rpm -U changed the queue"
[[ -L $RROOT/etc/systemd/system/multi-user.target.wants/$UNIT ]] || fail "rpm -U disabled the unit"
echo "ok: rpm -U: queue, edited config and enablement kept"
rpm_root -e --nodeps "$PKG"
[[ ! -e $RUSR/upper/bin/$PKG ]] || fail "rpm -e left the binary"
[[ ! -e $RROOT/etc/systemd/system/multi-user.target.wants/$UNIT ]] || fail "%preun did not disable the unit"
[[ $(sha256sum <"$rstate/queue.sqlite") == "$rqueue_sum" ]] || fail "rpm -e deleted or changed the queue"
grep -q "^$PKG:" "$RROOT/etc/passwd" || fail "rpm -e deleted the account"
echo "ok: rpm -e: unit disabled, queue and account kept"

step "done: $(basename "$DEB"), $(basename "$RPM")"
