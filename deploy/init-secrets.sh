#!/bin/sh
# One-shot init of the compose deployment (the `secrets` service): creates every secret the system needs, each only
# if it does not exist yet, so a restart or an upgrade never replaces a key. Nothing secret is committed anywhere.
#
#   $SECRETS_DIR/infra/postgres-password   PostgreSQL superuser password (postgres reads it at first init)
#   $SECRETS_DIR/infra/pgpass              the same as a libpq/asyncpg password file, for the services (PGPASSFILE)
#   $SECRETS_DIR/infra/rabbitmq-password   password of the RabbitMQ user the services connect as
#   $SECRETS_DIR/signing/jwt-signing-key.pem  EC P-256 key that signs access tokens (accounts only)
#   $SECRETS_DIR/seal/seal.key             sealing key shared by accounts and notifications
#
# Each subfolder is its own volume in deploy/compose.yaml, so a container mounts only the secrets it needs.
# Run as root, the files are then given to the image's user (uid 10001, see deploy/Dockerfile), mode 0600.
set -eu

SECRETS_DIR=${SECRETS_DIR:-/secrets}
APP_UID=${APP_UID:-10001}
umask 077

mkdir -p "$SECRETS_DIR/infra" "$SECRETS_DIR/signing" "$SECRETS_DIR/seal"

# create FILE COMMAND [ARG...]: FILE gets COMMAND's output, unless FILE already exists
create() {
    file=$1
    shift
    if [ -e "$file" ]; then
        echo "init-secrets: keeping $file"
        return 0
    fi
    "$@" >"$file.tmp"
    mv "$file.tmp" "$file"
    echo "init-secrets: created $file"
}

new_password() {
    python -c 'import secrets; print(secrets.token_urlsafe(32))'
}

pgpass_line() {
    # any host, port and database; user postgres (token_urlsafe never contains ':' or '\')
    printf '*:*:*:postgres:%s\n' "$(cat "$SECRETS_DIR/infra/postgres-password")"
}

create "$SECRETS_DIR/infra/postgres-password" new_password
create "$SECRETS_DIR/infra/pgpass" pgpass_line
create "$SECRETS_DIR/infra/rabbitmq-password" new_password
create "$SECRETS_DIR/seal/seal.key" python -m shared.sealing
if [ -e "$SECRETS_DIR/signing/jwt-signing-key.pem" ]; then
    echo "init-secrets: keeping $SECRETS_DIR/signing/jwt-signing-key.pem"
else
    python -m services.accounts generate-signing-key "$SECRETS_DIR/signing/jwt-signing-key.pem"
fi

for dir in "$SECRETS_DIR/infra" "$SECRETS_DIR/signing" "$SECRETS_DIR/seal"; do
    if [ "$(id -u)" = 0 ]; then
        chown -R "$APP_UID:$APP_UID" "$dir"
    fi
    chmod 0700 "$dir"
    chmod 0600 "$dir"/*
done
