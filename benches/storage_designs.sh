#!/bin/bash
# Storage designs for the queue, measured in the sqlite3 shell alone (no agent): N events queued
# in transactions of 3,000 (as ingest parts are), then marked sent in transactions of 1,000 (as
# the sender's requests are), WAL with synchronous=FULL and the agent's page, cache, checkpoint and
# vacuum settings; each event a 107-byte payload (the packed size of the backlog benchmark's
# events). The rows are made by SQL expressions, whose cost is measured on its own (the same
# expressions, nothing written) and taken off: what is left is the storage's.
#
#   bash benches/storage_designs.sh             # 1,000,000 events
#   N=20000 bash benches/storage_designs.sh     # short form (CI)
#
# Designs: `v10` (the current schema: events + payloads, the unique key, the partial index of the
# states other than queued, which a backlog never writes, and sent events told by the sent
# cursor: one `sent_runs` row a request adds), `v9` (events + payloads, the unique key and
# `events_by_state`; a sent mark updated each event's row and index entry), `pending-index` (v9
# with a partial index of pending events in place of `events_by_state`), `merged` (the payload in
# the event's row, the partial index), `cursor` (one row per event with its payload, the unique
# key, and one cursor row that a request moves), `blobs` (v10 with the payloads of 200 events in
# one row, as an ingest's pieces hold them, each event's checksum in its row). Prints CPU seconds (GNU time) and MB written
# (`write_bytes` of a shell that waited for the sqlite3 process), ingest alone and ingest plus
# marks. The database is made under target/ (a tmpfs counts no bytes written).
set -euo pipefail
shopt -s inherit_errexit
N=${N:-1000000}
for tool in sqlite3 /usr/bin/time; do
    command -v $tool > /dev/null || { echo "storage designs: skipped, needs $tool (apt-get install sqlite3 time)"; exit 0; }
done
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$root/target"
dir=$(mktemp -d "$root/target/storage-designs.XXXXXX")
trap 'rm -rf "$dir"' EXIT

schema() {
    local events="CREATE TABLE events (id INTEGER PRIMARY KEY, event_name TEXT NOT NULL, event_id TEXT NOT NULL,
        event_time INTEGER NOT NULL, order_id TEXT NOT NULL, file_id INTEGER, state INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0, queued_at INTEGER NOT NULL, sent_at INTEGER, dead_reason TEXT,
        dead_message TEXT"
    local payloads="CREATE TABLE payloads (id INTEGER PRIMARY KEY, json BLOB NOT NULL, checksum INTEGER);"
    case $1 in
    v10) echo "$events, UNIQUE (event_name, event_id)); CREATE INDEX events_exceptions ON events (state, id) WHERE state <> 0;
        $payloads CREATE TABLE sent_runs (upto INTEGER PRIMARY KEY, at INTEGER NOT NULL);
        CREATE TABLE high_water (id INTEGER PRIMARY KEY, sent_upto INTEGER NOT NULL, last_event_id INTEGER NOT NULL);
        INSERT INTO high_water VALUES (1, 0, 0);" ;;
    blobs) echo "$events, checksum INTEGER, UNIQUE (event_name, event_id)); CREATE INDEX events_exceptions ON events (state, id) WHERE state <> 0;
        CREATE TABLE payloads (first INTEGER PRIMARY KEY, json BLOB NOT NULL);
        CREATE TABLE sent_runs (upto INTEGER PRIMARY KEY, at INTEGER NOT NULL);
        CREATE TABLE high_water (id INTEGER PRIMARY KEY, sent_upto INTEGER NOT NULL, last_event_id INTEGER NOT NULL);
        INSERT INTO high_water VALUES (1, 0, 0);" ;;
    v9) echo "$events, UNIQUE (event_name, event_id)); CREATE INDEX events_by_state ON events (state DESC, id); $payloads" ;;
    pending-index) echo "$events, UNIQUE (event_name, event_id)); CREATE INDEX events_pending ON events (id) WHERE state = 0; $payloads" ;;
    merged) echo "$events, json BLOB, checksum INTEGER, UNIQUE (event_name, event_id));
        CREATE INDEX events_pending ON events (id) WHERE state = 0;" ;;
    cursor) echo "CREATE TABLE events (id INTEGER PRIMARY KEY, event_name TEXT NOT NULL, event_id TEXT NOT NULL,
        event_time INTEGER NOT NULL, order_id TEXT NOT NULL, file_id INTEGER, queued_at INTEGER NOT NULL, json BLOB,
        checksum INTEGER, UNIQUE (event_id, event_name));
        CREATE TABLE cursor (k INTEGER PRIMARY KEY, sent_upto INTEGER NOT NULL, at INTEGER); INSERT INTO cursor VALUES (1, 0, 0);" ;;
    esac
}

