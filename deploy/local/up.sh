#!/usr/bin/env bash
# Start the local dev stack on loopback, installing what is missing (Debian packages):
#   NATS with JetStream   127.0.0.1:${IMAGELIB_DEV_NATS_PORT:-4222}
#   PostgreSQL (trust)    127.0.0.1:${IMAGELIB_DEV_PG_PORT:-5432}
#   distribution registry 127.0.0.1:${IMAGELIB_DEV_REGISTRY_PORT:-5000}
# A service whose port already listens is left alone. Idempotent; state, logs and
# pid files under ${IMAGELIB_DEV_DIR:-<repo>/.imagelib}. deploy/local/down.sh stops
# what this script started.
set -euo pipefail

# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

mkdir -p "$RUN_DIR" "$LOG_DIR"

# ---------------------------------------------------------------- NATS
start_nats() {
  local addr="${DEV_HOST}:${NATS_PORT}" pid
  if port_open "$DEV_HOST" "$NATS_PORT"; then
    info "nats: already running on ${addr}"
    return 0
  fi
  # Started by an earlier run that is still coming up: wait for it, don't start another.
  pid="$(read_pid "$NATS_PIDFILE")"
  if [[ -n "$pid" ]] && pid_alive "$pid" nats-server; then
    wait_port nats "$NATS_PORT" 30 "$NATS_LOG" "$pid"
    info "nats: already running on ${addr}"
    return 0
  fi
  ensure_cmd "$NATS_BIN" nats-server ||
    die "nats-server is missing and could not be installed; read ${LOG_DIR}/apt.log"
  mkdir -p "$NATS_DATA"
  start_bg "$NATS_PIDFILE" "$NATS_LOG" \
    "$NATS_BIN" -a "$DEV_HOST" -p "$NATS_PORT" -js -sd "$NATS_DATA"
  pid="$(read_pid "$NATS_PIDFILE")"
  wait_port nats "$NATS_PORT" 30 "$NATS_LOG" "$pid"
  info "nats: started on ${addr} with JetStream (log: ${NATS_LOG})"
}

# ---------------------------------------------------------------- PostgreSQL
pg_wait_ready() {
  local isready="$1" logfile="$2"
  local deadline=$((SECONDS + 60))
  until "$isready" -q -h "$DEV_HOST" -p "$PG_PORT" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      log_tail "$logfile"
      die "postgres did not become ready on ${DEV_HOST}:${PG_PORT} within 60s; read ${logfile}"
    fi
    sleep 0.5
  done
}

# Warn (never fail) when the server asks user postgres for a password over TCP.
pg_check_trust() {
  command -v psql >/dev/null 2>&1 || return 0
  if ! PGCONNECT_TIMEOUT=5 psql -w -h "$DEV_HOST" -p "$PG_PORT" -U postgres -d postgres \
    -Atqc 'select 1' >/dev/null 2>&1; then
    warn "postgres on ${DEV_HOST}:${PG_PORT} refused user postgres without a password; tests expect trust auth"
  fi
}

# Install the PostgreSQL server packages without letting Debian create (and start)
# its own `main` cluster: the project-local cluster is made with initdb instead.
install_pg_server() {
  ensure_cmd pg_lsclusters postgresql-common ||
    die "postgresql-common could not be installed; read ${LOG_DIR}/apt.log"
  local conf=/etc/postgresql-common/createcluster.conf
  if [[ -f "$conf" ]] && [[ -z "$(pg_lsclusters --no-header 2>/dev/null || true)" ]]; then
    if grep -qE '^[[:space:]]*#?[[:space:]]*create_main_cluster' "$conf"; then
      as_root sed -i -E 's/^[[:space:]]*#?[[:space:]]*create_main_cluster.*/create_main_cluster = false/' "$conf"
    else
      printf 'create_main_cluster = false\n' | as_root tee -a "$conf" >/dev/null
    fi
  fi
  apt_install postgresql || die "postgresql could not be installed; read ${LOG_DIR}/apt.log"
}

