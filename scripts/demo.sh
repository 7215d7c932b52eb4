#!/usr/bin/env bash
# The main job on a fresh host, with nothing from the internet: provision the local services
# (MariaDB, an authenticated registry, a busybox site image), build sp, run a demo site from
# that registry and show it serving — then the cattle cycle: back it up, destroy it (container,
# database, user, files, credentials), `sp restore latest`, and show it serving the same data.
#
# Everything lives under /var/lib/sp-demo (config, sites, backups); the real /etc and /sites
# are not touched. Run it again: it redeploys the demo site.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO=${SP_DEMO_DIR:-/var/lib/sp-demo}
bash scripts/rig.sh up
# shellcheck disable=SC1091
source /var/lib/sp-rig/rig.env

echo "== building sp (release)"
cargo build --release --locked -q
SP="$PWD/target/release/sp"
export SP_CONFIG="$DEMO/config.toml"

echo "== sp init"
# The admin URL without its password; sp init reads the password from the rig's 0600 file.
ADMIN=${SP_RIG_MYSQL_URL#mysql://}
ADMIN_URL="mysql://${ADMIN%%:*}@${ADMIN##*@}"
"$SP" init --instance demo --sites-dir "$DEMO/sites" --backup-dir "$DEMO/backups" \
  --state-dir "$DEMO/state" --mysql-url "$ADMIN_URL" --mysql-password-file "$SP_RIG_DIR/mysql-admin.password" \
  --mysql-host-for-containers "$SP_RIG_GATEWAY:$SP_RIG_MYSQL_PORT" --port-range 24000-24099
chmod 600 "$SP_CONFIG"
"$SP" doctor

echo "== sp registry login"
printf '%s\n' "$SP_RIG_REGISTRY_PASSWORD" |
  "$SP" registry login "$SP_RIG_REGISTRY" --username "$SP_RIG_REGISTRY_USER" --password-stdin

if "$SP" site show demo >/dev/null 2>&1; then
  echo "== sp site deploy demo"
  "$SP" site deploy demo --image "$SP_RIG_IMAGE:v1"
else
  echo "== sp site add demo"
  "$SP" site add demo --image "$SP_RIG_IMAGE:v1" --domain demo.example.test --health-path /
fi
echo "hello from /sites/demo/data" > "$DEMO/sites/demo/data/hello.txt"
chmod 644 "$DEMO/sites/demo/data/hello.txt"

"$SP" site list
PORT=$("$SP" --json site show demo | sed -n 's/.*"port": \([0-9]*\).*/\1/p')
echo "== curl http://127.0.0.1:$PORT/ and /data/hello.txt"
curl -fsS "http://127.0.0.1:$PORT/"
curl -fsS "http://127.0.0.1:$PORT/data/hello.txt"
mariadb --socket="$SP_RIG_MYSQL_SOCKET" -uroot demo -e \
  "CREATE TABLE IF NOT EXISTS guestbook (id INT AUTO_INCREMENT PRIMARY KEY, note VARCHAR(100));
   INSERT INTO guestbook (note) VALUES ('written before the disaster');"
BEFORE=$(mariadb --socket="$SP_RIG_MYSQL_SOCKET" -uroot -N -e "CHECKSUM TABLE demo.guestbook")

echo "== the cattle cycle: sp backup"
"$SP" backup
"$SP" verify latest
# The snapshot key goes off the host (here: a folder the disaster spares), as SETUP.md says.
mkdir -p -m 700 "$DEMO/offhost"
"$SP" key export > "$DEMO/offhost/snapshot.key"
chmod 600 "$DEMO/offhost/snapshot.key"

echo "== disaster: the container, database, user, site files, credentials and sp's state (its key too) are gone"
docker ps -aq --filter label=sp.instance=demo | xargs -r docker rm -f >/dev/null
docker network ls -q --filter label=sp.instance=demo | xargs -r docker network rm >/dev/null
mariadb --socket="$SP_RIG_MYSQL_SOCKET" -uroot -e "DROP DATABASE demo; DROP USER 'demo'@'%';"
rm -rf "$DEMO/sites" "$DEMO/registries.toml" "$DEMO/state"
curl -fsS "http://127.0.0.1:$PORT/" >/dev/null 2>&1 && { echo "still serving?"; exit 1; } || echo "the site is down"

echo "== sp key import (the key kept off the host), sp restore latest"
"$SP" key import "$DEMO/offhost/snapshot.key"
START=$(date +%s.%N)
"$SP" restore latest
END=$(date +%s.%N)
PORT=$("$SP" --json site show demo | sed -n 's/.*"port": \([0-9]*\).*/\1/p')
curl -fsS "http://127.0.0.1:$PORT/"
curl -fsS "http://127.0.0.1:$PORT/data/hello.txt"
AFTER=$(mariadb --socket="$SP_RIG_MYSQL_SOCKET" -uroot -N -e "CHECKSUM TABLE demo.guestbook")
[ "$BEFORE" = "$AFTER" ] && echo "database checksum matches: $AFTER" || { echo "checksum differs: $BEFORE vs $AFTER"; exit 1; }
printf 'serving again; restore took %.1f s (measured RTO)\n' "$(echo "$END - $START" | bc -l)"

echo "== sp drill (restores the snapshot into a scratch namespace, checks it, removes it)"
"$SP" drill
"$SP" status || true
echo "Try: SP_CONFIG=$SP_CONFIG $SP site deploy demo --image $SP_RIG_IMAGE:v2"
