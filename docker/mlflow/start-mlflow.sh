#!/bin/sh
# Starts the MLflow tracking server of docker-compose.yml: PostgreSQL backend store, proxied artifacts on
# the S3 store (clients never hold bucket credentials), basic auth, and a Host-header allow-list.
#
# The basic-auth config is an ini file with no interpolation, and its user-store URI holds a password, so
# it is written here from the environment (.env) into a private file instead of being committed.
set -eu

: "${MLFLOW_DB_URI:?}" "${MLFLOW_AUTH_DB_URI:?}" "${MLFLOW_ARTIFACTS_DESTINATION:?}"
: "${MLFLOW_AUTH_ADMIN_USERNAME:?}" "${MLFLOW_AUTH_ADMIN_PASSWORD:?}" "${MLFLOW_FLASK_SERVER_SECRET_KEY:?}"

umask 077
conf_dir="$(mktemp -d)"
cat > "$conf_dir/basic_auth.ini" <<INI
[mlflow]
# New users can read everything and write only what they are granted; the admin grants the rest.
default_permission = ${MLFLOW_AUTH_DEFAULT_PERMISSION:-READ}
database_uri = ${MLFLOW_AUTH_DB_URI}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
INI
# MLflow reads the admin password from MLFLOW_AUTH_ADMIN_PASSWORD on the first start (never from a file).
export MLFLOW_AUTH_CONFIG_PATH="$conf_dir/basic_auth.ini"

exec mlflow server \
    --backend-store-uri "$MLFLOW_DB_URI" \
    --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" \
    --serve-artifacts \
    --host 0.0.0.0 --port 5000 \
    --workers "${MLFLOW_WORKERS:-4}" \
    --app-name basic-auth \
    --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:?}"
