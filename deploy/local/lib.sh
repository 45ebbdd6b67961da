# shellcheck shell=bash
# shellcheck disable=SC2034 # the variables here are used by the scripts that source this file
# Shared helpers for the local dev stack (deploy/local/{up,down,status}.sh).
# Sourced, never executed. Everything lives on loopback; state and logs go under
# ${IMAGELIB_DEV_DIR:-<repo>/.imagelib}.

# The repository root: two levels above this file.
IMAGELIB_REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IMAGELIB_DEV_DIR="${IMAGELIB_DEV_DIR:-${IMAGELIB_REPO_ROOT}/.imagelib}"
# Absolute, so that pid files and pg_ctl -D stay valid from any working directory.
if [[ "$IMAGELIB_DEV_DIR" != /* ]]; then
  IMAGELIB_DEV_DIR="${PWD}/${IMAGELIB_DEV_DIR}"
fi

DEV_HOST=127.0.0.1
NATS_PORT="${IMAGELIB_DEV_NATS_PORT:-4222}"
PG_PORT="${IMAGELIB_DEV_PG_PORT:-5432}"
REGISTRY_PORT="${IMAGELIB_DEV_REGISTRY_PORT:-5000}"

RUN_DIR="${IMAGELIB_DEV_DIR}/run"
LOG_DIR="${IMAGELIB_DEV_DIR}/log"

NATS_BIN=/usr/sbin/nats-server
REGISTRY_BIN=/usr/bin/docker-registry

export DEBIAN_FRONTEND=noninteractive

info() { printf '%s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Run a command as root (directly when root, else through sudo when it exists).
as_root() {
  if is_root; then
    "$@"
  elif command -v sudo >/dev/null 2>&1; then
    sudo -n "$@"
  else
    die "need root to run: $* (run as root or install sudo)"
  fi
}

# True when something accepts TCP connections on host:port.
port_open() {
  local host="$1" port="$2"
  # shellcheck disable=SC2016 # $1/$2 expand in the child shell
  timeout 2 bash -c 'exec 3<>"/dev/tcp/$1/$2"' _ "$host" "$port" 2>/dev/null
}

# True when the pid is alive (and, when given, its command line mentions $2).
pid_alive() {
  local pid="$1" needle="${2:-}"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  if [[ -n "$needle" && -r "/proc/${pid}/cmdline" ]]; then
    tr '\0' ' ' <"/proc/${pid}/cmdline" | grep -qF -- "$needle" || return 1
  fi
  return 0
}

# Read a pid file; prints the pid or nothing.
read_pid() {
  local file="$1"
  [[ -s "$file" ]] || return 0
  head -n1 "$file" | tr -dc '0-9'
}

# Print the last lines of a log file to stderr (for failure messages).
log_tail() {
  local file="$1"
  if [[ -s "$file" ]]; then
    printf -- '--- last lines of %s ---\n' "$file" >&2
    tail -n 20 "$file" >&2
    printf -- '---\n' >&2
  fi
}

# wait_port NAME PORT TIMEOUT_SECONDS LOGFILE [PID]
# Waits for 127.0.0.1:PORT to accept connections; fails early if PID dies.
wait_port() {
  local name="$1" port="$2" timeout_s="$3" logfile="$4" pid="${5:-}"
  local deadline=$((SECONDS + timeout_s))
  until port_open "$DEV_HOST" "$port"; do
    if [[ -n "$pid" ]] && ! pid_alive "$pid"; then
      log_tail "$logfile"
      die "${name} (pid ${pid}) exited before listening on ${DEV_HOST}:${port}; read ${logfile}"
    fi
    if ((SECONDS >= deadline)); then
      log_tail "$logfile"
      die "${name} did not listen on ${DEV_HOST}:${port} within ${timeout_s}s; read ${logfile}"
    fi
    sleep 0.2
  done
}

# apt-get install, running `apt-get update` once per script run first.
_APT_UPDATED=0
apt_install() {
  command -v apt-get >/dev/null 2>&1 || {
    warn "apt-get not found; cannot install: $*"
    return 1
  }
  local apt_log="${LOG_DIR}/apt.log"
  mkdir -p "$LOG_DIR"
  if [[ "$_APT_UPDATED" -eq 0 ]]; then
    if ! as_root apt-get update -q >>"$apt_log" 2>&1; then
      warn "apt-get update failed; read ${apt_log}"
      return 1
    fi
    _APT_UPDATED=1
  fi
  if ! as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "$@" >>"$apt_log" 2>&1; then
    warn "apt-get install $* failed; read ${apt_log}"
    return 1
  fi
}

# ensure_cmd BINARY_PATH_OR_NAME PACKAGE: install PACKAGE when BINARY is missing.
ensure_cmd() {
  local bin="$1" pkg="$2"
  if [[ "$bin" == /* ]]; then
    [[ -x "$bin" ]] && return 0
  else
    command -v "$bin" >/dev/null 2>&1 && return 0
  fi
  apt_install "$pkg" || return 1
  if [[ "$bin" == /* ]]; then
    [[ -x "$bin" ]]
  else
    command -v "$bin" >/dev/null 2>&1
  fi
}

# start_bg PIDFILE LOGFILE CMD...: start CMD detached (own session, no inherited
# stdio), record its pid. The caller waits for its port.
start_bg() {
  local pidfile="$1" logfile="$2"
  shift 2
  mkdir -p "$(dirname "$pidfile")" "$(dirname "$logfile")"
  # In a subshell with the caller's other descriptors closed (a daemon holding a pipe
  # of a CI runner's would keep it waiting for end-of-file); setsid gives the daemon a
  # session of its own so it outlives this script. The subshell execs setsid, which
  # execs the command, so $! is the daemon's pid.
  (
    close_fds
    exec setsid "$@"
  ) </dev/null >>"$logfile" 2>&1 &
  echo "$!" >"$pidfile"
}

# close_fds: close every descriptor above 2 of the current shell. Call it only in a
# subshell, right before starting something that may leave a daemon behind.
close_fds() {
  local p fd
  for p in /proc/"$BASHPID"/fd/*; do
    fd="${p##*/}"
    if [[ "$fd" =~ ^[0-9]+$ ]] && ((fd > 2)); then
      eval "exec ${fd}>&-"
    fi
  done
}

