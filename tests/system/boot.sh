#!/usr/bin/env bash
# System test: the .deb under a real systemd. Boots Debian 12 (minbase + systemd, dbus, python3;
# cached by tests/system/rootfs.sh outside the clone) with systemd-nspawn on an overlay, installs the
# package and checks what only systemd as PID 1 shows: install, READY and STATUS, delivery to a fake
# TikTok over HTTPS by host name under the unit's sandbox, reload, watchdog, stop during a hanging
# request, restart, exit 78, journal priorities, upgrade, remove, purge. Prints PASS/FAIL per check
# and the total time; exits 1 on any FAIL.
#
# Needs root with CAP_SYS_ADMIN (mounts, namespaces); without it prints one `SKIPPED: ...` line and
# exits 0. Installs systemd-container, debootstrap and openssl with apt when they are missing.
# The package: $OEA_DEB, else target/packages/*.deb (what .ci/packaging.sh builds).
# OEA_KEEP=1 leaves the run folder (overlay, guest journal) for a post-mortem.
set -euo pipefail
cd "$(dirname "$0")/../.."

T0=$SECONDS
PKG=offline-events-agent
UNIT=$PKG.service
# The fake TikTok's name: in the guest's /etc/hosts only, so the agent resolves it through NSS.
API_HOST=tiktok.test
TEST_DIR=/opt/oea-test

skip() {
    echo "SKIPPED: tests/system/boot.sh (the .deb under a real systemd): $*"
    exit 0
}

