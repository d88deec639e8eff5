#!/bin/bash
# Storage designs for the queue, measured in the sqlite3 shell alone (no agent): N events queued
# in transactions of 3,000 (as ingest parts are), then marked sent in transactions of 1,000 (as
# the sender's requests are), WAL with synchronous=FULL and the agent's cache and checkpoint
# settings; each event a 107-byte payload (the packed size of the backlog benchmark's events).
#
#   bash benches/storage_designs.sh            # 1,000,000 events
#   N=20000 bash benches/storage_designs.sh    # short form (CI)
#
# Designs: `current` (schema v9: events + payloads, the unique key and `events_by_state`, a sent
# mark updates each event's row and index entry), `pending-index` (v9 with a partial index of
# pending events in place of `events_by_state`), `merged` (the payload in the event's row, the
# partial index), `cursor` (one row per event with its payload, the unique key, and sent events
# told by one cursor row that a request moves). Prints CPU seconds and bytes written
# (`/proc/<pid>/io`) of the sqlite3 process (GNU time), ingest alone and ingest plus marks.
set -euo pipefail
N=${N:-1000000}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT

schema() {
    local events="CREATE TABLE events (id INTEGER PRIMARY KEY, event_name TEXT NOT NULL, event_id TEXT NOT NULL,
        event_time INTEGER NOT NULL, order_id TEXT NOT NULL, file_id INTEGER, state INTEGER NOT NULL DEFAULT 0,
        attempts INTEGER NOT NULL DEFAULT 0, queued_at INTEGER NOT NULL, sent_at INTEGER, dead_reason TEXT,
        dead_message TEXT"
    case $1 in
    current) echo "$events, UNIQUE (event_name, event_id)); CREATE INDEX events_by_state ON events (state DESC, id);
        CREATE TABLE payloads (id INTEGER PRIMARY KEY, json BLOB NOT NULL, checksum INTEGER);" ;;
    pending-index) echo "$events, UNIQUE (event_name, event_id)); CREATE INDEX events_pending ON events (id) WHERE state = 0;
        CREATE TABLE payloads (id INTEGER PRIMARY KEY, json BLOB NOT NULL, checksum INTEGER);" ;;
    merged) echo "$events, json BLOB, checksum INTEGER, UNIQUE (event_name, event_id));
        CREATE INDEX events_pending ON events (id) WHERE state = 0;" ;;
    cursor) echo "CREATE TABLE events (id INTEGER PRIMARY KEY, event_name TEXT NOT NULL, event_id TEXT NOT NULL,
        event_time INTEGER NOT NULL, order_id TEXT NOT NULL, file_id INTEGER, queued_at INTEGER NOT NULL, json BLOB,
        checksum INTEGER, UNIQUE (event_id, event_name));
        CREATE TABLE cursor (k INTEGER PRIMARY KEY, sent_upto INTEGER NOT NULL, at INTEGER); INSERT INTO cursor VALUES (1, 0, 0);" ;;
    esac
}

script() { # design, with marks (1/0)
    echo "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA wal_autocheckpoint=16384; PRAGMA cache_size=-2048;"
    schema "$1"
    local cols="event_name, event_id, event_time, order_id, file_id, queued_at"
    local vals="'Purchase', 's042:t1:' || printf('%08d', value), 1765000000 + value % 80000, printf('%08d', value), 1, 1765000000"
    for ((s = 1; s <= N; s += 3000)); do
        e=$((s + 2999 < N ? s + 2999 : N))
        echo "BEGIN;"
        case $1 in
        current | pending-index)
            echo "INSERT INTO events ($cols, sent_at) SELECT $vals, 1765000000 FROM generate_series($s, $e);"
            echo "INSERT INTO payloads SELECT value, randomblob(107), value * 7 FROM generate_series($s, $e);" ;;
        merged) echo "INSERT INTO events ($cols, sent_at, json, checksum) SELECT $vals, 1765000000, randomblob(107), value * 7 FROM generate_series($s, $e);" ;;
        cursor) echo "INSERT INTO events ($cols, json, checksum) SELECT $vals, randomblob(107), value * 7 FROM generate_series($s, $e);" ;;
        esac
        echo "COMMIT;"
    done
    [ "$2" = 1 ] || return 0
    for ((s = 1; s <= N; s += 1000)); do
        e=$((s + 999))
        case $1 in
        cursor) echo "UPDATE cursor SET sent_upto = $e, at = 1765000100 WHERE k = 1;" ;;
        *) echo "UPDATE events SET attempts = attempts + 1, state = 1, sent_at = 1765000100 WHERE id BETWEEN $s AND $e AND state = 0;" ;;
        esac
    done
}

measure() { # design, with marks
    rm -f "$dir"/q.db*
    script "$1" "$2" > "$dir/script.sql"
    # A shell's write_bytes include those of the children it waited for: the database's close too.
    local written
    written=$(/usr/bin/time -f "%U %S" -o "$dir/time" sh -c \
        'sqlite3 "$1" < "$2" > /dev/null && awk "/^write_bytes/ {print \$2}" /proc/$$/io' _ "$dir/q.db" "$dir/script.sql")
    read -r user sys < "$dir/time"
    echo "$(echo "$user + $sys" | bc) s CPU, $((written / 1000000)) MB written"
}

for tool in sqlite3 /usr/bin/time bc; do
    command -v $tool > /dev/null || { echo "storage designs: skipped, needs $tool (apt-get install sqlite3 time bc)"; exit 0; }
done
echo "$N events; ingest alone | ingest, then marked sent"
for design in current pending-index merged cursor; do
    printf "%-14s %s | %s\n" "$design" "$(measure $design 0)" "$(measure $design 1)"
done
