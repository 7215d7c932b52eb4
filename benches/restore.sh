#!/usr/bin/env bash
# Benchmark: full-host `sp restore` of N generated sites beside the same work done by hand,
# one site after the other: `zstd -dc | tar -x` and `zstd -dc | mariadb` per site.
#
#   bash benches/restore.sh [SIZE_MIB] [SITES]      (default 1024 MiB over 4 sites)
#   FILES_PCT=80 bash benches/restore.sh            (share of the data in files; default 50)
#   FILES_PCT=67 bash benches/restore.sh 1536 1     (one site: ~1 GiB of files + ~0.5 GiB database)
#   SP_BASE=/tmp/base/target/release/sp bash benches/restore.sh
#                                                   (also time another sp build in the same runs,
#                                                    on the same data, e.g. the base of a change)
#
# Prints medians of RUNS (default 5) runs after a warm-up, and the ratio sp / by hand
# (target <= 0.6). sp's time includes what the hand-made baseline does not: checking the
# manifest and every dump's checksum first, hashing and checking every archive member as it
# unpacks (into a staging directory, renamed into place once proven), the database users, and
# starting and health-checking every container. The mix matters: by hand, loading a dump is ~10x slower per
# MiB than extracting files, and that is where sp gains (rows over parallel connections, files
# extracted meanwhile); files-heavy hosts gain less.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-1024}
N=${2:-4}
RUNS=${RUNS:-5}
FILES_PCT=${FILES_PCT:-50}   # share of the data in site files; the rest is database rows
SP_BASE=${SP_BASE:-}         # another sp binary to time beside this one

bash scripts/rig.sh up >/dev/null
command -v bc >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq bc >/dev/null; }
# shellcheck disable=SC1091
source /var/lib/sp-rig/rig.env
cargo build --release --locked -q
SP="$PWD/target/release/sp"

W=$(mktemp -d /var/tmp/sp-bench.XXXXXX)
INSTANCE="rbench$$"
export SP_CONFIG="$W/config.toml"
SITES=()
for i in $(seq 1 "$N"); do SITES+=("rb$$x$i"); done
root_sql() { mariadb --socket="$SP_RIG_MYSQL_SOCKET" -uroot "$@"; }
drop_all() {
  docker ps -aq --filter "label=sp.instance=$INSTANCE" | xargs -r docker rm -f >/dev/null
  docker network ls -q --filter "label=sp.instance=$INSTANCE" | xargs -r docker network rm >/dev/null
  for s in "${SITES[@]}"; do root_sql -e "DROP DATABASE IF EXISTS \`$s\`; DROP DATABASE IF EXISTS \`${s}h\`; DROP USER IF EXISTS '$s'@'%';"; done
}
cleanup() {
  if [ -n "${KEEP:-}" ]; then echo "kept: SP_CONFIG=$SP_CONFIG (instance $INSTANCE)"; return; fi
  drop_all || true; rm -rf "$W"
}
trap cleanup EXIT

