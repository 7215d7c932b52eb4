#!/usr/bin/env bash
# Provision the real components sp's tests and demo run against, idempotently, on a fresh
# Debian host with a Docker engine: a private MariaDB, an authenticated registry on 127.0.0.1,
# a tiny busybox site image (tags v1, v2, broken) pushed to it, a Caddy image built from
# Debian's caddy package (never pulled), pebble, Let's Encrypt's ACME test server, and moto,
# an S3-compatible server from PyPI (in a venv), and a second sshd (Debian's openssh-server, on
# 127.0.0.1:2222, key-only) serving sftp, for off-host snapshots.
#
#   scripts/rig.sh up     install + start what is missing (safe to run again), write rig.env
#   scripts/rig.sh down   stop only what `up` started (by pid file)
#   scripts/rig.sh env    print the rig.env path
#   scripts/rig.sh s3     only (re)start the S3 server and add it to rig.env (leaves the rest alone)
#   scripts/rig.sh sftp   only (re)start the sshd for sftp and add it to rig.env (likewise)
#
# Everything lives under $SP_RIG_DIR (default /var/lib/sp-rig). Nothing listens beyond
# 127.0.0.1 except MariaDB, which also binds the Docker bridge gateway so containers reach it,
# and pebble, which listens only there (a Caddy container must reach it).
set -euo pipefail

RIG_DIR=${SP_RIG_DIR:-/var/lib/sp-rig}
MYSQL_PORT=${SP_RIG_MYSQL_PORT:-13306}
REGISTRY_ADDR=${SP_RIG_REGISTRY_ADDR:-127.0.0.1:5000}
IMAGE_REPO="$REGISTRY_ADDR/sp-test/site"
CADDY_IMAGE=${SP_RIG_CADDY_IMAGE:-$REGISTRY_ADDR/sp-test/caddy:2.6}
PEBBLE_PORT=${SP_RIG_PEBBLE_PORT:-14000}
PEBBLE_MGMT_PORT=${SP_RIG_PEBBLE_MGMT_PORT:-15000}
S3_PORT=${SP_RIG_S3_PORT:-19000}
SFTP_PORT=${SP_RIG_SFTP_PORT:-2222}

log() { printf '[rig] %s\n' "$*" >&2; }
die() { printf '[rig] error: %s\n' "$*" >&2; exit 1; }

alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

