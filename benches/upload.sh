#!/usr/bin/env bash
# Benchmark: sp backup with an upload to a local S3 server (encrypted with age) beside the
# same backup without a destination, on the same generated data.
#
#   bash benches/upload.sh [SIZE_MIB]          (default 1024; ~80% files, ~20% database)
#   S3_SERVER=moto bash benches/upload.sh ...  against the rig's moto instead of s3s-fs
#   DEST=sftp bash benches/upload.sh ...       the same to the rig's sshd (a temp dir on it)
#   DEST=dir bash benches/upload.sh ...        to a local directory: sp's own cost, no server
#   PERF=FILE bash benches/upload.sh ...       then one more backup + upload, not timed, under
#                                              `perf record -a -g` (the whole machine: sp and
#                                              the server) into FILE, for `perf report -i FILE`
#
# The default S3 server is s3s-fs (an S3 implementation in Rust, from crates.io, installed
# under the rig dir on first use: ~7 CPU-minutes), started by this script on its own port and
# data dir. moto, the rig's test server, spends ~7 ms of CPU per MiB it receives in Python,
# s3s-fs ~3 (an MD5 of every byte, then its writes): on 2 shared cores with the backup, the
# server's share shows in the ratio (its CPU seconds are printed; DEST=dir shows sp's own). A
# real bucket's server runs elsewhere.
#
# Prints medians of RUNS (default 3) runs after a warm-up, the ratio (target <= 1.3: the upload
# overlaps the backup, each file going up as soon as it is written), the server's CPU seconds
# per run, and the peak RSS of the backup with upload (target < 100 MiB: files stream up in
# 8 MiB segments, one in flight and one filling). Everything is made under a temp dir, in a bucket of its own, and removed
# afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1024}
RUNS=${RUNS:-3}

[ -f /var/lib/sp-rig/rig.env ] || bash scripts/rig.sh up >/dev/null
DEST=${DEST:-s3}
S3_SERVER=${S3_SERVER:-s3s}
if [ "$DEST" = s3 ] && [ "$S3_SERVER" = moto ]; then
  grep -q '^SP_RIG_S3_ENDPOINT=' /var/lib/sp-rig/rig.env || bash scripts/rig.sh s3 >/dev/null
fi
case $DEST in s3) SERVER_NAME=$S3_SERVER ;; sftp) SERVER_NAME=sshd ;; *) SERVER_NAME=none ;; esac
S3S=/var/lib/sp-rig/s3s/bin/s3s-fs
if [ "$DEST" = s3 ] && [ "$S3_SERVER" = s3s ] && ! [ -x "$S3S" ]; then
  echo "== installing s3s-fs 0.14.1 (crates.io) under /var/lib/sp-rig/s3s"
  cargo install -q s3s-fs@0.14.1 --features binary --locked --root /var/lib/sp-rig/s3s
fi
[ "$DEST" != sftp ] || grep -q '^SP_RIG_SFTP_URL_BASE=' /var/lib/sp-rig/rig.env || bash scripts/rig.sh sftp >/dev/null
if ! [ -x /usr/bin/time ] || ! command -v bc >/dev/null; then
  apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time bc >/dev/null
fi
# shellcheck disable=SC1091
source /var/lib/sp-rig/rig.env
cargo build --release --locked -q -j 2
SP="$PWD/target/release/sp"

W=$(mktemp -d /var/tmp/sp-bench.XXXXXX)
INSTANCE="upbench$$"
SITE="upbench$$"
BUCKET="sp-upbench-$$"
export SP_CONFIG="$W/config.toml"
SERVER_PID=
if [ "$DEST" = s3 ] && [ "$S3_SERVER" = s3s ]; then
  mkdir -p "$W/s3s"
  S3S_PORT=${S3S_PORT:-19100}
  setsid "$S3S" --host 127.0.0.1 --port "$S3S_PORT" --access-key bench --secret-key bench "$W/s3s" >"$W/s3s.log" 2>&1 < /dev/null &
  SERVER_PID=$!
  SP_RIG_S3_ENDPOINT="http://127.0.0.1:$S3S_PORT"
  for _ in $(seq 1 50); do curl -s -o /dev/null "$SP_RIG_S3_ENDPOINT/" && break; sleep 0.1; done
elif [ "$DEST" = s3 ]; then
  SERVER_PID=$(cat "$SP_RIG_DIR/run/moto.pid")
elif [ "$DEST" = sftp ]; then
  SERVER_PID=$(cat "$SP_RIG_DIR/run/sshd.pid")
