#!/usr/bin/env bash
# Benchmark: sp backup and sp verify against the standard tools on the same generated data.
#
#   bash benches/backup.sh [SIZE_MIB]      (default 512; ~80% files, ~20% database)
#
# Prints medians of 3 runs (after a warm-up) for
#   sp backup                          vs  tar -cf - | zstd -T0  +  mariadb-dump | zstd -T0  (one after the other)
#   sp verify                          vs  sha256sum  +  zstd -t  (one after the other)
# as ratios, and sp backup's peak RSS. Targets: backup ratio <= 1.0, verify ratio < 1.0,
# peak RSS < 100 MB. Everything is made under a temp dir and removed afterwards.
# RUNS=N changes the run count; BASE_SYNC=1 makes the baseline fsync its output as sp does.
set -euo pipefail
cd "$(dirname "$0")/.."
SIZE=${1:-512}
RUNS=${RUNS:-3}

bash scripts/rig.sh up >/dev/null
if ! [ -x /usr/bin/time ] || ! command -v bc >/dev/null; then
  apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends time bc >/dev/null
fi
# shellcheck disable=SC1091
source /var/lib/sp-rig/rig.env
cargo build --release --locked -q
SP="$PWD/target/release/sp"

W=$(mktemp -d /var/tmp/sp-bench.XXXXXX)
INSTANCE="bench$$"
SITE="bench$$"
export SP_CONFIG="$W/config.toml"
cleanup() {
  docker ps -aq --filter "label=sp.instance=$INSTANCE" | xargs -r docker rm -f >/dev/null
  docker network ls -q --filter "label=sp.instance=$INSTANCE" | xargs -r docker network rm >/dev/null
  mariadb --socket="$SP_RIG_MYSQL_SOCKET" -uroot -e "DROP DATABASE IF EXISTS \`$SITE\`; DROP USER IF EXISTS '$SITE'@'%';" || true
  rm -rf "$W"
}
trap cleanup EXIT

# The admin URL without its password; sp init reads the password from the rig's 0600 file.
ADMIN=${SP_RIG_MYSQL_URL#mysql://}
ADMIN_URL="mysql://${ADMIN%%:*}@${ADMIN##*@}"
"$SP" -q init --instance "$INSTANCE" --sites-dir "$W/sites" --backup-dir "$W/backups" --state-dir "$W/state" \
  --mysql-url "$ADMIN_URL" --mysql-password-file "$SP_RIG_DIR/mysql-admin.password" --mysql-host-for-containers "$SP_RIG_GATEWAY:$SP_RIG_MYSQL_PORT" --port-range 25000-25019 >/dev/null
printf '%s\n' "$SP_RIG_REGISTRY_PASSWORD" | "$SP" -q registry login "$SP_RIG_REGISTRY" --username "$SP_RIG_REGISTRY_USER" --password-stdin >/dev/null
"$SP" -q site add "$SITE" --image "$SP_RIG_IMAGE:v1" >/dev/null

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
OPT="$W/client.cnf"
printf '[client]\nsocket=%s\nuser=root\n' "$SP_RIG_MYSQL_SOCKET" > "$OPT"

sp_backup() { /usr/bin/time -f %M -o "$W/rss" "$SP" -q backup >/dev/null; }
baseline() {
  tar -cf - -C "$W/sites/$SITE" --exclude=./tmp . | zstd -q -T0 -3 > "$W/base.tar.zst"
  mariadb-dump --defaults-extra-file="$OPT" --single-transaction --routines --triggers --events --hex-blob "$SITE" | zstd -q -T0 -3 > "$W/base.sql.zst"
  [ -z "${BASE_SYNC:-}" ] || sync -f "$W/base.sql.zst"
}
sp_verify() { "$SP" -q verify latest >/dev/null; }
base_verify() {
  local d; d=$(ls -d "$W"/backups/2* | tail -n1)
  sha256sum "$d"/host.tar.zst "$d"/sites/* >/dev/null
  zstd -q -t "$d"/host.tar.zst "$d"/sites/*
}
clear_backups() { rm -rf "$W"/backups/2* "$W"/base.*; }

echo "== warm-up"
sp_backup; baseline; sp_verify; base_verify; clear_backups

: > "$W/t_sp"; : > "$W/t_base"; : > "$W/t_v"; : > "$W/t_bv"; : > "$W/rss_all"
for r in $(seq 1 "$RUNS"); do
  s=$(now); sp_backup; e=$(now); echo "$e - $s" | bc >> "$W/t_sp"; cat "$W/rss" >> "$W/rss_all"
  s=$(now); sp_verify; e=$(now); echo "$e - $s" | bc >> "$W/t_v"
  s=$(now); base_verify; e=$(now); echo "$e - $s" | bc >> "$W/t_bv"
  s=$(now); baseline; e=$(now); echo "$e - $s" | bc >> "$W/t_base"
  echo "run $r: sp backup $(tail -n1 "$W/t_sp")s, baseline $(tail -n1 "$W/t_base")s, sp verify $(tail -n1 "$W/t_v")s, sha256sum+zstd -t $(tail -n1 "$W/t_bv")s"
  clear_backups
done
SP_T=$(median < "$W/t_sp"); BASE_T=$(median < "$W/t_base")
V_T=$(median < "$W/t_v"); BV_T=$(median < "$W/t_bv")
RSS_KB=$(sort -n "$W/rss_all" | tail -n1)
echo
echo "data: ${SIZE} MiB; medians of $RUNS runs"
printf 'sp backup         %8.2fs   tar|zstd + dump|zstd %8.2fs   ratio %.2f (target <= 1.0)\n' "$SP_T" "$BASE_T" "$(echo "$SP_T / $BASE_T" | bc -l)"
printf 'sp verify         %8.2fs   sha256sum + zstd -t  %8.2fs   ratio %.2f (target < 1.0)\n' "$V_T" "$BV_T" "$(echo "$V_T / $BV_T" | bc -l)"
printf 'sp backup peak RSS %6.1f MB (target < 100 MB)\n' "$(echo "$RSS_KB / 1024" | bc -l)"
