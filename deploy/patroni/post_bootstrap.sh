#!/bin/sh
# Run once by Patroni on the first primary: the application role and database.
# Switchboard applies its own schema migrations on start (`switchboard db migrate`).
set -e
psql -v ON_ERROR_STOP=1 -d postgres <<'SQL'
CREATE ROLE switchboard LOGIN PASSWORD 'switchboard';
CREATE DATABASE switchboard OWNER switchboard;
SQL
