#!/bin/sh
# One-shot init of the compose deployment (the `secrets` service): creates every secret the system needs, each only
# if it does not exist yet, so a restart or an upgrade never replaces a key. Nothing secret is committed anywhere.
#
#   $SECRETS_DIR/infra/postgres-password   PostgreSQL superuser password (postgres reads it at first init)
#   $SECRETS_DIR/infra/pgpass              the same as a libpq password file, for the setup step (PGPASSFILE)
#   $SECRETS_DIR/infra/rabbitmq-password   password of the RabbitMQ administrator `coworking` (setup step only)
#   $SECRETS_DIR/<service>/db-password     password of the service's own PostgreSQL role coworking_<service>
#   $SECRETS_DIR/<service>/pgpass          the same as a libpq/asyncpg password file, for the service (PGPASSFILE)
#   $SECRETS_DIR/<service>/amqp-password   password of the service's own RabbitMQ user coworking-<service>
#   $SECRETS_DIR/signing/jwt-signing-key.pem  EC P-256 key that signs access tokens (accounts only)
#   $SECRETS_DIR/seal/seal.key             sealing key shared by accounts and notifications
#   $SECRETS_DIR/rabbitmq/definitions.json the RabbitMQ users and their permissions (passwords as salted hashes),
#                                          imported by RabbitMQ at every boot; rewritten at every run
#
# Each subfolder is its own volume in deploy/compose.yaml, so a container mounts only the secrets it needs.
# Run as root, the files are then given to the image's user (uid 10001, see deploy/Dockerfile), mode 0600; the
# definitions are world-readable (RabbitMQ runs as its own user) and only the rabbitmq container mounts them.
set -eu

SECRETS_DIR=${SECRETS_DIR:-/secrets}
APP_UID=${APP_UID:-10001}
umask 077

SERVICES="customers accounts visitors notifications"
for dir in infra signing seal rabbitmq $SERVICES; do
    mkdir -p "$SECRETS_DIR/$dir"
done

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
    # pgpass_line USER PASSWORD_FILE: any host, port and database (token_urlsafe never contains ':' or '\')
    printf '*:*:*:%s:%s\n' "$1" "$(cat "$2")"
}

create "$SECRETS_DIR/infra/postgres-password" new_password
create "$SECRETS_DIR/infra/pgpass" pgpass_line postgres "$SECRETS_DIR/infra/postgres-password"
create "$SECRETS_DIR/infra/rabbitmq-password" new_password
for service in $SERVICES; do
    create "$SECRETS_DIR/$service/db-password" new_password
    create "$SECRETS_DIR/$service/pgpass" pgpass_line "coworking_$service" "$SECRETS_DIR/$service/db-password"
    create "$SECRETS_DIR/$service/amqp-password" new_password
done
create "$SECRETS_DIR/seal/seal.key" python -m shared.sealing
if [ -e "$SECRETS_DIR/signing/jwt-signing-key.pem" ]; then
    echo "init-secrets: keeping $SECRETS_DIR/signing/jwt-signing-key.pem"
else
    python -m services.accounts generate-signing-key "$SECRETS_DIR/signing/jwt-signing-key.pem"
fi

# the RabbitMQ users (the administrator and one per service, each with only its own permissions: see
# shared/topology.py), derived from the passwords above, so written anew at every run
users=""
for service in $SERVICES; do
    users="$users --user $service coworking-$service $SECRETS_DIR/$service/amqp-password"
done
# shellcheck disable=SC2086 # $users is a list of arguments
python -m services rabbitmq-definitions --vhost / --admin coworking "$SECRETS_DIR/infra/rabbitmq-password" \
    $users >"$SECRETS_DIR/rabbitmq/definitions.json.tmp"
mv "$SECRETS_DIR/rabbitmq/definitions.json.tmp" "$SECRETS_DIR/rabbitmq/definitions.json"
chmod 0755 "$SECRETS_DIR/rabbitmq"
chmod 0644 "$SECRETS_DIR/rabbitmq/definitions.json"
echo "init-secrets: wrote $SECRETS_DIR/rabbitmq/definitions.json"

for name in infra signing seal $SERVICES; do
    dir="$SECRETS_DIR/$name"
    if [ "$(id -u)" = 0 ]; then
        chown -R "$APP_UID:$APP_UID" "$dir"
    fi
    chmod 0700 "$dir"
    chmod 0600 "$dir"/*
done