# The admin URL without its password; sp init reads the password from the rig's 0600 file.
ADMIN=${SP_RIG_MYSQL_URL#mysql://}
ADMIN_URL="mysql://${ADMIN%%:*}@${ADMIN##*@}"
"$SP" -q init --instance "$INSTANCE" --sites-dir "$W/sites" --backup-dir "$W/backups" --state-dir "$W/state" \
  --mysql-url "$ADMIN_URL" --mysql-password-file "$SP_RIG_DIR/mysql-admin.password" --mysql-host-for-containers "$SP_RIG_GATEWAY:$SP_RIG_MYSQL_PORT" --port-range 25100-25199 >/dev/null
printf '%s\n' "$SP_RIG_REGISTRY_PASSWORD" | "$SP" -q registry login "$SP_RIG_REGISTRY" --username "$SP_RIG_REGISTRY_USER" --password-stdin >/dev/null

echo "== generating ${SIZE} MiB over $N sites (${FILES_PCT}% files)"
PER=$((SIZE / N)); FILES_MB=$((PER * FILES_PCT / 100)); DB_MB=$((PER - FILES_MB)); ROWS=$((DB_MB * 1024 * 1024 / 600))
for s in "${SITES[@]}"; do
  "$SP" -q site add "$s" --image "$SP_RIG_IMAGE:v1" --health-path / >/dev/null
  python3 - "$W/sites/$s/data" "$FILES_MB" <<'PY'
import os, random, sys
root, mb = sys.argv[1], int(sys.argv[2])
random.seed(len(root))
words = ["".join(random.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(random.randint(2, 9))) for _ in range(3000)]
total, i = 0, 0
while total < mb << 20:
    d = os.path.join(root, f"d{i // 200:03d}"); os.makedirs(d, exist_ok=True)
    data = os.urandom(random.randint(100_000, 1_000_000)) if i % 10 == 0 else " ".join(random.choice(words) for _ in range(random.randint(300, 30_000))).encode()
    open(os.path.join(d, f"f{i:06d}.dat"), "wb").write(data); total += len(data); i += 1
PY
  root_sql "$s" -e "CREATE TABLE a (id INT PRIMARY KEY, t VARCHAR(200), body TEXT, n DOUBLE);
    INSERT INTO a SELECT seq, CONCAT('title ', seq), REPEAT(CONCAT('body ', seq % 977, ' '), 40), RAND(seq) FROM seq_1_to_$((ROWS / 2));
    CREATE TABLE b LIKE a; INSERT INTO b SELECT * FROM a;"
done
chown -R 20000 "$W/sites/"*/data 2>/dev/null || true
"$SP" -q backup >/dev/null
SNAP=$(ls -d "$W"/backups/2* | tail -n1)
echo "snapshot: $(du -sh "$SNAP" | cut -f1)"

now() { date +%s.%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
OPT="$W/client.cnf"; printf '[client]\nsocket=%s\nuser=root\n' "$SP_RIG_MYSQL_SOCKET" > "$OPT"

# Each run restores into fresh directories, and old trees are deleted only at the end: ext4 here is
# slow to reuse freshly freed inodes, and a deletion running beside a timed run steals its CPU.
# Nothing from the previous run may still be writing back while the next is timed.
settle() { sync; sleep 2; }
sp_restore() { # $1: run number, $2: the sp binary (default: this build)
  drop_all; mv "$W/sites" "$W/old-sites-$1"; rm -f "$W/registries.toml.bak"
  sed -i "s|^sites_dir = .*|sites_dir = \"$W/sites-$1\"|" "$SP_CONFIG"
  settle
  local s e; s=$(now); "${2:-$SP}" -q --json restore latest > "$W/last-restore.json"; e=$(now); echo "$e - $s" | bc
  mv "$W/sites-$1" "$W/sites"; sed -i "s|^sites_dir = .*|sites_dir = \"$W/sites\"|" "$SP_CONFIG"
}
by_hand() { # $1: run number
  for site in "${SITES[@]}"; do root_sql -e "DROP DATABASE IF EXISTS \`${site}h\`"; done
  settle
  local s e; s=$(now)
  for site in "${SITES[@]}"; do
    mkdir -p "$W/hand-$1/$site"
    zstd -dc "$SNAP/sites/$site.tar.zst" | tar -x -C "$W/hand-$1/$site"
    root_sql -e "CREATE DATABASE \`${site}h\`"
    zstd -dc "$SNAP/sites/$site.sql.zst" | mariadb --defaults-extra-file="$OPT" "${site}h"
  done
  e=$(now); echo "$e - $s" | bc
}

echo "== warm-up"
sp_restore w >/dev/null; by_hand w >/dev/null
[ -z "$SP_BASE" ] || sp_restore wb "$SP_BASE" >/dev/null
: > "$W/t_sp"; : > "$W/t_hand"; : > "$W/t_base"
for r in $(seq 1 "$RUNS"); do
  [ -z "$SP_BASE" ] || sp_restore "${r}b" "$SP_BASE" >> "$W/t_base"
  sp_restore "$r" >> "$W/t_sp"
  by_hand "$r" >> "$W/t_hand"
  echo "run $r: sp restore $(tail -n1 "$W/t_sp")s,${SP_BASE:+ base $(tail -n1 "$W/t_base")s,} by hand $(tail -n1 "$W/t_hand")s"
done
[ -z "${SHOW_PHASES:-}" ] || python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(\"verify %.2fs, total %.2fs\" % (r[\"verify_seconds\"], r[\"seconds\"])); [print(s[\"site\"], \"%.2fs\" % s[\"seconds\"], \", \".join(\"%s %.2fs\" % (p[\"name\"], p[\"seconds\"]) for p in s[\"phases\"])) for s in r[\"sites\"]]" "$W/last-restore.json"
SP_T=$(median < "$W/t_sp"); HAND_T=$(median < "$W/t_hand")
echo
echo "data: ${SIZE} MiB over $N sites, ${FILES_PCT}% files; medians of $RUNS runs"
printf 'sp restore (all sites, verified, serving) %7.2fs   by hand (tar -x + zstd -dc | mariadb, sequential) %7.2fs   ratio %.2f (target <= 0.6)\n' \
  "$SP_T" "$HAND_T" "$(echo "$SP_T / $HAND_T" | bc -l)"
if [ -n "$SP_BASE" ]; then
  BASE_T=$(median < "$W/t_base")
  printf 'base sp restore (%s) %7.2fs   ratio %.2f\n' "$SP_BASE" "$BASE_T" "$(echo "$BASE_T / $HAND_T" | bc -l)"
fi
