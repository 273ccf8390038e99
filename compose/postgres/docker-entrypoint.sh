#!/bin/sh
# A small subset of the official postgres image's entrypoint: the part the harness and most
# compose files use. First start with an empty $PGDATA: initdb as $POSTGRES_USER, trust or
# password authentication from anywhere, listen on every address, create $POSTGRES_DB, run
# /docker-entrypoint-initdb.d/*.sql and *.sh. Then exec postgres with the given arguments.
set -eu

# `docker run IMAGE -c name=value` means `postgres -c name=value`
case "${1:-}" in -*) set -- postgres "$@" ;; esac

if [ "${1:-}" = postgres ] && [ "$(id -u)" = 0 ]; then
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres "$PGDATA" /var/run/postgresql
    chmod 700 "$PGDATA"
    chmod 3777 /var/run/postgresql
    exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ "${1:-}" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
    user="${POSTGRES_USER:-postgres}"
    db="${POSTGRES_DB:-$user}"
    auth="${POSTGRES_HOST_AUTH_METHOD:-}"
    if [ -z "${POSTGRES_PASSWORD:-}" ] && [ -z "$auth" ]; then
        echo "error: the database is uninitialized and no password is set:" >&2
        echo "  set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust to allow every connection" >&2
        exit 1
    fi
    [ -n "$auth" ] || auth=scram-sha-256
    pwfile=
    if [ -n "${POSTGRES_PASSWORD:-}" ]; then
        pwfile=$(mktemp)
        printf '%s\n' "$POSTGRES_PASSWORD" > "$pwfile"
    fi
    # shellcheck disable=SC2086  # POSTGRES_INITDB_ARGS is a word list, as in the official image
    initdb --username="$user" ${pwfile:+--pwfile="$pwfile"} --auth-local=trust \
        --auth-host="$auth" ${POSTGRES_INITDB_ARGS:-} -D "$PGDATA" >/dev/null
    [ -z "$pwfile" ] || rm -f "$pwfile"
    {
        echo "listen_addresses = '*'"
    } >> "$PGDATA/postgresql.conf"
    echo "host all all all $auth" >> "$PGDATA/pg_hba.conf"

    scripts=$(ls /docker-entrypoint-initdb.d/ 2>/dev/null || true)
    if [ "$db" != postgres ] || [ -n "$scripts" ]; then
        # a server on the unix socket only, for the first-start work
        pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
        if [ "$db" != postgres ]; then
            psql -v ON_ERROR_STOP=1 --username "$user" --dbname postgres -q \
                -c "CREATE DATABASE \"$db\"" >/dev/null
        fi
        for f in /docker-entrypoint-initdb.d/*; do
            case "$f" in
                *.sh)  echo "running $f"; . "$f" ;;
                *.sql) echo "running $f"; psql -v ON_ERROR_STOP=1 --username "$user" --dbname "$db" -f "$f" ;;
                *)     if [ -e "$f" ]; then echo "ignoring $f"; fi ;;
            esac
        done
        pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    fi
    echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