init_local_pg() {
  local bindir="$1"
  mkdir -p "$PG_DATA"
  chmod 700 "$PG_DATA"
  if is_root; then
    id postgres >/dev/null 2>&1 ||
      die "no 'postgres' OS user to own ${PG_DATA} (initdb refuses to run as root)"
    chown postgres:postgres "$PG_DATA"
    runuser -u postgres -- test -w "$PG_DATA" ||
      die "user postgres cannot reach ${PG_DATA} (a parent directory is not traversable); set IMAGELIB_DEV_DIR to a directory it can reach"
  fi
  if ! as_pg_user "$bindir/initdb" -D "$PG_DATA" -A trust -U postgres -E UTF8 --no-locale \
    >>"$PG_LOG" 2>&1; then
    log_tail "$PG_LOG"
    die "initdb of ${PG_DATA} failed; read ${PG_LOG}"
  fi
  # Loopback only; no Unix socket (its default directory may not exist or be writable).
  cat >>"${PG_DATA}/postgresql.conf" <<'EOF'

# imagelib dev stack (deploy/local/up.sh); the port is given on the command line
listen_addresses = '127.0.0.1'
unix_socket_directories = ''
EOF
}

start_local_pg() {
  local bindir="$1"
  local ctl_log="${LOG_DIR}/pg_ctl.log"
  touch "$PG_LOG"
  if is_root; then chown postgres:postgres "$PG_LOG"; fi
  if ! (
    close_fds
    as_pg_user "$bindir/pg_ctl" -D "$PG_DATA" -l "$PG_LOG" -o "-p ${PG_PORT}" -w -t 60 start
  ) </dev/null >>"$ctl_log" 2>&1; then
    log_tail "$ctl_log"
    log_tail "$PG_LOG"
    die "postgres (${PG_DATA}) failed to start on ${DEV_HOST}:${PG_PORT}; read ${PG_LOG}"
  fi
  printf 'local %s\n' "$PG_DATA" >"$PG_STARTED_FILE"
  pg_wait_ready "$bindir/pg_isready" "$PG_LOG"
  info "postgres: started on ${DEV_HOST}:${PG_PORT} from ${PG_DATA} (log: ${PG_LOG})"
}

start_postgres() {
  local addr="${DEV_HOST}:${PG_PORT}" bindir line ver name logfile
  if port_open "$DEV_HOST" "$PG_PORT"; then
    info "postgres: already running on ${addr}"
    return 0
  fi

  # A project-local cluster made by an earlier run.
  if [[ -f "${PG_DATA}/PG_VERSION" ]]; then
    bindir="$(pg_bindir)" || die "${PG_DATA} exists but no PostgreSQL server binaries were found"
    start_local_pg "$bindir"
    return 0
  fi

  # A Debian cluster configured for this port.
  if command -v pg_lsclusters >/dev/null 2>&1; then
    line="$(pg_lsclusters --no-header 2>/dev/null | awk -v p="$PG_PORT" '$3 == p { print $1, $2; exit }' || true)"
    if [[ -n "$line" ]]; then
      read -r ver name <<<"$line"
      logfile="/var/log/postgresql/postgresql-${ver}-${name}.log"
      if ! (
        close_fds
        as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" start
      ) </dev/null >>"${LOG_DIR}/pg_ctl.log" 2>&1; then
        log_tail "${LOG_DIR}/pg_ctl.log"
        die "pg_ctlcluster ${ver} ${name} start failed; read ${logfile} and ${LOG_DIR}/pg_ctl.log"
      fi
      printf 'debian %s %s\n' "$ver" "$name" >"$PG_STARTED_FILE"
      pg_wait_ready pg_isready "$logfile"
      pg_check_trust
      info "postgres: started Debian cluster ${ver}/${name} on ${addr} (log: ${logfile})"
      return 0
    fi
  fi

  # Nothing to start: install the server if needed and make a project-local cluster.
  if ! bindir="$(pg_bindir)"; then
    install_pg_server
    bindir="$(pg_bindir)" || die "postgresql installed but initdb was not found"
    if port_open "$DEV_HOST" "$PG_PORT"; then
      # The package started a cluster of its own on this port after all.
      pg_check_trust
      info "postgres: already running on ${addr} (started by the postgresql package)"
      return 0
    fi
  fi
  init_local_pg "$bindir"
  start_local_pg "$bindir"
}

