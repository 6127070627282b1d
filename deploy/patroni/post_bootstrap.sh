#!/bin/sh
# Run once by Patroni on the first primary: the application role and database. Patroni
# passes the superuser's connection string as $1 (the socket directory and port it
# configured, which need not be libpq's default /var/run/postgresql).
# Switchboard applies its own schema migrations on start (`switchboard db migrate`).
set -e
psql -v ON_ERROR_STOP=1 -d "${1:-postgres}" <<'SQL'
CREATE ROLE switchboard LOGIN PASSWORD 'switchboard';
CREATE DATABASE switchboard OWNER switchboard;
SQL
