# shellcheck shell=bash
# Shared helpers for scripts/test-all and friends: logging, banners, apt installs, free ports, and a
# cleanup stack that the caller's EXIT trap runs.

MLKUBE_ROOT="${MLKUBE_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
MLKUBE_CACHE_DIR="${MLKUBE_CACHE_DIR:-${MLKUBE_ROOT}/.cache}"

log() { printf '[test-all %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

banner() {
    printf '\n==== %s ====\n' "$*" >&2
}

die() {
    log "error: $*"
    exit 1
}

# apt_install PKG... : install Debian packages without prompts (only call when something is missing).
_mlkube_apt_updated=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found; install $* by hand"
    local sudo=()
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "need root or sudo to install $*"
        sudo=(sudo)
    fi
    if [[ $_mlkube_apt_updated -eq 0 ]]; then
        DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get update -qq
        _mlkube_apt_updated=1
    fi
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "$@"
}

# free_port : print a TCP port on 127.0.0.1 that is free right now.
free_port() {
    python3 - <<'PY' 2>/dev/null && return
import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
    # Fallback without python: pick a random high port that nothing listens on.
    local port
    while :; do
        port=$((20000 + RANDOM % 30000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/${port}") 2>/dev/null; then
            printf '%s\n' "$port"
            return
        fi
    done
}

# Cleanup stack: push shell snippets; run_cleanups runs them newest first and never fails.
_mlkube_cleanups=()
push_cleanup() { _mlkube_cleanups+=("$1"); }
run_cleanups() {
    local i
    for ((i = ${#_mlkube_cleanups[@]} - 1; i >= 0; i--)); do
        eval "${_mlkube_cleanups[$i]}" || true
    done
    _mlkube_cleanups=()
}

# wait_http URL SECONDS [PID] : poll until URL answers 200, or fail (early if PID died).
wait_http() {
    local url=$1 timeout=$2 pid=${3:-}
    local deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        if curl -fsS --max-time 2 "$url" >/dev/null 2>&1; then
            return 0
        fi
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.2
    done
    return 1
}
