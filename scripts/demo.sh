#!/usr/bin/env bash
# The main job on a fresh host, with nothing from the internet: provision the local services
# (MariaDB, an authenticated registry, a busybox site image, a Caddy image, pebble as the ACME
# CA), build sp, run a demo site from that registry behind sp's HTTPS front door and show it
# serving at https://demo.example.test — then the cattle cycle: back it up, destroy everything
# (containers, proxy and its certificates, database, user, files, credentials, sp's state),
# stop the CA, `sp restore latest`, and show it serving the same data with the same
# certificate.
#
# Everything lives under /var/lib/sp-demo (config, sites, backups, state); the real /etc and
# /sites are not touched. Ports: 127.0.0.1:443 and :80 (SP_DEMO_HTTPS_PORT / SP_DEMO_HTTP_PORT).
# Run it again: it starts over.
set -euo pipefail
cd "$(dirname "$0")/.."

DEMO=${SP_DEMO_DIR:-/var/lib/sp-demo}
HTTPS_PORT=${SP_DEMO_HTTPS_PORT:-443}
HTTP_PORT=${SP_DEMO_HTTP_PORT:-80}
DOMAIN=demo.example.test
bash scripts/rig.sh up
# shellcheck disable=SC1091
source /var/lib/sp-rig/rig.env

echo "== building sp (release)"
cargo build --release --locked -q
SP="$PWD/target/release/sp"
export SP_CONFIG="$DEMO/config.toml"

# A previous run's demo goes first.
docker ps -aq --filter label=sp.instance=demo | xargs -r docker rm -f >/dev/null
docker network ls -q --filter label=sp.instance=demo | xargs -r docker network rm >/dev/null
mariadb --socket="$SP_RIG_MYSQL_SOCKET" -uroot -e "DROP DATABASE IF EXISTS demo; DROP USER IF EXISTS 'demo'@'%';"
rm -rf "$DEMO"

echo "== sp init"
# The admin URL without its password; sp init reads the password from the rig's 0600 file.
ADMIN=${SP_RIG_MYSQL_URL#mysql://}
ADMIN_URL="mysql://${ADMIN%%:*}@${ADMIN##*@}"
"$SP" init --instance demo --sites-dir "$DEMO/sites" --backup-dir "$DEMO/backups" \
  --state-dir "$DEMO/state" --mysql-url "$ADMIN_URL" --mysql-password-file "$SP_RIG_DIR/mysql-admin.password" \
  --mysql-host-for-containers "$SP_RIG_GATEWAY:$SP_RIG_MYSQL_PORT" --port-range 24000-24099
chmod 600 "$SP_CONFIG"
# The front door: the rig's Caddy image, certificates from the rig's pebble instead of Let's
# Encrypt, on 127.0.0.1 only.
sed -i '/^\[proxy\]/,$d' "$SP_CONFIG"
cat >> "$SP_CONFIG" <<TOML
[proxy]
mode = "caddy"
image = "$SP_RIG_CADDY_IMAGE"
listen = "127.0.0.1"
http_port = $HTTP_PORT
https_port = $HTTPS_PORT
email = "ops@example.test"
acme_ca = "$SP_RIG_ACME_CA"
acme_ca_root = "$SP_RIG_PEBBLE_CA"
TOML

echo "== sp registry login"
printf '%s\n' "$SP_RIG_REGISTRY_PASSWORD" |
  "$SP" registry login "$SP_RIG_REGISTRY" --username "$SP_RIG_REGISTRY_USER" --password-stdin

echo "== sp proxy up; sp doctor"
"$SP" proxy up
"$SP" doctor

echo "== sp site add demo --domain $DOMAIN"
"$SP" site add demo --image "$SP_RIG_IMAGE:v1" --domain "$DOMAIN" --health-path /
echo "hello from /sites/demo/data" > "$DEMO/sites/demo/data/hello.txt"
chmod 644 "$DEMO/sites/demo/data/hello.txt"
"$SP" site list
"$SP" proxy status

# Clients trust pebble's issuing root (as browsers trust Let's Encrypt's).
ROOT="$DEMO/pebble-root.pem"
curl -fsS --cacert "$SP_RIG_PEBBLE_CA" "$SP_RIG_PEBBLE_ROOTS" > "$ROOT"
get() { curl -fsS --resolve "$DOMAIN:$HTTPS_PORT:127.0.0.1" --cacert "$ROOT" "https://$DOMAIN:$HTTPS_PORT$1"; }
serial() {
  openssl s_client -connect "127.0.0.1:$HTTPS_PORT" -servername "$DOMAIN" </dev/null 2>/dev/null |
    openssl x509 -noout -serial
}
echo "== curl https://$DOMAIN/ and /data/hello.txt (and plain http, which redirects)"
get /
get /data/hello.txt
curl -sS -o /dev/null -w "http://$DOMAIN/ → %{http_code} %{redirect_url}\n" \
  --resolve "$DOMAIN:$HTTP_PORT:127.0.0.1" "http://$DOMAIN:$HTTP_PORT/"
SERIAL_BEFORE=$(serial)
echo "certificate $SERIAL_BEFORE"
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

echo "== disaster: containers (the proxy too), database, user, site files, credentials and sp's state (its key and the certificates too) are gone; the CA is down"
docker ps -aq --filter label=sp.instance=demo | xargs -r docker rm -f >/dev/null
docker network ls -q --filter label=sp.instance=demo | xargs -r docker network rm >/dev/null
mariadb --socket="$SP_RIG_MYSQL_SOCKET" -uroot -e "DROP DATABASE demo; DROP USER 'demo'@'%';"
rm -rf "$DEMO/sites" "$DEMO/registries.toml" "$DEMO/state"
kill "$(cat "$SP_RIG_DIR/run/pebble.pid")"
get / >/dev/null 2>&1 && { echo "still serving?"; exit 1; } || echo "the site is down"

echo "== sp key import (the key kept off the host), sp restore latest"
"$SP" key import "$DEMO/offhost/snapshot.key"
START=$(date +%s.%N)
"$SP" restore latest
END=$(date +%s.%N)
get /
get /data/hello.txt
SERIAL_AFTER=$(serial)
[ "$SERIAL_BEFORE" = "$SERIAL_AFTER" ] && echo "same certificate, not re-issued: $SERIAL_AFTER" ||
  { echo "certificate differs: $SERIAL_BEFORE vs $SERIAL_AFTER"; exit 1; }
AFTER=$(mariadb --socket="$SP_RIG_MYSQL_SOCKET" -uroot -N -e "CHECKSUM TABLE demo.guestbook")
[ "$BEFORE" = "$AFTER" ] && echo "database checksum matches: $AFTER" || { echo "checksum differs: $BEFORE vs $AFTER"; exit 1; }
printf 'serving again over HTTPS; restore took %.1f s (measured RTO)\n' "$(echo "$END - $START" | bc -l)"

echo "== sp drill (restores the snapshot into a scratch namespace, checks it, removes it)"
"$SP" drill
"$SP" status || true
# The CA comes back for the next run (with a new root).
bash scripts/rig.sh up >/dev/null
echo "Try: SP_CONFIG=$SP_CONFIG $SP site deploy demo --image $SP_RIG_IMAGE:v2"