# ---------------------------------------------------------------- registry
write_registry_config() {
  local tmp
  mkdir -p "${REGISTRY_DIR}/data"
  tmp="$(mktemp "${REGISTRY_DIR}/config.yml.XXXXXX")"
  cat >"$tmp" <<EOF
# Written by deploy/local/up.sh; rewritten on every start.
version: 0.1
log:
  level: info
  formatter: text
  fields:
    service: registry
storage:
  filesystem:
    rootdirectory: ${REGISTRY_DIR}/data
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: ${DEV_HOST}:${REGISTRY_PORT}
  headers:
    X-Content-Type-Options: [nosniff]
health:
  storagedriver:
    enabled: true
    interval: 10s
    threshold: 3
EOF
  mv -f "$tmp" "$REGISTRY_CONFIG"
}

start_registry() {
  local addr="${DEV_HOST}:${REGISTRY_PORT}" pid installed=0
  if port_open "$DEV_HOST" "$REGISTRY_PORT"; then
    info "registry: already running on ${addr}"
    return 0
  fi
  pid="$(read_pid "$REGISTRY_PIDFILE")"
  if [[ -n "$pid" ]] && pid_alive "$pid" "$REGISTRY_BIN"; then
    wait_port registry "$REGISTRY_PORT" 30 "$REGISTRY_LOG" "$pid"
    info "registry: already running on ${addr}"
    return 0
  fi
  if [[ ! -x "$REGISTRY_BIN" ]]; then
    ensure_cmd "$REGISTRY_BIN" docker-registry ||
      die "docker-registry is missing and could not be installed; read ${LOG_DIR}/apt.log"
    installed=1
  fi
  # Without systemd the package's SysV script may have started its own instance in
  # the background (with /etc/docker/registry/config.yml: htpasswd auth, all
  # interfaces): stop it, whether or not it listens yet.
  if ((installed)) && [[ -x /etc/init.d/docker-registry ]]; then
    as_root /etc/init.d/docker-registry stop </dev/null >/dev/null 2>&1 || true
    local deadline=$((SECONDS + 10))
    while port_open "$DEV_HOST" "$REGISTRY_PORT" && ((SECONDS < deadline)); do sleep 0.5; done
    if port_open "$DEV_HOST" "$REGISTRY_PORT"; then
      die "port ${REGISTRY_PORT} is taken (by the docker-registry package's own service?); stop it and rerun"
    fi
  fi
  write_registry_config
  start_bg "$REGISTRY_PIDFILE" "$REGISTRY_LOG" "$REGISTRY_BIN" serve "$REGISTRY_CONFIG"
  pid="$(read_pid "$REGISTRY_PIDFILE")"
  wait_port registry "$REGISTRY_PORT" 30 "$REGISTRY_LOG" "$pid"
  info "registry: started on ${addr} (log: ${REGISTRY_LOG})"
}

# ---------------------------------------------------------------- test tools
ensure_tools() {
  ensure_cmd skopeo skopeo ||
    warn "skopeo is missing and could not be installed (tests that copy images will fail); read ${LOG_DIR}/apt.log"
  ensure_cmd htpasswd apache2-utils ||
    warn "htpasswd (apache2-utils) is missing and could not be installed; read ${LOG_DIR}/apt.log"
  # promtool checks and unit-tests the alert rules and lints /metrics; prometheus itself
  # runs scripts/prometheus-check. Both come with Debian's `prometheus`.
  ensure_cmd promtool prometheus ||
    warn "promtool (prometheus) is missing and could not be installed (alert-rule tests are skipped); read ${LOG_DIR}/apt.log"
  # The web console's browser tests (tests/tests/console.rs) drive a headless Chromium
  # through chromedriver; Debian's chromium-driver is built from the same source as its
  # chromium, so the two always match. fonts-liberation (a recommendation apt skips here)
  # gives the screenshots Arial-metric text.
  ensure_cmd chromium chromium ||
    warn "chromium is missing and could not be installed (the browser tests will fail); read ${LOG_DIR}/apt.log"
  ensure_cmd chromedriver chromium-driver ||
    warn "chromedriver (chromium-driver) is missing and could not be installed (the browser tests will fail); read ${LOG_DIR}/apt.log"
  if [[ ! -d /usr/share/fonts/truetype/liberation ]]; then
    apt_install fonts-liberation ||
      warn "fonts-liberation could not be installed (screenshots fall back to other fonts); read ${LOG_DIR}/apt.log"
  fi
}

start_nats
start_postgres
start_registry
ensure_tools
