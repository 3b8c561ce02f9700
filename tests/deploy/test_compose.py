"""What an operator relies on in deploy/: compose.yaml runs the four services against PostgreSQL, RabbitMQ and the
mail catcher, each started only once what it needs is healthy and the setup has made its database and the broker
topology; each service connects as its own database role and its own broker user with only its own permissions
(tests/integration/test_least_privilege.py proves them on the real servers); every secret is generated at deploy
time by init-secrets.sh and reaches exactly the containers that need it (none is written in the files); the image
runs as a non-root user. No Docker engine needed: the files are read, and the shell parts (the secrets init script, the
commands that turn secret files into environment variables) are run here with stand-ins for the programs they start.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from yarl import URL

from services.accounts.security import SigningKey
from shared.sealing import load_key
from shared.topology import Topology

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
APPS = {"customers": 8001, "accounts": 8002, "visitors": 8003, "notifications": 8004}
SEAL_KEY_VARS = {"accounts": "ACCOUNTS_SEAL_KEY", "notifications": "NOTIFICATIONS_SEAL_KEY"}
SECRET_FILES = (
    "infra/postgres-password",
    "infra/pgpass",
    "infra/rabbitmq-password",
    *(f"{name}/{file}" for name in APPS for file in ("db-password", "pgpass", "amqp-password")),
    "signing/jwt-signing-key.pem",
    "seal/seal.key",
)
DEFINITIONS = "rabbitmq/definitions.json"
SECRET_PATH = re.compile(r"/secrets/[\w./-]+")
_INTERPOLATION = re.compile(r"\$\$|\$\{(\w+)(?::?-([^}]*))?\}")


def interpolate(value: Any) -> Any:
    """What compose makes of the file with an empty environment: ``${VAR:-default}`` → default, ``$$`` → ``$``."""
    if isinstance(value, str):
        return _INTERPOLATION.sub(lambda m: "$" if m.group(0) == "$$" else (m.group(2) or ""), value)
    if isinstance(value, dict):
        return {k: interpolate(v) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v) for v in value]
    return value


def strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for k, v in value.items() for s in [*strings(k), *strings(v)]]
    if isinstance(value, list):
        return [s for v in value for s in strings(v)]
    return []


def mounts(service: dict[str, Any]) -> dict[str, str]:
    """Container path → volume name of the service's named-volume mounts."""
    result = {}
    for spec in service.get("volumes", []):
        source, target, *_ = spec.split(":")
        if not source.startswith((".", "/")):
            result[target] = source
    return result


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(raw: dict[str, Any]) -> dict[str, Any]:
    return interpolate(raw)["services"]


@pytest.fixture(scope="module")
def secrets_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The secrets a first `docker compose up` generates, made by deploy/init-secrets.sh into a temporary folder."""
    target = tmp_path_factory.mktemp("secrets")
    run_init_secrets(target)
    return target


def run_init_secrets(target: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SECRETS_DIR": str(target), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    env.pop("APP_UID", None)
    return subprocess.run(
        ["sh", str(DEPLOY / "init-secrets.sh")], env=env, cwd=ROOT, capture_output=True, text=True, check=True
    )


def run_shell(
    script: str, secrets: Path, stand_in: str, tmp_path: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], Any]:
    """Run a container's ``sh -euc`` script with its /secrets paths moved to ``secrets`` and ``stand_in`` (the program
    it execs) replaced by a script that records its arguments and environment (the last call's; ``calls`` in
    ``record`` has them all)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "record.json"
    record.unlink(missing_ok=True)
    fake = bin_dir / stand_in
    fake.write_text(
        f"#!{sys.executable}\nimport json, os, sys\n"
        f"path = {str(record)!r}\n"
        "calls = json.load(open(path))['calls'] if os.path.exists(path) else []\n"
        "calls.append({'argv': sys.argv[1:], 'env': dict(os.environ)})\n"
        "json.dump({**calls[-1], 'calls': calls}, open(path, 'w'))\n"
    )
    fake.chmod(0o755)
    proc = subprocess.run(
        ["sh", "-euc", script.replace("/secrets/", f"{secrets}/")],
        env={"PATH": f"{bin_dir}:/usr/bin:/bin", **(env or {})},
        capture_output=True,
        text=True,
    )
    return proc, (json.loads(record.read_text()) if record.exists() else None)


