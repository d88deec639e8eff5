#!/bin/bash
# Two builds' CPU on the ingest alone, in pairs: a dry `run --once` of N one-order rows (the
# backlog bench's shape: an e-mail on every order, a phone on every second) into a fresh queue,
# timed by `farm-bench` (the tool library's), NEW and OLD in turn, the ratio taken pair by pair.
# No HTTP: the reader, the writer and a dry sender. On a machine whose pace drifts, it resolves a
# change of a few percent that the backlog bench's pairs cannot (BENCHMARKS.md, eleventh session).
#
#   bash benches/ingest_pairs.sh OLD_AGENT NEW_AGENT            # 200,000 rows, 20 pairs
#   N=50000 PAIRS=5 bash benches/ingest_pairs.sh OLD NEW        # shorter
set -euo pipefail
shopt -s inherit_errexit
old=${1:?usage: ingest_pairs.sh OLD_AGENT NEW_AGENT}
new=${2:?usage: ingest_pairs.sh OLD_AGENT NEW_AGENT}
N=${N:-200000}
PAIRS=${PAIRS:-20}
command -v farm-bench > /dev/null || { echo "ingest pairs: skipped, needs farm-bench"; exit 0; }
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$root/target"
dir=$(mktemp -d "$root/target/ingest-pairs.XXXXXX")
trap 'rm -rf "$dir"' EXIT

awk -v n="$N" 'BEGIN {
    print "order_id,event_time,email,phone,content_id,content_name,price,quantity"
    for (o = 0; o < n; o++) {
        phone = o % 2 == 0 ? sprintf("+1415555%04d", o % 10000) : ""
        printf "%08d,%d,Customer%d@Example.com,%s,SKU-%05d,Item %d,%d.%02d,1\n",
            o, 1796533800 + o % 80000, o, phone, o % 977, o % 977, 1 + o % 40, o % 100
    }
}' > "$dir/rows.csv"

for side in old new; do
    mkdir -p "$dir/$side"
    cat > "$dir/$side/config.toml" << EOF
event_source_id = "7181537436256731137"
dry_run = true
dry_run_output = "$dir/$side/out"
queue_path = "$dir/$side/queue.sqlite"
phone_region = "US"

[[source]]
name = "bench"
path = "$dir/$side/inbox"
format = "native-csv"
time_zone = "America/New_York"
currency = "USD"
shop_id = "s042"
till_id = "t1"
after_ingest = "keep"
EOF
done
# One run: a fresh queue and inbox, then the agent (exec, so that farm-bench times it).
cat > "$dir/run.sh" << 'EOF'
#!/bin/bash
agent=$1; side=$2; rows=$3
rm -rf "$side"/queue* "$side/out" "$side/inbox"
mkdir -p "$side/inbox"
cp "$rows" "$side/inbox/"
exec "$agent" --config "$side/config.toml" run --once > /dev/null 2>&1
EOF
chmod +x "$dir/run.sh"
echo "$N rows, $PAIRS pairs; A = $new, B = $old"
farm-bench -n "$PAIRS" --timeout 3600 --vs "$dir/run.sh $old $dir/old $dir/rows.csv" -- \
    "$dir/run.sh" "$new" "$dir/new" "$dir/rows.csv"