# The SQL of a design: `ingest`, `marks` (ingest, then marks) or `rows` (the ingest's expressions
# evaluated and nothing written).
script() {
    echo "PRAGMA auto_vacuum = INCREMENTAL; PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;"
    echo "PRAGMA journal_size_limit = 67108864; PRAGMA cache_size = -2048; PRAGMA wal_autocheckpoint = 16384;"
    [ "$2" = rows ] || schema "$1"
    local cols="event_name, event_id, event_time, order_id, file_id, queued_at"
    local vals="'Purchase' AS a, 's042:t1:' || printf('%08d', value) AS b, 1765000000 + value % 80000 AS c,
        printf('%08d', value) AS d, 1 AS e, 1765000000 AS f"
    local used="length(a) + length(b) + c + length(d) + e + f"
    local blob="randomblob(107) AS g, value * 7 AS h"
    for ((s = 1; s <= N; s += 3000)); do
        e=$((s + 2999 < N ? s + 2999 : N))
        local rows="generate_series($s, $e)"
        echo "BEGIN;"
        case $1-$2 in
        v10-rows | v9-rows | pending-index-rows)
            echo "SELECT max($used) FROM (SELECT $vals FROM $rows);"
            echo "SELECT max(value + length(g) + h) FROM (SELECT value, $blob FROM $rows);" ;;
        merged-rows | cursor-rows) echo "SELECT max($used + length(g) + h) FROM (SELECT $vals, $blob FROM $rows);" ;;
        v10-* | v9-* | pending-index-*)
            echo "INSERT INTO events ($cols, sent_at) SELECT $vals, 1765000000 FROM $rows;"
            echo "INSERT INTO payloads SELECT value, $blob FROM $rows;" ;;
        blobs-rows)
            echo "SELECT max($used + value * 7) FROM (SELECT value, $vals FROM $rows);"
            echo "SELECT max(value + length(g)) FROM (SELECT value, randomblob(21400) AS g FROM generate_series($s, $e, 200));" ;;
        blobs-*)
            echo "INSERT INTO events ($cols, sent_at, checksum) SELECT $vals, 1765000000, value * 7 FROM $rows;"
            echo "INSERT INTO payloads SELECT value, randomblob(21400) FROM generate_series($s, $e, 200);" ;;
        merged-*) echo "INSERT INTO events ($cols, sent_at, json, checksum) SELECT $vals, 1765000000, $blob FROM $rows;" ;;
        cursor-*) echo "INSERT INTO events ($cols, json, checksum) SELECT $vals, $blob FROM $rows;" ;;
        esac
        if { [ "$1" = v10 ] || [ "$1" = blobs ]; } && [ "$2" != rows ]; then
            echo "UPDATE high_water SET last_event_id = $e;"
        fi
        echo "COMMIT;"
    done
    [ "$2" = marks ] || return 0
    for ((s = 1; s <= N; s += 1000)); do
        e=$((s + 999))
        case $1 in
        cursor) echo "UPDATE cursor SET sent_upto = $e, at = 1765000100 WHERE k = 1;" ;;
        v10 | blobs) echo "BEGIN; INSERT INTO sent_runs VALUES ($e, 1765000100); UPDATE high_water SET sent_upto = $e; COMMIT;" ;;
        *) echo "UPDATE events SET attempts = attempts + 1, state = 1, sent_at = 1765000100 WHERE id BETWEEN $s AND $e AND state = 0;" ;;
        esac
    done
}

# "<CPU seconds> <bytes written>" of the sqlite3 shell running a design's script.
measure() {
    rm -f "$dir"/q.db*
    script "$1" "$2" > "$dir/script.sql"
    # A shell's write_bytes include those of the children it waited for: the database's close too.
    local written
    written=$(/usr/bin/time -f "%U %S" -o "$dir/time" sh -c \
        'sqlite3 -bail "$1" < "$2" > /dev/null && awk "/^write_bytes/ {print \$2}" /proc/$$/io' _ "$dir/q.db" "$dir/script.sql")
    awk -v w="$written" '{print $1 + $2, w}' "$dir/time"
}

echo "$N events, the storage's CPU (the rows' own taken off) and bytes written: ingest alone | ingest, then marked sent"
for design in ${DESIGNS:-v10 v9 pending-index merged cursor blobs}; do
    # Assigned first: a failed measurement stops the script (set -e sees an assignment's status).
    out_rows=$(measure $design rows)
    out_ingest=$(measure $design ingest)
    out_marks=$(measure $design marks)
    read -r rows _ <<< "$out_rows"
    read -r ingest ingest_w <<< "$out_ingest"
    read -r marks marks_w <<< "$out_marks"
    if [ "$ingest_w" -eq 0 ]; then
        echo "storage designs: no bytes written counted under $dir (a tmpfs?): figures not valid" >&2
        exit 1
    fi
    awk -v d="$design" -v r="$rows" -v i="$ingest" -v iw="$ingest_w" -v m="$marks" -v mw="$marks_w" 'BEGIN {
        printf "%-14s %.2f s CPU, %d MB written | %.2f s CPU, %d MB written   (the rows: %.2f s)\n",
            d, i - r, iw / 1e6, m - r, mw / 1e6, r }'
done