def matches_hash(password: str, password_hash: str) -> bool:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt(4) + sha256(salt + password))."""
    raw = base64.b64decode(password_hash)
    return hashlib.sha256(raw[:4] + password.encode()).digest() == raw[4:]


# --- what is defined ---------------------------------------------------------------------------------------------


def test_defines_the_services_and_their_infrastructure(services: dict[str, Any]) -> None:
    assert set(APPS) | {"postgres", "rabbitmq", "mailpit", "secrets", "setup"} <= set(services)
    assert services["postgres"]["image"].startswith("postgres:16")
    assert services["rabbitmq"]["image"] == "rabbitmq:3.13-management"
    assert {"5672:5672", "15672:15672"} <= set(services["rabbitmq"]["ports"])
    assert services["mailpit"]["image"].startswith("axllent/mailpit")
    assert {"1025:1025", "8025:8025"} <= set(services["mailpit"]["ports"])
    for name in ("postgres", "rabbitmq", "mailpit"):  # `service_healthy` waits for these forever without one
        assert services[name]["healthcheck"]["test"], name


def test_setup_makes_each_service_its_database_role_then_the_broker_topology(
    services: dict[str, Any], secrets_dir: Path, tmp_path: Path
) -> None:
    setup = services["setup"]
    assert setup["restart"] == "no"
    assert setup["depends_on"] == {
        "secrets": {"condition": "service_completed_successfully"},
        "postgres": {"condition": "service_healthy"},
        "rabbitmq": {"condition": "service_healthy"},
    }
    assert setup["entrypoint"] == ["sh", "-euc"]
    proc, record = run_shell(setup["command"][0], secrets_dir, "python", tmp_path)
    assert proc.returncode == 0, proc.stderr
    databases, broker = record["calls"]
    # the databases, as the PostgreSQL superuser (password from its pgpass file), each role with its own password
    argv = databases["argv"]
    assert argv[:4] == ["-m", "services", "setup-databases", "--admin-url"]
    admin = URL(argv[4])
    assert (admin.user, admin.host, admin.port, admin.password) == ("postgres", "postgres", 5432, None)
    assert setup["environment"]["PGPASSFILE"] == "/secrets/infra/pgpass"
    assert "--prefix" not in argv  # coworking_<service>: the roles and databases the services connect to
    files = dict(zip(argv[6::3], argv[7::3], strict=True))
    assert argv[5::3] == ["--password-file"] * len(APPS)
    assert files == {name: f"{secrets_dir}/{name}/db-password" for name in APPS}
    # then the topology, as the RabbitMQ administrator
    assert broker["argv"] == ["-m", "services", "setup-broker"]
    amqp = URL(broker["env"]["AMQP_URL"])
    assert (amqp.user, amqp.host, amqp.port) == ("coworking", "rabbitmq", 5672)
    assert amqp.password == (secrets_dir / "infra/rabbitmq-password").read_text().strip()
    assert {"setup": {"condition": "service_completed_successfully"}}.items() <= services["customers"][
        "depends_on"
    ].items()
    assert not [v for v in services["postgres"]["volumes"] if "/docker-entrypoint-initdb.d/" in v]


@pytest.mark.parametrize("name", [*APPS, "secrets", "setup"])
def test_built_from_the_repository_with_the_deploy_dockerfile(services: dict[str, Any], name: str) -> None:
    build = services[name]["build"]
    assert (DEPLOY / build["context"]).resolve() == ROOT
    assert (ROOT / build["dockerfile"]).resolve() == DEPLOY / "Dockerfile"
    assert services[name]["image"] == services["customers"]["image"]  # one image for all


# --- the four services -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("name", "port"), APPS.items())
def test_service_waits_for_what_it_needs(services: dict[str, Any], name: str, port: int) -> None:
    depends_on = services[name]["depends_on"]
    assert depends_on["postgres"] == {"condition": "service_healthy"}
    assert depends_on["rabbitmq"] == {"condition": "service_healthy"}
    assert depends_on["setup"] == {"condition": "service_completed_successfully"}  # after secrets, databases, topology
    assert services[name]["restart"] == "unless-stopped"


@pytest.mark.parametrize(("name", "port"), APPS.items())
def test_service_healthcheck_asks_readyz_without_curl(services: dict[str, Any], name: str, port: int) -> None:
    test = services[name]["healthcheck"]["test"]
    assert test[:3] == ["CMD", "python", "-c"]
    compile(test[3], f"{name} healthcheck", "exec")
    assert f"urlopen('http://127.0.0.1:{port}/readyz'" in test[3]  # urlopen raises on the 503 of "not ready"


@pytest.mark.parametrize(("name", "port"), APPS.items())
def test_service_listens_on_all_interfaces_and_is_published(services: dict[str, Any], name: str, port: int) -> None:
    env, prefix = services[name]["environment"], name.upper()
    assert env[f"{prefix}_HOST"] == "0.0.0.0"
    assert env[f"{prefix}_PORT"] == str(port)
    assert f"{port}:{port}" in services[name]["ports"]


@pytest.mark.parametrize("name", APPS)
def test_service_environment(services: dict[str, Any], name: str) -> None:
    env = services[name]["environment"]
    db = URL(env[f"{name.upper()}_DATABASE_URL"])
    assert (db.scheme, db.host, db.port, db.path) == ("postgresql", "postgres", 5432, f"/coworking_{name}")
    assert db.user == f"coworking_{name}"  # its own role, which setup-databases makes owner of its database
    assert db.password is None  # it comes from PGPASSFILE
    assert env["PGPASSFILE"] == f"/secrets/{name}/pgpass"
    assert env["JWKS_URL"] == "http://accounts:8002/.well-known/jwks.json"
    assert env["LOG_FORMAT"] == "json"


def test_notifications_sends_to_the_mail_catcher(services: dict[str, Any]) -> None:
    env = services["notifications"]["environment"]
    assert (env["NOTIFICATIONS_SMTP_HOST"], env["NOTIFICATIONS_SMTP_PORT"]) == ("mailpit", "1025")
    assert services["notifications"]["depends_on"]["mailpit"] == {"condition": "service_healthy"}


@pytest.mark.parametrize("name", APPS)
def test_service_command_starts_it_with_its_secrets(
    services: dict[str, Any], secrets_dir: Path, tmp_path: Path, name: str
) -> None:
    service = services[name]
    assert service["entrypoint"] == ["sh", "-euc"]
    proc, record = run_shell(service["command"][0], secrets_dir, "python", tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert record["argv"] == ["-m", f"services.{name}", "serve"]
    amqp = URL(record["env"]["AMQP_URL"])
    assert (amqp.scheme, amqp.host, amqp.port) == ("amqp", "rabbitmq", 5672)
    assert amqp.user == f"coworking-{name}"  # its own user, defined in RabbitMQ's definitions
    assert amqp.password == (secrets_dir / f"{name}/amqp-password").read_text().strip()
    assert f"{name}:" in (secrets_dir / f"{name}/pgpass").read_text()  # its own database role's password
    if name in SEAL_KEY_VARS:
        seal = record["env"][SEAL_KEY_VARS[name]]
        assert seal == (secrets_dir / "seal/seal.key").read_text().strip()
        load_key(seal)
    else:
        assert not any(k.endswith("SEAL_KEY") for k in record["env"])


@pytest.mark.parametrize("name", APPS)
def test_service_refuses_to_start_without_its_secrets(services: dict[str, Any], tmp_path: Path, name: str) -> None:
    proc, record = run_shell(services[name]["command"][0], tmp_path / "empty", "python", tmp_path)
    assert proc.returncode != 0
    assert record is None


def test_seal_key_reaches_accounts_and_notifications_only(services: dict[str, Any]) -> None:
    seal_volume = mounts(services["secrets"])["/secrets/seal"]
    signing_volume = mounts(services["secrets"])["/secrets/signing"]
    for name, service in services.items():
        volumes = set(mounts(service).values())
        assert (seal_volume in volumes) == (name in {"accounts", "notifications", "secrets"}), name
        assert (signing_volume in volumes) == (name in {"accounts", "secrets"}), name
    assert (
        services["accounts"]["environment"]["ACCOUNTS_JWT_PRIVATE_KEY_FILE"] == "/secrets/signing/jwt-signing-key.pem"
    )


def test_every_secret_a_service_reads_is_generated_and_mounted(services: dict[str, Any], secrets_dir: Path) -> None:
    generated = mounts(services["secrets"])  # mount point → volume, as the init script writes them
    for name, service in services.items():
        if name == "secrets":
            continue
        read = strings({k: v for k, v in service.items() if k != "volumes"})
        for path in {p for s in read for p in SECRET_PATH.findall(s)}:
            mount_point = "/".join(path.split("/")[:3])
            assert mounts(service).get(mount_point) == generated[mount_point], f"{name} does not mount {path}"
            assert (secrets_dir / path.removeprefix("/secrets/")).is_file(), f"{name} reads {path}, never generated"


def test_rabbitmq_imports_its_users_with_their_permissions(services: dict[str, Any], secrets_dir: Path) -> None:
    rabbitmq = services["rabbitmq"]
    assert "entrypoint" not in rabbitmq and "RABBITMQ_DEFAULT_PASS" not in rabbitmq.get("environment", {})
    conf_mounts = [v.split(":") for v in rabbitmq["volumes"] if v.startswith("./")]
    assert [(target, mode) for _, target, mode in conf_mounts] == [("/etc/rabbitmq/conf.d/20-definitions.conf", "ro")]
    conf = dict(line.split(" = ", 1) for line in (DEPLOY / conf_mounts[0][0]).read_text().splitlines() if " = " in line)
    assert conf["definitions.import_backend"] == "local_filesystem"
    path = conf["definitions.local.path"]
    mount_point = str(Path(path).parent)
    assert mounts(rabbitmq)[mount_point] == mounts(services["secrets"])[mount_point]  # what `secrets` writes
    definitions = json.loads((secrets_dir / path.removeprefix("/secrets/")).read_text())

    def password(name: str) -> str:
        return (secrets_dir / name).read_text().strip()

    assert definitions["vhosts"] == [{"name": "/"}]
    users = {u["name"]: u for u in definitions["users"]}
    assert set(users) == {"coworking", *(f"coworking-{name}" for name in APPS)}  # no guest
    assert users["coworking"]["tags"] == ["administrator"]
    assert matches_hash(password("infra/rabbitmq-password"), users["coworking"]["password_hash"])
    permissions = {p["user"]: p for p in definitions["permissions"]}
    topic = {(p["user"], p["exchange"]): (p["write"], p["read"]) for p in definitions["topic_permissions"]}
    assert permissions["coworking"] == {
        "user": "coworking",
        "vhost": "/",
        "configure": ".*",
        "write": ".*",
        "read": ".*",
    }
    for name in APPS:
        user = f"coworking-{name}"
        assert users[user]["tags"] == []
        assert users[user]["hashing_algorithm"] == "rabbit_password_hashing_sha256"
        assert matches_hash(password(f"{name}/amqp-password"), users[user]["password_hash"])
        expected = Topology().permissions(name)  # what the least-privilege test runs the services with
        assert permissions[user] == {
            "user": user,
            "vhost": "/",
            "configure": "^$",
            "write": expected.write,
            "read": expected.read,
        }
        assert {k[1]: v for k, v in topic.items() if k[0] == user} == expected.topic
    assert "RABBITMQ_DEFAULT_PASS" not in (DEPLOY / "compose.yaml").read_text()
    assert services["postgres"]["environment"]["POSTGRES_PASSWORD_FILE"] == "/secrets/infra/postgres-password"


def test_each_service_mounts_its_own_credentials_only(services: dict[str, Any]) -> None:
    volume_of = mounts(services["secrets"])
    for name, service in services.items():
        volumes = set(mounts(service).values())
        # the PostgreSQL superuser's and the RabbitMQ administrator's passwords: postgres and the setup only
        assert (volume_of["/secrets/infra"] in volumes) == (name in {"secrets", "setup", "postgres"}), name
        for app in APPS:
            assert (volume_of[f"/secrets/{app}"] in volumes) == (name in {app, "secrets", "setup"}), (name, app)
        assert (volume_of["/secrets/rabbitmq"] in volumes) == (name in {"secrets", "rabbitmq"}), name


# --- secrets -----------------------------------------------------------------------------------------------------


def test_init_secrets_creates_working_keys(secrets_dir: Path) -> None:
    for name in SECRET_FILES:
        path = secrets_dir / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, name
        assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700, name
    load_key((secrets_dir / "seal/seal.key").read_text())
    SigningKey.from_pem_file(secrets_dir / "signing/jwt-signing-key.pem")
    for name in [n for n in SECRET_FILES if n.endswith("password")]:  # they stand in URLs unescaped
        assert re.fullmatch(r"[A-Za-z0-9_-]{32,}\n", (secrets_dir / name).read_text()), name
    password = (secrets_dir / "infra/postgres-password").read_text().strip()
    assert (secrets_dir / "infra/pgpass").read_text() == f"*:*:*:postgres:{password}\n"
    for name in APPS:
        password = (secrets_dir / f"{name}/db-password").read_text().strip()
        assert (secrets_dir / f"{name}/pgpass").read_text() == f"*:*:*:coworking_{name}:{password}\n"
    passwords = [(secrets_dir / name).read_text() for name in SECRET_FILES if "password" in name]
    assert len(set(passwords)) == len(passwords)  # each its own
    assert stat.S_IMODE((secrets_dir / DEFINITIONS).stat().st_mode) == 0o644  # hashes only; RabbitMQ's user reads it


def test_init_secrets_never_replaces_a_secret(tmp_path: Path) -> None:
    run_init_secrets(tmp_path)
    before = {name: (tmp_path / name).read_bytes() for name in SECRET_FILES}
    again = run_init_secrets(tmp_path)
    assert {name: (tmp_path / name).read_bytes() for name in SECRET_FILES} == before
    assert "created" not in again.stdout
    assert not list(tmp_path.rglob("*.tmp"))


def test_no_secret_is_written_in_the_deploy_files(raw: dict[str, Any], services: dict[str, Any]) -> None:
    texts = {p.name: p.read_text() for p in DEPLOY.rglob("*") if p.is_file()}
    for name, text in texts.items():
        assert "-----BEGIN" not in text, name
        assert "guest:guest" not in text, name
    url_passwords = []
    for value in strings(raw):
        for password in re.findall(r"\b[a-z][a-z0-9+.-]*://[^/\s:@]+:(\$\$\([^)]*\)|[^@\s]*)@", value):
            assert password.startswith("$$(cat /secrets/"), f"password in {value!r}"
            url_passwords.append(password)
        for token in re.findall(r"[A-Za-z0-9_+=-]{24,}", value):
            looks_random = re.search(r"[0-9]", token) and re.search(r"[a-z]", token) and re.search(r"[A-Z]", token)
            assert not looks_random, f"{token!r} looks like a key"
    assert len(url_passwords) == len(APPS) + 1  # the AMQP_URL of each service and of the setup, from the secrets
    for name, service in services.items():
        for var in service.get("environment", {}):
            if re.search(r"PASS|SECRET|TOKEN|_KEY$", var):
                assert var.endswith("FILE"), f"{name} sets {var} in the compose file"


# --- the image ---------------------------------------------------------------------------------------------------


def test_dockerfile_runs_as_a_non_root_user() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    instructions = [line.split(None, 1) for line in dockerfile.splitlines() if line.strip() and line[0] != "#"]
    froms = [args for word, *args in instructions if word == "FROM"]
    assert all(args[0].startswith("python:3.11-slim") for args in froms)
    final_stage = instructions[max(i for i, (word, *_) in enumerate(instructions) if word == "FROM") :]
    users = [args[0].strip() for word, *args in final_stage if word == "USER"]
    assert users, "the final stage sets no USER"
    assert users[-1].split(":")[0] not in {"root", "0"}
    assert 'ENTRYPOINT ["python", "-m"]' in dockerfile
    assert "pip install ." in dockerfile
    # init-secrets.sh hands the secret files to the image's user
    uid = re.search(r"useradd .*--uid (\d+)", dockerfile)
    assert uid and f"APP_UID=${{APP_UID:-{uid.group(1)}}}" in (DEPLOY / "init-secrets.sh").read_text()


def test_dockerignore_keeps_local_state_out_of_the_build() -> None:
    ignored = set((ROOT / ".dockerignore").read_text().split())
    assert {".venv", ".local", ".git"} <= ignored


def test_compose_file_says_how_to_create_the_first_operator() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    assert "docker compose -f deploy/compose.yaml exec accounts python -m services.accounts create-operator" in text