secret() { # secret FILE: a stable random secret kept in FILE
  if [ ! -s "$1" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$1")
  fi
  cat "$1"
}

install_packages() {
  local need=()
  command -v mariadbd >/dev/null || need+=(mariadb-server)
  command -v mariadb >/dev/null || need+=(mariadb-client)
  command -v mariadb-dump >/dev/null || need+=(mariadb-client)
  command -v docker-registry >/dev/null || need+=(docker-registry)
  command -v htpasswd >/dev/null || need+=(apache2-utils)
  [ -x /bin/busybox ] && /bin/busybox --list | grep -x httpd >/dev/null || need+=(busybox-static)
  command -v curl >/dev/null || need+=(curl)
  command -v zstd >/dev/null || need+=(zstd)
  command -v docker >/dev/null || need+=(docker.io)
  command -v nft >/dev/null || need+=(nftables)
  command -v caddy >/dev/null || need+=(caddy)
  command -v pebble >/dev/null || need+=(pebble)
  command -v openssl >/dev/null || need+=(openssl)
  [ -x /usr/sbin/sshd ] || need+=(openssh-server)
  command -v ssh-keygen >/dev/null || need+=(openssh-client)
  [ -s /etc/ssl/certs/ca-certificates.crt ] || need+=(ca-certificates)
  if [ ${#need[@]} -gt 0 ]; then
    log "installing: ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
  fi
}

ensure_docker() {
  if docker info >/dev/null 2>&1; then return; fi
  log "no Docker engine answering; starting dockerd"
  mkdir -p "$RIG_DIR/run"
  setsid dockerd -p "$RIG_DIR/run/dockerd.pid" >"$RIG_DIR/dockerd.log" 2>&1 < /dev/null &
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && return; sleep 0.5; done
  die "dockerd did not come up (see $RIG_DIR/dockerd.log)"
}

bridge_gateway() { # IPAM often leaves Gateway empty on the default bridge: ask the interface
  local gw
  gw=$(docker network inspect bridge -f '{{range .IPAM.Config}}{{.Gateway}}{{end}}' 2>/dev/null | head -n1)
  if [ -z "$gw" ]; then
    gw=$(ip -4 -o addr show docker0 2>/dev/null | awk '{print $4}' | cut -d/ -f1 | head -n1)
  fi
  echo "$gw"
}

start_mariadb() {
  local gw=$1 dir="$RIG_DIR/mysql" run="$RIG_DIR/run"
  mkdir -p "$dir/data" "$run"
  chown mysql:mysql "$dir/data" "$run"
  cat > "$dir/my.cnf" <<CNF
[mysqld]
user = mysql
datadir = $dir/data
socket = $run/mysqld.sock
pid-file = $run/mysqld.pid
port = $MYSQL_PORT
bind-address = 127.0.0.1,$gw
skip-name-resolve
log-error = $run/mysqld.err
innodb_buffer_pool_size = 256M
max_connections = 300
CNF
  if ! alive "$run/mysqld.pid"; then
    if [ ! -d "$dir/data/mysql" ]; then
      log "initialising MariaDB datadir"
      mariadb-install-db --defaults-file="$dir/my.cnf" --auth-root-authentication-method=socket >/dev/null
    fi
    log "starting MariaDB on 127.0.0.1,$gw:$MYSQL_PORT"
    setsid mariadbd --defaults-file="$dir/my.cnf" >/dev/null 2>&1 < /dev/null &
  fi
  for _ in $(seq 1 60); do
    mariadb --socket="$run/mysqld.sock" -uroot -e 'SELECT 1' >/dev/null 2>&1 && break
    sleep 0.5
  done
  mariadb --socket="$run/mysqld.sock" -uroot -e 'SELECT 1' >/dev/null || die "MariaDB did not start (see $run/mysqld.err)"
  local pw; pw=$(secret "$RIG_DIR/mysql-admin.password")
  mariadb --socket="$run/mysqld.sock" -uroot <<SQL
DELETE FROM mysql.global_priv WHERE User = '';
FLUSH PRIVILEGES;
CREATE USER IF NOT EXISTS 'sp_admin'@'127.0.0.1' IDENTIFIED BY '$pw';
CREATE USER IF NOT EXISTS 'sp_admin'@'localhost' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON *.* TO 'sp_admin'@'127.0.0.1' WITH GRANT OPTION;
GRANT ALL PRIVILEGES ON *.* TO 'sp_admin'@'localhost' WITH GRANT OPTION;
SQL
}

start_registry() {
  local dir="$RIG_DIR/registry" run="$RIG_DIR/run"
  mkdir -p "$dir/storage" "$run"
  local pw; pw=$(secret "$RIG_DIR/registry.password")
  htpasswd -Bbc "$dir/htpasswd" sp-ci "$pw" 2>/dev/null
  cat > "$dir/config.yml" <<YML
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $dir/storage
  delete:
    enabled: true
http:
  addr: $REGISTRY_ADDR
  secret: $(secret "$RIG_DIR/registry.http-secret")
auth:
  htpasswd:
    realm: sp-rig
    path: $dir/htpasswd
YML
  if ! alive "$run/registry.pid"; then
    log "starting registry on $REGISTRY_ADDR"
    setsid docker-registry serve "$dir/config.yml" >"$dir/registry.log" 2>&1 < /dev/null &
    echo $! > "$run/registry.pid"
  fi
  for _ in $(seq 1 40); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$REGISTRY_ADDR/v2/")" = 401 ] && return
    sleep 0.25
  done
  die "registry did not answer on $REGISTRY_ADDR (see $dir/registry.log)"
}

# build_image TAG INDEX_TEXT CMD_JSON: a busybox rootfs serving /www (with /www/data -> /data)
build_image() {
  local tag=$1 text=$2 cmd=$3 root
  root=$(mktemp -d)
  mkdir -p "$root/bin" "$root/www" "$root/tmp" "$root/data"
  chmod 1777 "$root/tmp"
  cp /bin/busybox "$root/bin/busybox"
  for a in sh httpd ls cat wget nc sleep echo env id false true test mkdir; do ln -s busybox "$root/bin/$a"; done
  printf '%s\n' "$text" > "$root/www/index.html"
  ln -s /data "$root/www/data"
  # The rootfs is kept so tests can import images of their own from it.
  tar -C "$root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$RIG_DIR/rootfs-$tag.tar" .
  docker import --change "CMD $cmd" --change 'EXPOSE 8080' --change 'ENV PATH=/bin' \
    "$RIG_DIR/rootfs-$tag.tar" "$IMAGE_REPO:$tag" >/dev/null
  rm -rf "$root"
}

build_images() {
  local httpd='["/bin/httpd","-f","-p","8080","-h","/www"]'
  build_image v1 "site v1" "$httpd"
  build_image v2 "site v2" "$httpd"
  build_image broken "broken" '["/bin/false"]'
  local cfg="$RIG_DIR/docker-config"
  mkdir -p "$cfg"
  secret "$RIG_DIR/registry.password" | DOCKER_CONFIG=$cfg docker login -u sp-ci --password-stdin "$REGISTRY_ADDR" >/dev/null 2>&1
  for t in v1 v2 broken; do DOCKER_CONFIG=$cfg docker push -q "$IMAGE_REPO:$t" >/dev/null; done
  log "pushed $IMAGE_REPO:{v1,v2,broken}"
}

# The proxy image: Debian's /usr/bin/caddy (it links only libc and libzstd), the libraries ldd
# names and the loader, and the CA bundle, laid out like the official image (config in /config,
# certificates in /data, the Caddyfile at /etc/caddy/Caddyfile). Built once; never pulled.
build_caddy_image() {
  if ! docker image inspect "$CADDY_IMAGE" >/dev/null 2>&1; then make_caddy_image; fi
  # Pushed like a site image: sp pins the proxy image by digest.
  DOCKER_CONFIG="$RIG_DIR/docker-config" docker push -q "$CADDY_IMAGE" >/dev/null
}

make_caddy_image() {
  local root lib
  root=$(mktemp -d)
  mkdir -p "$root/usr/bin" "$root/etc/ssl/certs" "$root/etc/caddy" "$root/config" "$root/data" "$root/tmp"
  chmod 1777 "$root/tmp"
  cp /usr/bin/caddy "$root/usr/bin/caddy"
  for lib in $(ldd /usr/bin/caddy | grep -o '/[^ ]*'); do
    mkdir -p "$root$(dirname "$lib")"
    cp -L "$lib" "$root$lib"
  done
  cp -L /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
  printf ':80 {\n\trespond "sp proxy: no routes yet" 404\n}\n' > "$root/etc/caddy/Caddyfile"
  tar -C "$root" --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -cf "$RIG_DIR/rootfs-caddy.tar" .
  docker import --change 'ENV PATH=/usr/bin' --change 'ENV XDG_CONFIG_HOME=/config' \
    --change 'ENV XDG_DATA_HOME=/data' --change 'EXPOSE 80 443 2019' \
    --change 'CMD ["caddy","run","--config","/etc/caddy/Caddyfile","--adapter","caddyfile"]' \
    "$RIG_DIR/rootfs-caddy.tar" "$CADDY_IMAGE" >/dev/null
  rm -rf "$root" "$RIG_DIR/rootfs-caddy.tar"
  log "built $CADDY_IMAGE ($(docker run --rm "$CADDY_IMAGE" caddy version | cut -d' ' -f1))"
}

# pebble on the bridge gateway (where a Caddy container reaches it), with its own CA and a
# server certificate for that address, 127.0.0.1 and localhost. Every challenge passes
# (PEBBLE_VA_ALWAYS_VALID); no nonce is rejected at random (PEBBLE_WFE_NONCEREJECT=0). Its
# issuing root (/roots/0 on the management port) changes each time it starts, and it forgets
# ACME accounts: clients fetch the root after `up`, Caddy starts with empty storage.
start_pebble() {
  local gw=$1 dir="$RIG_DIR/pebble" run="$RIG_DIR/run"
  local san="IP:127.0.0.1,IP:$gw,DNS:localhost"
  mkdir -p "$dir" "$run"
  if [ ! -s "$dir/ca.pem" ] || [ ! -s "$dir/ca.key" ]; then
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=sp-rig pebble API CA" \
      -keyout "$dir/ca.key" -out "$dir/ca.pem" 2>/dev/null
    rm -f "$dir/cert.pem"
  fi
  if [ ! -s "$dir/cert.pem" ] || [ "$(cat "$dir/cert.san" 2>/dev/null)" != "$san" ]; then
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
      -keyout "$dir/key.pem" -out "$dir/cert.csr" 2>/dev/null
    printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' "$san" > "$dir/cert.ext"
    openssl x509 -req -days 3650 -in "$dir/cert.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
      -CAcreateserial -extfile "$dir/cert.ext" -out "$dir/cert.pem" 2>/dev/null
    echo "$san" > "$dir/cert.san"
    if alive "$run/pebble.pid"; then kill "$(cat "$run/pebble.pid")"; sleep 0.5; fi
  fi
  chmod 600 "$dir/ca.key" "$dir/key.pem"
  cat > "$dir/pebble-config.json" <<JSON
{
  "pebble": {
    "listenAddress": "$gw:$PEBBLE_PORT",
    "managementListenAddress": "$gw:$PEBBLE_MGMT_PORT",
    "certificate": "$dir/cert.pem",
    "privateKey": "$dir/key.pem",
    "httpPort": 80,
    "tlsPort": 443,
    "ocspResponderURL": "",
    "externalAccountBindingRequired": false
  }
}
JSON
  if ! alive "$run/pebble.pid"; then
    log "starting pebble on $gw:$PEBBLE_PORT (management :$PEBBLE_MGMT_PORT)"
    PEBBLE_VA_ALWAYS_VALID=1 PEBBLE_VA_NOSLEEP=1 PEBBLE_WFE_NONCEREJECT=0 \
      setsid pebble -config "$dir/pebble-config.json" >"$dir/pebble.log" 2>&1 < /dev/null &
    echo $! > "$run/pebble.pid"
  fi
  for _ in $(seq 1 40); do
    curl -sf --cacert "$dir/ca.pem" -o /dev/null "https://$gw:$PEBBLE_PORT/dir" \
      && curl -sf --cacert "$dir/ca.pem" -o /dev/null "https://$gw:$PEBBLE_MGMT_PORT/roots/0" && return
    sleep 0.25
  done
  die "pebble did not answer on $gw:$PEBBLE_PORT (see $dir/pebble.log)"
}

# moto's S3 server (in memory; any access key works) on 127.0.0.1:$S3_PORT, from a venv.
# It is shared: a test that needs the server gone midway cuts a forwarder of its own instead.
start_moto() {
  local venv="$RIG_DIR/moto-venv" run="$RIG_DIR/run"
  mkdir -p "$run"
  command -v python3 >/dev/null || die "python3 is needed for moto"
  if [ ! -x "$venv/bin/moto_server" ]; then
    python3 -m venv "$venv" 2>/dev/null || {
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
      python3 -m venv "$venv"
    }
    log "installing moto[server] into $venv"
    "$venv/bin/pip" install -q "moto[server]" >/dev/null
  fi
  if ! alive "$run/moto.pid"; then
    log "starting moto (S3) on 127.0.0.1:$S3_PORT"
    setsid "$venv/bin/moto_server" -H 127.0.0.1 -p "$S3_PORT" >"$RIG_DIR/moto.log" 2>&1 < /dev/null &
    echo $! > "$run/moto.pid"
  fi
  for _ in $(seq 1 80); do
    curl -sf -o /dev/null "http://127.0.0.1:$S3_PORT/" && return
    sleep 0.25
  done
  die "moto did not answer on 127.0.0.1:$S3_PORT (see $RIG_DIR/moto.log)"
}

# A second sshd, for sftp:// destinations: its own host key, client key and config, on
# 127.0.0.1:$SFTP_PORT only, key authentication only, sftp served in-process. Clients use
# sftp/known_hosts (the host key under [127.0.0.1]:$SFTP_PORT) and sftp/client_key.
start_sshd() {
  local dir="$RIG_DIR/sftp" run="$RIG_DIR/run"
  mkdir -p "$dir" "$run" /run/sshd
  chmod 700 "$dir"
  [ -s "$dir/host_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C sp-rig-sftp-host -f "$dir/host_ed25519"
  [ -s "$dir/client_key" ] || ssh-keygen -q -t ed25519 -N '' -C sp-rig-sftp-client -f "$dir/client_key"
  chmod 600 "$dir/host_ed25519" "$dir/client_key"
  cp "$dir/client_key.pub" "$dir/authorized_keys"
  printf '[127.0.0.1]:%s %s\n' "$SFTP_PORT" "$(cut -d' ' -f1,2 "$dir/host_ed25519.pub")" > "$dir/known_hosts"
  cat > "$dir/sshd_config" <<CONF
ListenAddress 127.0.0.1
Port $SFTP_PORT
HostKey $dir/host_ed25519
PidFile $run/sshd.pid
AuthorizedKeysFile $dir/authorized_keys
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
X11Forwarding no
AllowTcpForwarding no
Subsystem sftp internal-sftp
CONF
  if ! alive "$run/sshd.pid"; then
    log "starting sshd (sftp) on 127.0.0.1:$SFTP_PORT"
    /usr/sbin/sshd -t -f "$dir/sshd_config" || die "sshd refused $dir/sshd_config"
    setsid /usr/sbin/sshd -D -e -f "$dir/sshd_config" >"$dir/sshd.log" 2>&1 < /dev/null &
    echo $! > "$run/sshd.pid"
  fi
  for _ in $(seq 1 40); do
    (exec 3<>"/dev/tcp/127.0.0.1/$SFTP_PORT") 2>/dev/null && return
    sleep 0.25
  done
  die "sshd did not answer on 127.0.0.1:$SFTP_PORT (see $dir/sshd.log)"
}

sftp_env() {
  cat <<ENV
SP_RIG_SFTP_URL_BASE=sftp://root@127.0.0.1:$SFTP_PORT
SP_RIG_SFTP_KEY=$RIG_DIR/sftp/client_key
SP_RIG_SFTP_KNOWN_HOSTS=$RIG_DIR/sftp/known_hosts
ENV
}

s3_env() {
  cat <<ENV
SP_RIG_S3_ENDPOINT=http://127.0.0.1:$S3_PORT
ENV
}

# `rig.sh s3`: the S3 server alone, its lines replaced in an existing rig.env.
s3_only() {
  [ -f "$RIG_DIR/rig.env" ] || die "no $RIG_DIR/rig.env: run \`rig.sh up\` first"
  start_moto
  local tmp; tmp=$(mktemp "$RIG_DIR/.rig.env.XXXXXX")
  { grep -v -e '^SP_RIG_S3_' "$RIG_DIR/rig.env"; s3_env; } > "$tmp"
  chmod 600 "$tmp"
  mv "$tmp" "$RIG_DIR/rig.env"
  log "ready: $RIG_DIR/rig.env (S3 on 127.0.0.1:$S3_PORT)"
}

# `rig.sh sftp`: the sshd alone, its lines replaced in an existing rig.env.
sftp_only() {
  [ -f "$RIG_DIR/rig.env" ] || die "no $RIG_DIR/rig.env: run \`rig.sh up\` first"
  [ -x /usr/sbin/sshd ] || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-server >/dev/null
  }
  start_sshd
  local tmp; tmp=$(mktemp "$RIG_DIR/.rig.env.XXXXXX")
  { grep -v -e '^SP_RIG_SFTP_' "$RIG_DIR/rig.env"; sftp_env; } > "$tmp"
  chmod 600 "$tmp"
  mv "$tmp" "$RIG_DIR/rig.env"
  log "ready: $RIG_DIR/rig.env (sftp on 127.0.0.1:$SFTP_PORT)"
}

up() {
  [ "$(id -u)" = 0 ] || die "run as root (it installs packages and starts services)"
  mkdir -p "$RIG_DIR"
  install_packages
  ensure_docker
  local gw; gw=$(bridge_gateway)
  [ -n "$gw" ] || die "cannot read the Docker bridge gateway address"
  start_mariadb "$gw"
  start_registry
  build_images
  build_caddy_image
  start_pebble "$gw"
  start_moto
  start_sshd
  cat > "$RIG_DIR/rig.env" <<ENV
SP_RIG_MYSQL_URL=mysql://sp_admin:$(secret "$RIG_DIR/mysql-admin.password")@127.0.0.1:$MYSQL_PORT
SP_RIG_MYSQL_PORT=$MYSQL_PORT
SP_RIG_MYSQL_SOCKET=$RIG_DIR/run/mysqld.sock
SP_RIG_GATEWAY=$gw
SP_RIG_REGISTRY=$REGISTRY_ADDR
SP_RIG_REGISTRY_USER=sp-ci
SP_RIG_REGISTRY_PASSWORD=$(secret "$RIG_DIR/registry.password")
SP_RIG_IMAGE=$IMAGE_REPO
SP_RIG_DIR=$RIG_DIR
SP_RIG_CADDY_IMAGE=$CADDY_IMAGE
SP_RIG_PEBBLE_DIR=$RIG_DIR/pebble
SP_RIG_PEBBLE_CA=$RIG_DIR/pebble/ca.pem
SP_RIG_ACME_CA=https://$gw:$PEBBLE_PORT/dir
SP_RIG_PEBBLE_ROOTS=https://$gw:$PEBBLE_MGMT_PORT/roots/0
ENV
  s3_env >> "$RIG_DIR/rig.env"
  sftp_env >> "$RIG_DIR/rig.env"
  chmod 600 "$RIG_DIR/rig.env"
  log "ready: $RIG_DIR/rig.env"
}

down() {
  local run="$RIG_DIR/run"
  for p in sshd moto pebble registry mysqld dockerd; do
    if alive "$run/$p.pid"; then log "stopping $p"; kill "$(cat "$run/$p.pid")"; fi
  done
}

case "${1:-up}" in
  up) up ;;
  down) down ;;
  env) echo "$RIG_DIR/rig.env" ;;
  s3) s3_only ;;
  sftp) sftp_only ;;
  *) die "usage: $0 up|down|env|s3|sftp" ;;
esac
