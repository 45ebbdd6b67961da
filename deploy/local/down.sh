#!/usr/bin/env bash
# Stop what deploy/local/up.sh started (per its pid files and markers under
# ${IMAGELIB_DEV_DIR:-<repo>/.imagelib}/run); services it found already running are
# left alone. Data is kept: remove the directory to start from scratch.
set -euo pipefail

# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

stop_postgres() {
  local kind ver name datadir bindir
  if [[ ! -s "$PG_STARTED_FILE" ]]; then
    info "postgres: not started by up.sh, left alone"
    return 0
  fi
  read -r kind ver name <"$PG_STARTED_FILE" || true
  case "$kind" in
    local)
      datadir="$ver"
      if [[ ! -f "${datadir}/postmaster.pid" ]]; then
        info "postgres: not running"
      else
        bindir="$(pg_bindir)" || die "no PostgreSQL binaries to stop ${datadir} with"
        as_pg_user "$bindir/pg_ctl" -D "$datadir" -m fast -w -t 60 stop \
          </dev/null >>"${LOG_DIR}/pg_ctl.log" 2>&1 ||
          die "pg_ctl stop of ${datadir} failed; read ${LOG_DIR}/pg_ctl.log"
        info "postgres: stopped (${datadir})"
      fi
      ;;
    debian)
      as_root pg_ctlcluster --skip-systemctl-redirect "$ver" "$name" stop -m fast \
        </dev/null >>"${LOG_DIR}/pg_ctl.log" 2>&1 || true
      if pg_lsclusters --no-header 2>/dev/null | awk -v v="$ver" -v n="$name" '$1 == v && $2 == n && $4 == "online" { found = 1 } END { exit !found }'; then
        die "Debian cluster ${ver}/${name} is still online; read ${LOG_DIR}/pg_ctl.log"
      fi
      info "postgres: stopped Debian cluster ${ver}/${name}"
      ;;
    *)
      warn "postgres: unreadable marker ${PG_STARTED_FILE}, left alone"
      return 0
      ;;
  esac
  rm -f "$PG_STARTED_FILE"
}

stop_pid registry "$REGISTRY_PIDFILE" "$REGISTRY_BIN"
stop_postgres
stop_pid nats "$NATS_PIDFILE" nats-server
