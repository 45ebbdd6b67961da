#!/usr/bin/env bash
# Print what of the local dev stack is running, and whether up.sh started it.
# Exits 0 when all three services listen, 1 otherwise.
set -euo pipefail

# shellcheck source=deploy/local/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

all_up=0

# report NAME PORT PIDFILE NEEDLE
report() {
  local name="$1" port="$2" pidfile="$3" needle="$4" pid owner
  pid="$(read_pid "$pidfile")"
  if [[ -n "$pid" ]] && pid_alive "$pid" "$needle"; then
    owner="started by up.sh, pid ${pid}"
  else
    owner="not started by up.sh"
  fi
  if port_open "$DEV_HOST" "$port"; then
    printf '%-9s running on %s:%s (%s)\n' "${name}:" "$DEV_HOST" "$port" "$owner"
  else
    printf '%-9s not running on %s:%s\n' "${name}:" "$DEV_HOST" "$port"
    all_up=1
  fi
}

pg_owner() {
  local kind rest
  if [[ -s "$PG_STARTED_FILE" ]]; then
    read -r kind rest <"$PG_STARTED_FILE" || true
    printf 'started by up.sh: %s %s' "$kind" "$rest"
  else
    printf 'not started by up.sh'
  fi
}

report nats "$NATS_PORT" "$NATS_PIDFILE" nats-server
if port_open "$DEV_HOST" "$PG_PORT"; then
  printf '%-9s running on %s:%s (%s)\n' "postgres:" "$DEV_HOST" "$PG_PORT" "$(pg_owner)"
else
  printf '%-9s not running on %s:%s\n' "postgres:" "$DEV_HOST" "$PG_PORT"
  all_up=1
fi
report registry "$REGISTRY_PORT" "$REGISTRY_PIDFILE" "$REGISTRY_BIN"
printf 'state:    %s\n' "$IMAGELIB_DEV_DIR"
exit "$all_up"
