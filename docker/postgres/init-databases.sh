#!/bin/sh
# Runs once, on the first start of an empty data volume (the postgres image runs
# /docker-entrypoint-initdb.d/*.sh as the superuser). POSTGRES_DB (the MLflow backend store) exists
# already; this adds the MLflow basic-auth user store and the Optuna study storage, each with its own
# role and password from .env, so a leaked Optuna URL cannot read the tracking data.
set -eu

psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
    -v owner="$POSTGRES_USER" -v mlflow_auth_db="$MLFLOW_AUTH_DB" \
    -v optuna_db="$OPTUNA_DB" -v optuna_user="$OPTUNA_DB_USER" -v optuna_password="$OPTUNA_DB_PASSWORD" <<'SQL'
CREATE DATABASE :"mlflow_auth_db" OWNER :"owner";
CREATE ROLE :"optuna_user" LOGIN PASSWORD :'optuna_password';
CREATE DATABASE :"optuna_db" OWNER :"optuna_user";
REVOKE ALL ON DATABASE :"optuna_db" FROM PUBLIC;
SQL