# stop_pid NAME PIDFILE NEEDLE: stop the process recorded in PIDFILE (only if its
# command line still mentions NEEDLE), TERM then KILL after 15s.
stop_pid() {
  local name="$1" pidfile="$2" needle="$3" pid
  pid="$(read_pid "$pidfile")"
  if [[ -z "$pid" ]]; then
    info "${name}: not started by up.sh, left alone"
    return 0
  fi
  if ! pid_alive "$pid" "$needle"; then
    rm -f "$pidfile"
    info "${name}: not running (stale pid file removed)"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + 15))
  while pid_alive "$pid" "$needle"; do
    if ((SECONDS >= deadline)); then
      kill -KILL "$pid" 2>/dev/null || true
      break
    fi
    sleep 0.2
  done
  rm -f "$pidfile"
  info "${name}: stopped (pid ${pid})"
}

# The directory of PostgreSQL server binaries (initdb, pg_ctl, postgres): the
# newest Debian /usr/lib/postgresql/<ver>/bin, else wherever initdb is on PATH.
pg_bindir() {
  local best
  best="$(find /usr/lib/postgresql -mindepth 3 -maxdepth 3 -path '*/bin/initdb' 2>/dev/null |
    sort -t/ -k5,5n | tail -n1 || true)"
  if [[ -n "$best" ]]; then
    dirname "$best"
  elif command -v initdb >/dev/null 2>&1; then
    dirname "$(command -v initdb)"
  else
    return 1
  fi
}

# Run a command as the `postgres` OS user when root (initdb refuses root), else as is.
as_pg_user() {
  if is_root; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# Paths of the project-local PostgreSQL cluster.
PG_DATA="${IMAGELIB_DEV_DIR}/pg"
PG_LOG="${LOG_DIR}/postgres.log"
# Records how up.sh started PostgreSQL: "local <datadir>" or "debian <ver> <cluster>".
PG_STARTED_FILE="${RUN_DIR}/postgres.started"

NATS_PIDFILE="${RUN_DIR}/nats.pid"
NATS_LOG="${LOG_DIR}/nats.log"
NATS_DATA="${IMAGELIB_DEV_DIR}/nats"

REGISTRY_PIDFILE="${RUN_DIR}/registry.pid"
REGISTRY_LOG="${LOG_DIR}/registry.log"
REGISTRY_DIR="${IMAGELIB_DEV_DIR}/registry"
REGISTRY_CONFIG="${REGISTRY_DIR}/config.yml"
