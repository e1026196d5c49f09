#!/usr/bin/env bash
# Make sure the local services that the integration tests need are reachable:
#   Redis  at 127.0.0.1:6379 (or the port of $SERVEGRAPH_REDIS_URL)
#   NATS with JetStream at 127.0.0.1:4222 (or the port of $SERVEGRAPH_NATS_URL)
#   PostgreSQL at 127.0.0.1:5432 (or the port of $SERVEGRAPH_POSTGRES_URL), with a database
#   `test` that the role `postgres` reaches without a password from 127.0.0.1
#   Chromium (headless), which renders the drift report in a test
# A service that is not reachable is started from its installed binary; missing binaries are
# installed with apt-get (as root). Prints one line per service; exits non-zero if one cannot
# be made reachable.
set -euo pipefail

WAIT_S=15

# port_of URL DEFAULT: the port of a URL such as redis://host:6380/0 or nats://host:4223.
port_of() {
    local url=$1 default=$2 rest
    if [[ -z "$url" ]]; then
        echo "$default"
        return
    fi
    rest=${url#*://}   # drop the scheme
    rest=${rest%%/*}   # drop the path
    rest=${rest##*@}   # drop credentials
    if [[ "$rest" =~ :([0-9]+)$ ]]; then
        echo "${BASH_REMATCH[1]}"
    else
        echo "$default"
    fi
}

# reachable PORT: a TCP connection to 127.0.0.1:PORT succeeds (bash's /dev/tcp, no nc here).
reachable() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

# wait_for PORT: poll until the port accepts connections, for up to WAIT_S seconds.
wait_for() {
    local deadline=$((SECONDS + WAIT_S))
    until reachable "$1"; do
        if ((SECONDS >= deadline)); then
            return 1
        fi
        sleep 0.3
    done
}

# ensure_binary NAME PACKAGE: install PACKAGE with apt-get when NAME is not on the PATH.
ensure_binary() {
    local name=$1 package=$2
    if command -v "$name" >/dev/null 2>&1; then
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        echo "services: $name is not installed and installing $package needs root" >&2
        return 1
    fi
    echo "services: installing $package with apt-get" >&2
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >&2
    command -v "$name" >/dev/null 2>&1
}

redis_ok() {
    local port=$1
    reachable "$port" || return 1
    if command -v redis-cli >/dev/null 2>&1; then
        [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]] || return 1
    fi
}

ensure_redis() {
    local port
    port=$(port_of "${SERVEGRAPH_REDIS_URL:-}" 6379)
    if redis_ok "$port"; then
        echo "redis: reachable at 127.0.0.1:$port"
        return 0
    fi
    ensure_binary redis-server redis-server || return 1
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
        --logfile /tmp/servegraph-redis.log >/dev/null
    if wait_for "$port" && redis_ok "$port"; then
        echo "redis: started at 127.0.0.1:$port (log /tmp/servegraph-redis.log)"
    else
        echo "services: redis is not reachable at 127.0.0.1:$port after ${WAIT_S}s" \
            "(see /tmp/servegraph-redis.log)" >&2
        return 1
    fi
}

ensure_nats() {
    local port
    port=$(port_of "${SERVEGRAPH_NATS_URL:-}" 4222)
    if reachable "$port"; then
        echo "nats: reachable at 127.0.0.1:$port"
        return 0
    fi
    ensure_binary nats-server nats-server || return 1
    mkdir -p /tmp/servegraph-nats
    nohup setsid nats-server -a 127.0.0.1 -p "$port" -js -sd /tmp/servegraph-nats \
        >/tmp/servegraph-nats.log 2>&1 </dev/null &
    disown
    if wait_for "$port"; then
        echo "nats: started with JetStream at 127.0.0.1:$port (log /tmp/servegraph-nats.log)"
    else
        echo "services: nats is not reachable at 127.0.0.1:$port after ${WAIT_S}s" \
            "(see /tmp/servegraph-nats.log)" >&2
        return 1
    fi
}

pg_ok() {
    local port=$1
    reachable "$port" || return 1
    if command -v psql >/dev/null 2>&1; then
        psql -h 127.0.0.1 -p "$port" -U postgres -d test -tAc 'select 1' >/dev/null 2>&1 || return 1
    fi
}

# A cluster started here is a test cluster: local connections are trusted and `test` exists.
prepare_pg_cluster() {
    local port=$1 version hba
    version=$(pg_lsclusters -h | awk -v p="$port" '$3 == p {print $1; exit}')
    [[ -n "$version" ]] || return 1
    hba=/etc/postgresql/$version/main/pg_hba.conf
    if ! grep -q '^host all all 127.0.0.1/32 trust' "$hba"; then
        sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
        pg_ctlcluster "$version" main reload
    fi
    su postgres -c "psql -p $port -tAc \"select 1 from pg_database where datname = 'test'\"" \
        | grep -q 1 || su postgres -c "createdb -p $port test"
}

ensure_postgres() {
    local port
    port=$(port_of "${SERVEGRAPH_POSTGRES_URL:-}" 5432)
    if pg_ok "$port"; then
        echo "postgres: reachable at 127.0.0.1:$port"
        return 0
    fi
    if [[ $(id -u) -ne 0 ]]; then
        echo "services: postgres is not reachable at 127.0.0.1:$port; starting it needs root" >&2
        return 1
    fi
    if ! command -v pg_lsclusters >/dev/null 2>&1; then
        echo "services: installing postgresql with apt-get" >&2
        apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    fi
    pg_lsclusters -h | awk '{print $1, $2}' | while read -r version cluster; do
        pg_ctlcluster "$version" "$cluster" start >&2 || true
    done
    if wait_for "$port" && prepare_pg_cluster "$port" && pg_ok "$port"; then
        echo "postgres: started at 127.0.0.1:$port"
    else
        echo "services: postgres is not reachable at 127.0.0.1:$port after ${WAIT_S}s" >&2
        return 1
    fi
}

# tests/monitoring_drift renders the drift report in a headless browser.
ensure_chromium() {
    if ensure_binary chromium chromium; then
        echo "chromium: $(command -v chromium)"
    else
        echo "services: chromium is not installed (apt-get install -y chromium)" >&2
        return 1
    fi
}

failed=0
ensure_redis || failed=1
ensure_nats || failed=1
ensure_postgres || failed=1
ensure_chromium || failed=1
if ((failed)); then
    echo "services: some services are not reachable; integration tests will skip or fail" >&2
    exit 1
fi
