#!/usr/bin/env bash
# A throw-away PostgreSQL server for the tests: `source .ci/postgres.sh` starts one in a temporary
# folder, listening on a Unix socket there only (no TCP port to collide with), exports its URL as
# L2O_TEST_POSTGRES, and stops it and deletes the folder when the calling shell exits.
# As root, the server runs as the `postgres` user (PostgreSQL refuses to run as root).
set -euo pipefail
pg_bin="$(pg_config --bindir 2>/dev/null || true)"
export PATH="${pg_bin:+$pg_bin:}$PATH:/usr/lib/postgresql/15/bin"
L2O_PG_DIR="$(mktemp -d -t l2o-pg.XXXXXX)"
as_pg=()
if [ "$(id -u)" = 0 ]; then
    chown postgres "$L2O_PG_DIR"
    as_pg=(runuser -u postgres --)
fi
l2o_pg_stop() {
    "${as_pg[@]}" pg_ctl -D "$L2O_PG_DIR/data" -m immediate -w stop >/dev/null 2>&1 || true
    rm -rf "$L2O_PG_DIR"
}
trap l2o_pg_stop EXIT
"${as_pg[@]}" initdb -D "$L2O_PG_DIR/data" -A trust -U postgres >"$L2O_PG_DIR/initdb.log" 2>&1 \
    || { cat "$L2O_PG_DIR/initdb.log"; exit 1; }
"${as_pg[@]}" pg_ctl -D "$L2O_PG_DIR/data" -l "$L2O_PG_DIR/server.log" -w \
    -o "-c listen_addresses='' -k $L2O_PG_DIR -c max_connections=100 -c fsync=off" start >/dev/null \
    || { cat "$L2O_PG_DIR/server.log"; exit 1; }
export L2O_TEST_POSTGRES="postgresql://postgres@/postgres?host=$L2O_PG_DIR"
echo "PostgreSQL for the tests: $L2O_TEST_POSTGRES"
