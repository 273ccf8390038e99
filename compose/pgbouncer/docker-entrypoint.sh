#!/bin/sh
# `pgbouncer` alone, with PGBOUNCER_BACKEND=<host[:port]>: write a config that trusts
# everyone in front of that PostgreSQL (for use by hand: the harness brings its own config
# and runs pgbouncer directly). PGBOUNCER_SETTINGS adds lines ("tcp_keepidle = 2", one a line).
set -e
if [ "$#" -eq 1 ] && [ "$1" = pgbouncer ]; then
    if [ -z "$PGBOUNCER_BACKEND" ]; then
        echo "set PGBOUNCER_BACKEND=<host[:port]> of the PostgreSQL to pool, or give a config: pgbouncer <ini>" >&2
        exit 2
    fi
    host=${PGBOUNCER_BACKEND%:*}
    port=${PGBOUNCER_BACKEND##*:}
    [ "$port" = "$PGBOUNCER_BACKEND" ] && port=5432
    user=${PGBOUNCER_USER:-postgres}
    conf=/etc/pgbouncer/pgbouncer.ini
    cat > "$conf" <<INI
[databases]
* = host=$host port=$port
[pgbouncer]
listen_addr = *
listen_port = 6432
unix_socket_dir =
auth_type = trust
auth_file = /etc/pgbouncer/userlist.txt
admin_users = $user
INI
    printf '%s\n' "${PGBOUNCER_SETTINGS:-}" >> "$conf"
    printf '"%s" ""\n' "$user" > /etc/pgbouncer/userlist.txt
    exec pgbouncer "$conf"
fi
exec "$@"