fi
# s3s-fs wants the payload hash header; moto takes it too.
s3() { curl -sS -f --aws-sigv4 "aws:amz:us-east-1:s3" --user "bench:bench" -H "x-amz-content-sha256: UNSIGNED-PAYLOAD" "$@"; }
server_cpu() { # CPU seconds of the server (and, for sshd, its per-session children) so far
  [ -n "$SERVER_PID" ] || { echo 0; return; }
  local pids t=0 p
  pids="$SERVER_PID $(pgrep -P "$SERVER_PID" 2>/dev/null | tr '\n' ' ')"
  for p in $pids; do
    [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14+$15+$16+$17}' "/proc/$p/stat")))
  done
  echo "$t"
}
cleanup() {
  docker ps -aq --filter "label=sp.instance=$INSTANCE" | xargs -r docker rm -f >/dev/null
  docker network ls -q --filter "label=sp.instance=$INSTANCE" | xargs -r docker network rm >/dev/null
  mariadb --socket="$SP_RIG_MYSQL_SOCKET" -uroot -e "DROP DATABASE IF EXISTS \`$SITE\`; DROP USER IF EXISTS '$SITE'@'%';" || true
  empty_bucket || true
  s3 -X DELETE "$SP_RIG_S3_ENDPOINT/$BUCKET" >/dev/null 2>&1 || true
  if [ "$DEST" = s3 ] && [ "$S3_SERVER" = s3s ] && [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$W"
}
empty_bucket() {
  local k
  if [ "$DEST" = sftp ]; then rm -rf "$W/sftp-server"; return; fi
  if [ "$DEST" = dir ]; then rm -rf "$W/dir-dest"; return; fi
  for k in $(s3 "$SP_RIG_S3_ENDPOINT/$BUCKET?list-type=2" | grep -o '<Key>[^<]*' | sed 's/<Key>//'); do
    s3 -X DELETE "$SP_RIG_S3_ENDPOINT/$BUCKET/$k" >/dev/null
  done
}
trap cleanup EXIT
[ "$DEST" != s3 ] || s3 -X PUT "$SP_RIG_S3_ENDPOINT/$BUCKET" >/dev/null

ADMIN=${SP_RIG_MYSQL_URL#mysql://}
ADMIN_URL="mysql://${ADMIN%%:*}@${ADMIN##*@}"
"$SP" -q init --instance "$INSTANCE" --sites-dir "$W/sites" --backup-dir "$W/backups" --state-dir "$W/state" \
  --mysql-url "$ADMIN_URL" --mysql-password-file "$SP_RIG_DIR/mysql-admin.password" --mysql-host-for-containers "$SP_RIG_GATEWAY:$SP_RIG_MYSQL_PORT" --port-range 25020-25039 >/dev/null
printf '%s\n' "$SP_RIG_REGISTRY_PASSWORD" | "$SP" -q registry login "$SP_RIG_REGISTRY" --username "$SP_RIG_REGISTRY_USER" --password-stdin >/dev/null
"$SP" -q site add "$SITE" --image "$SP_RIG_IMAGE:v1" >/dev/null
# The same host twice: without a destination, and with the bucket (encrypted).
cp "$SP_CONFIG" "$W/plain.toml"
RCPT=$("$SP" --json key generate --output "$W/identity.age" | python3 -c 'import json,sys; print(json.load(sys.stdin)["recipient"])')
if [ "$DEST" = sftp ]; then cat "$W/plain.toml" - > "$W/upload.toml" <<TOML

[[destination]]
name = "bench"
url = "$SP_RIG_SFTP_URL_BASE$W/sftp-server/bench"
key_file = "$SP_RIG_SFTP_KEY"
known_hosts = "$SP_RIG_SFTP_KNOWN_HOSTS"

[encryption]
recipients = ["$RCPT"]
TOML
elif [ "$DEST" = dir ]; then cat "$W/plain.toml" - > "$W/upload.toml" <<TOML

[[destination]]
name = "bench"
url = "$W/dir-dest"

[encryption]
recipients = ["$RCPT"]
TOML
else cat "$W/plain.toml" - > "$W/upload.toml" <<TOML

[[destination]]
name = "bench"
url = "s3://$BUCKET/bench"
endpoint = "$SP_RIG_S3_ENDPOINT"
path_style = true
access_key_id = "bench"
secret_access_key = "bench"

[encryption]
recipients = ["$RCPT"]
TOML
fi

echo "== generating ${SIZE} MiB (files + database)"
DATA="$W/sites/$SITE/data"
FILES_MB=$((SIZE * 8 / 10)); DB_MB=$((SIZE - FILES_MB))
python3 - "$DATA" "$FILES_MB" <<'PY'
import os, random, sys
root, mb = sys.argv[1], int(sys.argv[2])
random.seed(7)
words = [("".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(random.randint(2, 9)))) for _ in range(5000)]
total, i = 0, 0
while total < mb << 20:
    d = os.path.join(root, f"d{i // 200:03d}")
    os.makedirs(d, exist_ok=True)
    if i % 10 == 0:   # some incompressible media
        data = os.urandom(random.randint(200_000, 2_000_000))
    else:             # mostly text-like files
        n = random.randint(2_000, 200_000)
        data = " ".join(random.choice(words) for _ in range(n // 6)).encode()
    with open(os.path.join(d, f"f{i:06d}.dat"), "wb") as f:
        f.write(data)
    total += len(data); i += 1
print(f"{i} files, {total >> 20} MiB")
PY
ROWS=$((DB_MB * 1024 * 1024 / 600))
mariadb --socket="$SP_RIG_MYSQL_SOCKET" -uroot "$SITE" -e "
  CREATE TABLE t (id INT PRIMARY KEY, title VARCHAR(200), body TEXT, blob_col BLOB, n DOUBLE);
  INSERT INTO t SELECT seq, CONCAT('title ', seq), REPEAT(CONCAT('body text ', seq % 977, ' '), 25),
    UNHEX(SHA2(seq, 256)), RAND(seq) FROM seq_1_to_$ROWS;"
echo "database: $ROWS rows"

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
now() { date +%s.%N; }
backup_with() {
  local c0; c0=$(server_cpu)
  SP_CONFIG="$W/$1.toml" /usr/bin/time -f "%M %U %S" -o "$W/rss" "$SP" -q backup >/dev/null
  echo "$(( $(server_cpu) - c0 ))" > "$W/server_ticks"
}
clear_all() { rm -rf "$W"/backups/2*; empty_bucket; }

echo "== warm-up"
backup_with plain; backup_with upload; clear_all

: > "$W/t_plain"; : > "$W/t_up"; : > "$W/rss_up"; : > "$W/rss_plain"; : > "$W/srv_up"; : > "$W/cpu_up"; : > "$W/cpu_plain"
for r in $(seq 1 "$RUNS"); do
  s=$(now); backup_with plain; e=$(now); echo "$e - $s" | bc >> "$W/t_plain"; cut -d' ' -f1 "$W/rss" >> "$W/rss_plain"
  awk '{print $2 + $3}' "$W/rss" >> "$W/cpu_plain"
  clear_all
  s=$(now); backup_with upload; e=$(now); echo "$e - $s" | bc >> "$W/t_up"; cut -d' ' -f1 "$W/rss" >> "$W/rss_up"
  awk '{print $2 + $3}' "$W/rss" >> "$W/cpu_up"; echo "$(cat "$W/server_ticks") / 100" | bc -l >> "$W/srv_up"
  clear_all
  echo "run $r: backup $(tail -n1 "$W/t_plain")s, backup + upload $(tail -n1 "$W/t_up")s (server CPU $(tail -n1 "$W/srv_up" | cut -c1-5)s)"
done
if [ -n "${PERF:-}" ]; then
  command -v perf >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null; }
  SP_CONFIG="$W/upload.toml" perf record -q -a -g -F 499 -o "$PERF" -- "$SP" -q backup >/dev/null
  clear_all
  echo "perf profile of one backup + upload: $PERF"
fi
P_T=$(median < "$W/t_plain"); U_T=$(median < "$W/t_up")
RSS_UP=$(sort -n "$W/rss_up" | tail -n1); RSS_PLAIN=$(sort -n "$W/rss_plain" | tail -n1)
echo
echo "data: ${SIZE} MiB; destination: $DEST ($SERVER_NAME); medians of $RUNS runs"
printf 'backup + upload   %8.2fs   backup alone %8.2fs   ratio %.2f (target <= 1.3)\n' "$U_T" "$P_T" "$(echo "$U_T / $P_T" | bc -l)"
printf 'CPU (user+sys)    sp %.1fs with upload, %.1fs without; the %s server %.1fs\n' "$(median < "$W/cpu_up")" "$(median < "$W/cpu_plain")" "$SERVER_NAME" "$(median < "$W/srv_up")"
printf 'peak RSS          %6.1f MiB with upload, %.1f MiB without (target < 100 MiB)\n' "$(echo "$RSS_UP / 1024" | bc -l)" "$(echo "$RSS_PLAIN / 1024" | bc -l)"