# -- privileges and tools ---------------------------------------------------------------------------
[[ $(uname -s) == Linux ]] || skip "not Linux"
((EUID == 0)) || skip "not root (systemd-nspawn needs root)"
cap_eff=$(awk '/^CapEff:/ { print $2 }' /proc/self/status)
(((16#$cap_eff >> 21) & 1)) || skip "no CAP_SYS_ADMIN"
missing=()
command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v openssl >/dev/null || missing+=(openssl)
if ((${#missing[@]})) && command -v apt-get >/dev/null; then
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for tool in systemd-nspawn debootstrap nsenter unshare openssl python3; do
    command -v "$tool" >/dev/null || skip "no $tool"
done
unshare --mount true 2>/dev/null || skip "cannot create a mount namespace"

DEB=${OEA_DEB:-$(ls target/packages/"$PKG"_*.deb 2>/dev/null | head -n 1)}
[[ -f $DEB ]] || {
    echo "FAIL: no .deb (run bash .ci/packaging.sh first, or set OEA_DEB)" >&2
    exit 1
}

# -- the guest ------------------------------------------------------------------------------------
t=$SECONDS
ROOTFS=$(bash tests/system/rootfs.sh)
ROOTFS_SECS=$((SECONDS - t))

RUN=$(mktemp -d /var/tmp/oea-boot.XXXXXX)
GUEST=$RUN/root
NSPAWN_PID=
PID1=
cleanup() {
    if [[ -n $NSPAWN_PID ]] && kill -0 "$NSPAWN_PID" 2>/dev/null; then
        # nspawn asks the guest to power off on SIGTERM.
        kill -TERM "$NSPAWN_PID" 2>/dev/null || true
        for _ in $(seq 100); do
            kill -0 "$NSPAWN_PID" 2>/dev/null || break
            sleep 0.1
        done
        [[ -z $PID1 ]] || kill -KILL "$PID1" 2>/dev/null || true
        kill -KILL "$NSPAWN_PID" 2>/dev/null || true
        wait "$NSPAWN_PID" 2>/dev/null || true
    fi
    if [[ ${OEA_KEEP:-} == 1 ]]; then
        echo "kept: $RUN (umount $GUEST when done)"
        return
    fi
    umount "$GUEST" 2>/dev/null || umount -l "$GUEST" 2>/dev/null || true
    rm -rf "$RUN"
}
trap cleanup EXIT

mkdir -p "$RUN"/{upper,work,files} "$GUEST"
mount -t overlay overlay -o "lowerdir=$ROOTFS,upperdir=$RUN/upper,workdir=$RUN/work" "$GUEST" \
    || skip "cannot mount an overlay file system on $RUN"

# A test CA, and a server certificate for $API_HOST signed by it.
(
    cd "$RUN/files"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=offline-events-agent boot test CA" -keyout ca.key -out ca.pem \
        -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$API_HOST" \
        -keyout server.key -out server.csr
    printf '%s\n' "subjectAltName=DNS:$API_HOST" "basicConstraints=critical,CA:FALSE" \
        "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >server.ext
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 2 \
        -extfile server.ext -out server.pem
) >"$RUN/openssl.log" 2>&1 || {
    cat "$RUN/openssl.log" >&2
    echo "FAIL: cannot make the test certificates" >&2
    exit 1
}

# The package, and a later revision of the same package for the upgrade.
version=$(dpkg-deb -f "$DEB" Version)
mkdir -p "$GUEST$TEST_DIR"
cp "$DEB" "$GUEST$TEST_DIR/install.deb"
dpkg-deb -R "$DEB" "$RUN/upgrade"
sed -i "s/^Version: .*/Version: $version+boottest1/" "$RUN/upgrade/DEBIAN/control"
dpkg-deb -Zgzip -z1 -b "$RUN/upgrade" "$GUEST$TEST_DIR/upgrade.deb" >/dev/null
cp tests/system/fake_tiktok.py "$RUN/files/ca.pem" "$RUN/files/server.pem" "$RUN/files/server.key" \
    "$GUEST$TEST_DIR/"

printf '127.0.0.1 localhost\n127.0.0.1 %s\n::1 localhost ip6-localhost ip6-loopback\n' "$API_HOST" \
    >"$GUEST/etc/hosts"
echo oea-boot-test >"$GUEST/etc/hostname"
cat >"$GUEST/etc/systemd/system/fake-tiktok.service" <<EOF
[Unit]
Description=fake TikTok Events API (tests/system/boot.sh)
[Service]
ExecStart=/usr/bin/python3 $TEST_DIR/fake_tiktok.py --port 443 --cert $TEST_DIR/server.pem --key $TEST_DIR/server.key --log $TEST_DIR/requests.jsonl --hang-flag $TEST_DIR/hang
[Install]
WantedBy=multi-user.target
EOF
ln -s /etc/systemd/system/fake-tiktok.service "$GUEST/etc/systemd/system/multi-user.target.wants/"

# --keep-unit and --register=no: nothing is asked of the host's systemd (there may be none).
# The unified hierarchy gives the guest cgroup v2 whatever the host mounts.
SYSTEMD_NSPAWN_UNIFIED_HIERARCHY=1 systemd-nspawn --quiet --boot --private-network --register=no \
    --keep-unit --link-journal=no --machine=oea-boot-test --directory="$GUEST" --console=pipe \
    </dev/null >"$RUN/console.log" 2>&1 &
NSPAWN_PID=$!
for _ in $(seq 100); do
    for child in $(pgrep -P "$NSPAWN_PID" || true); do
        [[ $(awk '/^NSpid:/ { print $NF }' "/proc/$child/status" 2>/dev/null) == 1 ]] && PID1=$child
    done
    [[ -n $PID1 ]] && break
    sleep 0.1
done
[[ -n $PID1 ]] || {
    cat "$RUN/console.log" >&2
    echo "FAIL: the guest did not start" >&2
    exit 1
}

# Run a command in the guest.
g() {
    nsenter -t "$PID1" -a -- env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 SYSTEMD_COLORS=0 \
        SYSTEMD_PAGER= "$@"
}
prop() { g systemctl show -P "$1" "$UNIT"; }
# Poll `command...` until it succeeds, for up to `seconds`.
wait_for() {
    local deadline=$((SECONDS + $1))
    shift
    until "$@" >/dev/null 2>&1; do
        ((SECONDS < deadline)) || return 1
        sleep 0.2
    done
}
# A check's reason for failing.
fail() {
    echo "$*"
    return 1
}
# The agent's `status --json` as the service would see it (its user, state and credential).
queue_counts() {
    g systemd-run --quiet --pipe --wait --collect -p User=$PKG -p StateDirectory=$PKG \
        -p LoadCredential=access-token:/etc/$PKG/token $PKG status --json \
        | python3 -c '
import json, sys
try:
    c = json.load(sys.stdin)["counts"]
    print(c["pending"], c["sent"])
except ValueError:
    print("? ?")'
}
journal() { g journalctl --no-pager -q -u "$UNIT" -o cat "$@"; }
# journal_has PATTERN [journalctl options]
journal_has() { journal "${@:2}" | grep -q "$1"; }
# is PROPERTY VALUE: the unit's property has that value.
is() { [[ $(prop "$1") == "$2" ]]; }
now_ms() { date +%s%3N; }

# An export of two orders (one line item each) timed an hour ago, renamed into the POS folder.
drop_export() { # name first-order-number
    local when
    when=$(date -u -d '-1 hour' '+%Y-%m-%dT%H:%M:%S+00:00')
    printf '%s\n' "order_id,event_time,email,content_id,price,quantity" \
        "$2,$when,buyer$2@shop.test,SKU-1,12.50,1" "$(($2 + 1)),$when,,SKU-2,3.00,2" \
        >"$GUEST/srv/pos/incoming/$1"
    g mv "/srv/pos/incoming/$1" "/srv/pos/export/$1"
}

CONFIG=$GUEST/etc/$PKG/config.toml
write_config() { # extra lines
    cat >"$CONFIG" <<EOF
# edited by tests/system/boot.sh
event_source_id = "7181537436256731137"
access_token_credential = "access-token"
api_base = "https://$API_HOST"
ca_bundle = "/etc/$PKG/test-ca.pem"
$*

[sender]
backoff_base_ms = 200
backoff_max_secs = 1
recovery_probe_secs = 1
recovery_jitter_secs = 0

[[source]]
name = "till-1"
path = "/srv/pos/export"
format = "native-csv"
time_zone = "UTC"
currency = "EUR"
shop_id = "s1"
settle_secs = 1
rescan_secs = 2
EOF
}

PASSED=0
FAILED=0
# check "name" function [args]: runs the function under `set -e` in a subshell; PASS or FAIL.
check() {
    local name=$1 t=$SECONDS rc
    shift
    set +e
    (
        set -e
        "$@"
    ) >"$RUN/check.out" 2>&1
    rc=$?
    set -e
    if ((rc == 0)); then
        PASSED=$((PASSED + 1))
        echo "PASS: $name [$((SECONDS - t))s]"
        sed -n 's/^info: /    /p' "$RUN/check.out"
    else
        FAILED=$((FAILED + 1))
        echo "FAIL: $name [$((SECONDS - t))s]"
        sed 's/^/    /' "$RUN/check.out" | tail -n 30
    fi
}

# -- the checks -----------------------------------------------------------------------------------
boots() {
    local state
    wait_for 30 g test -S /run/systemd/private || fail "systemd in the guest does not answer"
    state=$(g systemctl is-system-running --wait) || true
    [[ $state == running ]] || {
        g systemctl --failed --no-legend --plain || true
        fail "system state $state"
    }
    wait_for 10 g python3 -c "import socket; socket.create_connection(('127.0.0.1', 443), 1)" \
        || fail "the fake TikTok does not listen"
}

installs_enabled_not_started() {
    g dpkg -i $TEST_DIR/install.deb
    [[ $(g systemctl is-enabled "$UNIT") == enabled ]] || fail "not enabled"
    [[ $(prop ActiveState) == inactive ]] || fail "started by the package: $(prop ActiveState)"
    local failed
    failed=$(g systemctl list-units --failed --no-legend --plain)
    [[ -z $failed ]] || fail "failed units: $failed"
    [[ ! -e $GUEST/bin/kill ]] || fail "the guest has /bin/kill (procps): the reload check would prove nothing"
}

configure() {
    install -m 0644 "$RUN/files/ca.pem" "$GUEST/etc/$PKG/test-ca.pem"
    install -m 0600 /dev/null "$GUEST/etc/$PKG/token"
    echo "boot-test-token" >"$GUEST/etc/$PKG/token"
    write_config ""
    mkdir -p "$GUEST/srv/pos/incoming" "$GUEST/srv/pos/export"
    g chown $PKG: /srv/pos/export
    mkdir -p "$GUEST/etc/systemd/system/$UNIT.d"
    printf '[Service]\nReadWritePaths=/srv/pos/export\n' >"$GUEST/etc/systemd/system/$UNIT.d/pos-folders.conf"
    g systemctl daemon-reload
}

starts_ready_with_status() {
    g timeout 20 systemctl start "$UNIT"
    [[ $(prop ActiveState)/$(prop SubState) == active/running ]] || fail "$(prop ActiveState)/$(prop SubState)"
    # READY comes before the full check of the queue ("started; checking the queue"); once it
    # passed, STATUS shows the counts.
    wait_for 10 eval '[[ $(prop StatusText) == *"events queued"* ]]' || fail "STATUS is '$(prop StatusText)'"
    echo "info: STATUS=$(prop StatusText)"
}

delivers_and_archives() {
    drop_export orders-1.csv 1001
    wait_for 20 grep -q '"s1:1002"' "$GUEST$TEST_DIR/requests.jsonl" || {
        cat "$GUEST$TEST_DIR/requests.jsonl" 2>/dev/null
        journal -n 20
        fail "the fake TikTok received no events s1:1001, s1:1002"
    }
    grep -q '"ok": false' "$GUEST$TEST_DIR/requests.jsonl" && fail "refused: $(grep '"ok": false' "$GUEST$TEST_DIR/requests.jsonl")"
    wait_for 10 test ! -e "$GUEST/srv/pos/export/orders-1.csv" || fail "orders-1.csv is still in the folder"
    ls "$GUEST/srv/pos/export/archive/" | grep -q orders-1 || fail "orders-1.csv is not in archive/: $(ls -R "$GUEST/srv/pos/export")"
}

tls_and_dns_under_the_sandbox() {
    # The delivery above went to https://$API_HOST (a name only the guest's /etc/hosts knows), with
    # the test CA from ca_bundle, under the unit's sandbox.
    grep -q "\"host\": \"$API_HOST\"" "$GUEST$TEST_DIR/requests.jsonl" || fail "no request for host $API_HOST"
    journal | grep -q "sending to https://$API_HOST/" || fail "the agent does not say it sends to $API_HOST"
    [[ $(prop PrivateDevices) == yes && $(prop RestrictAddressFamilies) == *AF_INET* && $(prop ProtectSystem) == strict ]] \
        || fail "the sandbox is not in effect"
}

status_shows_the_delivery() {
    # The STATUS line follows the queue (at the latest on the 20 s watchdog tick).
    delivered() { [[ $(prop StatusText) =~ ^0\ events\ queued,\ last\ delivery\ [0-9]+s\ ago ]]; }
    wait_for 25 delivered || fail "STATUS is '$(prop StatusText)'"
    local status
    status=$(prop StatusText)
    echo "info: STATUS=$status"
}

reloads_a_good_config() {
    local pid
    pid=$(prop MainPID)
    write_config ""
    sed -i 's/^rescan_secs = 2$/rescan_secs = 3/' "$CONFIG"
    g systemctl reload "$UNIT"
    wait_for 10 journal_has 'config reloaded' || fail "no 'config reloaded' in the journal"
    [[ $(prop MainPID) == "$pid" && $(prop ActiveState) == active ]] || fail "not the same running process"
}

keeps_running_on_a_bad_reload() {
    local pid
    pid=$(prop MainPID)
    # Whatever happens, the next checks get the good config back.
    trap 'write_config ""' EXIT
    write_config "no_such_key = 1"
    g systemctl reload "$UNIT"
    wait_for 10 journal_has 'config reload failed' -p err || fail "no 'config reload failed' at priority err"
    [[ $(prop MainPID) == "$pid" && $(prop ActiveState) == active ]] || fail "not the same running process"
}

journal_has_priorities() {
    local errors
    # The agent's own error line (systemd's lines about the unit would match -u too).
    errors=$(journal -p err | grep 'config reload failed') || fail "journalctl -p err -u $UNIT shows no error of the agent"
    echo "info: journalctl -p err: $(head -n 1 <<<"$errors")"
    journal -p info..info | grep -q '^started: ' || fail "'started' is not a plain line at priority info"
    ! journal | grep -Eq '^ *(TRACE|DEBUG|INFO|WARN|ERROR) ' || fail "level words in the journal: $(journal | grep -E '^ *(INFO|WARN|ERROR) ' | head -n 2)"
}

restarts_on_watchdog() {
    mkdir -p "$GUEST/etc/systemd/system/$UNIT.d"
    printf '[Service]\nWatchdogSec=3s\nRestartSec=1s\nLimitCORE=0\n' >"$GUEST/etc/systemd/system/$UNIT.d/test-watchdog.conf"
    g systemctl daemon-reload
    g timeout 20 systemctl restart "$UNIT"
    local pid restarts
    pid=$(prop MainPID)
    restarts=$(prop NRestarts)
    g sh -c "kill -STOP $pid"
    restarted() { [[ $(prop NRestarts) -gt $restarts && $(prop ActiveState) == active && $(prop MainPID) != "$pid" ]]; }
    wait_for 20 restarted || fail "not restarted: $(prop ActiveState) pid $(prop MainPID) restarts $(prop NRestarts)"
    watchdog_logged() { g journalctl --no-pager -q -u "$UNIT" | grep -qi 'watchdog timeout'; }
    wait_for 5 watchdog_logged || fail "systemd did not log a watchdog timeout"
    echo "info: $(g journalctl --no-pager -q -u "$UNIT" -o cat | grep -i -m 1 'watchdog timeout')"
}

stops_within_5s_while_a_request_hangs() {
    trap 'rm -f "$GUEST$TEST_DIR/hang"' EXIT
    touch "$GUEST$TEST_DIR/hang"
    drop_export orders-2.csv 2001
    wait_for 20 grep -q '"hang": true' "$GUEST$TEST_DIR/requests.jsonl" || fail "no request reached the fake"
    local t ms
    t=$(now_ms)
    g timeout 30 systemctl stop "$UNIT"
    ms=$(($(now_ms) - t))
    echo "info: stopped in $ms ms; result $(prop Result), exit status $(prop ExecMainStatus)"
    ((ms <= 5000)) || fail "stop took $ms ms"
    [[ $(prop Result) == success ]] || fail "result $(prop Result)"
}

restart_keeps_the_queue() {
    local counts
    counts=$(queue_counts)
    [[ ${counts%% *} -ge 2 ]] || fail "the 2 abandoned events are not queued after the stop (pending sent: $counts)"
    g timeout 20 systemctl start "$UNIT"
    wait_for 20 grep -q '"s1:2002"' "$GUEST$TEST_DIR/requests.jsonl" || fail "s1:2002 not delivered after the restart"
}

bad_config_exits_78_without_restarts() {
    # Whatever happens, the next checks get the good config and a running service back.
    trap 'write_config ""; g systemctl reset-failed "$UNIT"; g timeout 20 systemctl start "$UNIT"' EXIT
    write_config "no_such_key = 1"
    ! g timeout 20 systemctl restart "$UNIT" || fail "started with a bad config"
    wait_for 5 is ActiveState failed || fail "state $(prop ActiveState)"
    local restarts
    restarts=$(prop NRestarts)
    [[ $(prop ExecMainStatus) == 78 ]] || fail "exit status $(prop ExecMainStatus)"
    sleep 3 # RestartSec=1s: a restart loop would show by now
    [[ $(prop NRestarts) == "$restarts" && $(prop ActiveState) == failed ]] \
        || fail "restarted: $(prop ActiveState), NRestarts $restarts -> $(prop NRestarts)"
}

upgrade_keeps_queue_and_config() {
    local before pid
    before=$(queue_counts)
    pid=$(prop MainPID)
    g dpkg -i $TEST_DIR/upgrade.deb
    [[ $(g dpkg-query -W -f='${Version}' $PKG) == "$version+boottest1" ]] || fail "not upgraded"
    grep -q 'edited by tests/system/boot.sh' "$CONFIG" || fail "the edited config was replaced"
    [[ $(prop ActiveState) == active && $(prop MainPID) != "$pid" ]] || fail "not restarted by the upgrade"
    [[ ${before#* } -ge 4 && $(queue_counts) == "$before" ]] || fail "queue (pending sent) $before -> $(queue_counts)"
}

remove_keeps_the_queue() {
    g dpkg -r $PKG
    [[ $(prop ActiveState) == inactive ]] || fail "still $(prop ActiveState)"
    [[ -s $GUEST/var/lib/$PKG/queue.sqlite ]] || fail "the queue is gone"
    g getent passwd $PKG >/dev/null || fail "the account is gone"
}

purge_removes_the_queue() {
    g dpkg -P $PKG
    [[ ! -e $GUEST/var/lib/$PKG ]] || fail "/var/lib/$PKG is still there"
    ! g getent passwd $PKG >/dev/null || fail "the account is still there"
    [[ -f $GUEST/etc/$PKG/token ]] || fail "the administrator's token was deleted"
}

echo "== system test: $(basename "$DEB") on Debian 12 under systemd-nspawn (rootfs $([[ $ROOTFS_SECS -gt 5 ]] && echo "built in ${ROOTFS_SECS}s" || echo cached))"
check "boot: system running, fake TikTok listening" boots
check "install: enabled, not started, no failed units (and no procps)" installs_enabled_not_started
check "configure: token, config, POS folder drop-in" configure
check "start: READY, STATUS line" starts_ready_with_status
check "delivery: a CSV renamed into the POS folder reaches the fake TikTok and is archived" delivers_and_archives
check "TLS (test CA via ca_bundle) and DNS (/etc/hosts) under the sandbox" tls_and_dns_under_the_sandbox
check "STATUS shows the delivery (within 25 s)" status_shows_the_delivery
check "reload, good config (ExecReload without /bin/kill)" reloads_a_good_config
check "reload, bad config: logged at err, running config kept" keeps_running_on_a_bad_reload
check "journal: priorities (journalctl -p err shows the error), no level words" journal_has_priorities
check "watchdog: SIGSTOP -> killed and restarted (WatchdogSec=3s drop-in)" restarts_on_watchdog
check "stop within 5 s while a request hangs" stops_within_5s_while_a_request_hangs
check "restart keeps the queue: the abandoned events are delivered" restart_keeps_the_queue
check "bad config at start: exit 78, no restart loop" bad_config_exits_78_without_restarts
check "upgrade: queue and edited config kept, service restarted" upgrade_keeps_queue_and_config
check "remove: the queue stays" remove_keeps_the_queue
check "purge: the queue and the account are gone, the token stays" purge_removes_the_queue

echo "== system test: $PASSED passed, $FAILED failed, total $((SECONDS - T0))s (rootfs ${ROOTFS_SECS}s)"
((FAILED == 0))
