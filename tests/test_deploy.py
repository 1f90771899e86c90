"""Static checks of the container set-up: Dockerfile, docker-compose.yml and .dockerignore.

No Docker engine is needed: the compose file is read with PyYAML, the Dockerfile line by line,
and what they name is checked against the real code (settings fields, the ``gan`` CLI parser,
the packages pyproject.toml installs).
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.util
import json
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from sqlalchemy.engine import make_url

import api.cli
from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
PYPROJECT = ROOT / "pyproject.toml"
GPU_COMPOSE = ROOT / "deploy" / "gpu_compose.py"

APP_SERVICES = ("api", "worker")
MIGRATE_SERVICE = "migrate"  # runs `gan db upgrade` once, before the app services start
BACKING_SERVICES = ("redis", "postgres", "seaweedfs")
API_PORT = 8000


# --- reading the files ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(data, dict), "docker-compose.yml is not a mapping"
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose.get("services")
    assert isinstance(found, dict), "docker-compose.yml has no services mapping"
    return found


def parse_dockerfile(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with ``\\`` continuations joined and comments dropped
    (Docker drops comment lines inside a continuation too)."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1].strip() + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        instructions.append((keyword.upper(), args.strip()))
        pending = ""
    assert not pending, "the Dockerfile ends inside a line continuation"
    return instructions


@pytest.fixture(scope="module")
def dockerfile() -> list[tuple[str, str]]:
    return parse_dockerfile(DOCKERFILE.read_text())


def args_of(instructions: list[tuple[str, str]], keyword: str) -> list[str]:
    return [args for kw, args in instructions if kw == keyword]


def exec_or_shell(args: str) -> list[str]:
    """The argv of an exec-form (JSON array) or shell-form instruction."""
    if args.startswith("["):
        argv = json.loads(args)
        assert isinstance(argv, list) and all(isinstance(a, str) for a in argv), args
        return argv
    return shlex.split(args)


def dockerfile_env(instructions: list[tuple[str, str]]) -> dict[str, str]:
    env: dict[str, str] = {}
    for args in args_of(instructions, "ENV"):
        for token in shlex.split(args):
            name, sep, value = token.partition("=")
            assert sep, f"ENV {args!r}: use the NAME=value form"
            env[name] = value
    return env


def command_argv(service: dict[str, Any]) -> list[str]:
    """The service's command as compose runs it on a host that sets no variables of its own
    (``${NAME:-default}`` becomes the default)."""
    command = service.get("command")
    if isinstance(command, str):
        return [defaults(part) for part in shlex.split(command)]
    assert isinstance(command, list), f"no command: {service}"
    return [defaults(str(part)) for part in command]


def defaults(text: str) -> str:
    """``text`` with each ``${NAME:-default}`` replaced by its default."""
    return re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", text)


def environment(service: dict[str, Any]) -> dict[str, str]:
    """The service's variables as compose sets them on a host that sets none of its own
    (``${NAME:-default}`` becomes the default)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = [item.partition("=") for item in env]
        env = {name: value for name, _, value in pairs}
    return {str(name): defaults("" if value is None else str(value)) for name, value in env.items()}


def mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(source, target) of each volume; source "" for an anonymous volume."""
    found = []
    for volume in service.get("volumes") or []:
        if isinstance(volume, str):
            parts = volume.split(":")
            found.append(("", parts[0]) if len(parts) == 1 else (parts[0], parts[1]))
        else:
            found.append((str(volume.get("source", "")), str(volume["target"])))
    return found


def is_named_volume(source: str) -> bool:
    return bool(source) and not source.startswith(("/", ".", "~", "$"))


def healthcheck_command(service: dict[str, Any]) -> str:
    check = service.get("healthcheck")
    assert isinstance(check, dict), f"no healthcheck: {service}"
    assert not check.get("disable"), "healthcheck disabled"
    test = check.get("test")
    if isinstance(test, str):
        return test
    assert isinstance(test, list) and test and test[0] in ("CMD", "CMD-SHELL"), test
    return " ".join(str(part) for part in test[1:])


# --- docker-compose.yml ---------------------------------------------------------------------


def test_compose_declares_the_services(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "the compose spec has no top-level version key"
    assert set(APP_SERVICES + BACKING_SERVICES) <= set(compose["services"])


def test_redis_persists_with_appendonly_and_has_a_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    redis = services["redis"]
    argv = command_argv(redis)
    assert "--appendonly" in argv, argv
    assert argv[argv.index("--appendonly") + 1] == "yes", argv
    assert ("redis-data", "/data") in [(s, t) for s, t in mounts(redis) if is_named_volume(s)]
    assert "redis-cli ping" in healthcheck_command(redis)


def test_postgres_persists_and_its_healthcheck_names_its_user_and_db(
    services: dict[str, dict[str, Any]],
) -> None:
    postgres = services["postgres"]
    env = environment(postgres)
    targets = [t for s, t in mounts(postgres) if is_named_volume(s)]
    assert "/var/lib/postgresql/data" in targets
    check = shlex.split(healthcheck_command(postgres))
    assert check[0] == "pg_isready", check
    assert check[check.index("-U") + 1] == env["POSTGRES_USER"]
    assert check[check.index("-d") + 1] == env["POSTGRES_DB"]


def test_api_and_worker_run_one_image(services: dict[str, dict[str, Any]]) -> None:
    api, worker = services["api"], services["worker"]
    assert api.get("build"), "the api builds the image"
    assert api.get("build") == worker.get("build")
    assert api.get("image") and api.get("image") == worker.get("image")


def reserved_gpus(service: dict[str, Any]) -> list[str]:
    """The ids of the NVIDIA GPUs the service reserves."""
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    gpus = [d for d in devices if d.get("driver") == "nvidia" and "gpu" in d["capabilities"]]
    assert len(gpus) == 1 and "count" not in gpus[0], devices  # by id: count and --scale
    return [str(gpu) for gpu in gpus[0]["device_ids"]]  # would give replicas the same GPU


def test_worker_reserves_nvidia_gpu_0_by_id(services: dict[str, dict[str, Any]]) -> None:
    assert reserved_gpus(services["worker"]) == ["0"]


def load_gpu_compose() -> Any:
    spec = importlib.util.spec_from_file_location("gpu_compose", GPU_COMPOSE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_generator_writes_one_worker_service_per_gpu(
    services: dict[str, dict[str, Any]],
) -> None:
    text = load_gpu_compose().with_gpu_workers(COMPOSE_FILE.read_text(), ["0", "2", "3"])
    generated = yaml.safe_load(text)["services"]
    workers = {name: s for name, s in generated.items() if name.startswith("worker")}
    assert {name: reserved_gpus(s) for name, s in workers.items()} == {
        "worker": ["0"], "worker-gpu2": ["2"], "worker-gpu3": ["3"],
    }  # fmt: skip
    for worker in workers.values():  # the same service otherwise
        assert {**worker, "deploy": None} == {**services["worker"], "deploy": None}
    assert {n: s for n, s in generated.items() if n not in workers} == {
        n: s for n, s in services.items() if n != "worker"
    }


def test_worker_has_time_for_a_warm_shutdown(services: dict[str, dict[str, Any]]) -> None:
    grace = str(services["worker"].get("stop_grace_period", "10s"))
    match = re.fullmatch(r"(\d+)(s|m|h)", grace)
    assert match, f"stop_grace_period {grace!r}: expected e.g. 120s or 2m"
    seconds = int(match[1]) * {"s": 1, "m": 60, "h": 3600}[match[2]]
    assert seconds >= 60


def test_api_and_worker_share_the_object_store_and_the_data_volume(
    services: dict[str, dict[str, Any]], dockerfile: list[tuple[str, str]]
) -> None:
    image_env = dockerfile_env(dockerfile)
    stores = set()
    for name in APP_SERVICES:
        service = services[name]
        env = image_env | environment(service)
        folder = env["GAN_DATA_DIR"]
        assert [s for s, t in mounts(service) if t == folder], f"{name}: no GAN_DATA_DIR mount"
        url = env["GAN_ARTIFACTS_URL"]
        assert url.startswith("s3://"), f"{name}: the artifacts must be in the object store"
        endpoint = urlsplit(env["AWS_ENDPOINT_URL"])
        assert endpoint.hostname == "seaweedfs" and endpoint.port == 8333, endpoint
        assert env["AWS_ACCESS_KEY_ID"] and env["AWS_SECRET_ACCESS_KEY"], name
        stores.add((url, env["AWS_ENDPOINT_URL"], env["AWS_ACCESS_KEY_ID"]))
    assert len(stores) == 1, f"api and worker use different artifact stores: {stores}"


def test_the_object_store_makes_the_bucket_and_keys_the_services_use(
    services: dict[str, dict[str, Any]],
) -> None:
    store = services["seaweedfs"]
    argv = command_argv(store)
    assert argv[0] == "mini" and "-ip.bind=0.0.0.0" in argv, argv
    bucket = urlsplit(environment(services["api"])["GAN_ARTIFACTS_URL"]).netloc
    assert f"-bucket={bucket}" in argv, argv
    env, api_env = environment(store), environment(services["api"])
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key] == api_env[key], key
    assert ("seaweedfs-data", "/data") in [(s, t) for s, t in mounts(store) if is_named_volume(s)]
    assert "8333" in healthcheck_command(store)


def test_every_named_volume_is_declared(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    declared = set(compose.get("volumes") or {})
    used = {s for svc in services.values() for s, _ in mounts(svc) if is_named_volume(s)}
    assert used, "no named volumes at all"
    assert used <= declared, f"undeclared volumes: {used - declared}"


def test_app_services_wait_for_healthy_redis_and_postgres(
    services: dict[str, dict[str, Any]],
) -> None:
    for name in APP_SERVICES:
        depends_on = services[name].get("depends_on")
        assert isinstance(depends_on, dict), f"{name}: depends_on needs the long form"
        for backing in BACKING_SERVICES:
            assert depends_on[backing]["condition"] == "service_healthy", (name, backing)
            assert "healthcheck" in services[backing], f"{backing} can never be healthy"


def test_a_one_shot_migrate_service_upgrades_the_job_store_first(
    services: dict[str, dict[str, Any]],
) -> None:
    migrate = services[MIGRATE_SERVICE]
    assert migrate.get("image") == services["api"].get("image"), "the same image"
    args = parse_cli(command_argv(migrate))
    assert (args.command, args.db_command) == ("db", "upgrade")
    assert str(migrate.get("restart", "no")) == "no", "it must run once, not again and again"
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name in APP_SERVICES:
        depends_on = services[name]["depends_on"]
        assert depends_on[MIGRATE_SERVICE]["condition"] == "service_completed_successfully", name


def test_the_migrations_ship_with_the_package() -> None:
    """``pip install .`` (the Dockerfile's) installs the migrations and their template."""
    from setuptools import find_packages

    project = tomllib.loads(PYPROJECT.read_text())["tool"]["setuptools"]
    packages = find_packages(str(ROOT), include=project["packages"]["find"]["include"])
    migrations = ROOT / "worker" / "migrations"
    folders = {p.parent for p in migrations.rglob("*.py")}
    for folder in folders:
        assert ".".join(folder.relative_to(ROOT).parts) in packages, f"{folder}: no __init__.py"
    assert list((migrations / "versions").glob("0001_*.py")), "no initial migration"
    assert "script.py.mako" in project["package-data"]["worker.migrations"]


def test_api_publishes_its_port_and_checks_livez(services: dict[str, dict[str, Any]]) -> None:
    api = services["api"]
    container_ports = [str(p).rsplit(":", 1)[-1].split("/")[0] for p in api["ports"]]
    assert str(API_PORT) in container_ports
    assert f":{API_PORT}/livez" in healthcheck_command(api)


def test_worker_does_not_inherit_the_api_healthcheck(
    services: dict[str, dict[str, Any]],
) -> None:
    # The image's HEALTHCHECK probes /livez, which only the API serves.
    check = services["worker"].get("healthcheck")
    assert check, "the worker must override the image's /livez healthcheck"
    assert check.get("disable") is True or "/livez" not in json.dumps(check.get("test"))


def test_gan_variables_are_settings_fields_and_parse(
    services: dict[str, dict[str, Any]],
    dockerfile: list[tuple[str, str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    envs = [dockerfile_env(dockerfile)] + [environment(services[n]) for n in APP_SERVICES]
    gan_vars = {k: v for env in envs for k, v in env.items() if k.startswith("GAN_")}
    assert {"GAN_DATABASE_URL", "GAN_BROKER_URL", "GAN_ARTIFACTS_URL"} <= set(gan_vars)
    for env in envs:
        for name, value in env.items():
            if name.startswith("GAN_"):
                field = name.removeprefix("GAN_").lower()
                assert field in Settings.model_fields, f"{name} is no Settings field"
                monkeypatch.setenv(name, value)
                parsed = getattr(Settings(_env_file=None), field)
                parsed = ",".join(parsed) if isinstance(parsed, tuple) else str(parsed)
                assert parsed == value, name


def test_the_api_listens_on_the_network_so_it_takes_keys_from_the_host(
    services: dict[str, dict[str, Any]],
) -> None:
    assert "0.0.0.0" in command_argv(services["api"])  # `gan serve` refuses this without keys
    assert services["api"]["environment"]["GAN_API_KEYS"] == "${GAN_API_KEYS:-}"


def test_database_url_uses_the_postgres_service_credentials(
    services: dict[str, dict[str, Any]],
) -> None:
    db = environment(services["postgres"])
    for name in (*APP_SERVICES, MIGRATE_SERVICE):
        url = make_url(environment(services[name])["GAN_DATABASE_URL"])
        assert url.drivername == "postgresql+psycopg", url.drivername
        assert url.host == "postgres" and url.port in (None, 5432)
        assert url.username == db["POSTGRES_USER"]
        assert url.password == db["POSTGRES_PASSWORD"]
        assert url.database == db["POSTGRES_DB"]


def test_broker_url_points_at_the_redis_service(services: dict[str, dict[str, Any]]) -> None:
    for name in APP_SERVICES:
        url = environment(services[name])["GAN_BROKER_URL"]
        assert re.fullmatch(r"redis://redis(:6379)?(/\d+)?", url), url


# --- the commands, against the real CLI -----------------------------------------------------


def parse_cli(argv: list[str]) -> argparse.Namespace:
    """Parse ``gan <argv>`` with the real console script's parser (runs nothing)."""
    scripts = tomllib.loads(PYPROJECT.read_text())["project"]["scripts"]
    assert scripts.get(argv[0]) == "api.cli:main", f"{argv[0]} is not the gan console script"
    return api.cli.build_parser().parse_args(argv[1:])  # exits on an unknown command or flag


def test_compose_commands_parse_with_the_real_cli(services: dict[str, dict[str, Any]]) -> None:
    api_args = parse_cli(command_argv(services["api"]))
    assert (api_args.command, api_args.host, api_args.port) == ("serve", "0.0.0.0", API_PORT)
    assert api_args.no_worker  # the worker service runs the worker
    worker = parse_cli(command_argv(services["worker"]))
    assert (worker.command, worker.jobs_per_gpu, worker.jobs) == ("worker", 1, None)


def test_cli_rejects_unknown_flags() -> None:
    with pytest.raises(SystemExit):
        parse_cli(["gan", "serve", "--no-such-flag"])


# --- Dockerfile -----------------------------------------------------------------------------


def test_dockerfile_builds_on_python_311(dockerfile: list[tuple[str, str]]) -> None:
    assert dockerfile[0][0] == "FROM", "the first instruction must be FROM"
    # The last FROM is the image that runs; options such as --platform come before its name.
    final = [t for t in args_of(dockerfile, "FROM")[-1].split() if not t.startswith("--")]
    assert final[0].startswith("python:3.11"), final


def test_dockerfile_runs_as_a_non_root_user(dockerfile: list[tuple[str, str]]) -> None:
    users = args_of(dockerfile, "USER")
    assert users, "no USER: the container would run as root"
    user = users[-1].split(":")[0]
    assert user not in ("root", "0"), user
    position = [kw for kw, _ in dockerfile].index
    last_user = max(i for i, (kw, _) in enumerate(dockerfile) if kw == "USER")
    assert last_user < position("CMD")


def test_dockerfile_folders_belong_to_the_user(dockerfile: list[tuple[str, str]]) -> None:
    env = dockerfile_env(dockerfile)
    user = args_of(dockerfile, "USER")[-1].split(":")[0]
    chowns = [args for args in args_of(dockerfile, "RUN") if f"chown {user}" in args]
    for variable in ("GAN_DATA_DIR", "GAN_ARTIFACTS_URL"):
        folder = env[variable]
        assert any(re.search(rf"mkdir [^&;]*{re.escape(folder)}\b", a) for a in chowns), variable
    assert env.get("GAN_HOST") == "0.0.0.0"


def test_dockerfile_exposes_and_checks_the_api(dockerfile: list[tuple[str, str]]) -> None:
    exposed = [
        port.split("/")[0] for args in args_of(dockerfile, "EXPOSE") for port in args.split()
    ]
    assert str(API_PORT) in exposed
    checks = args_of(dockerfile, "HEALTHCHECK")
    assert len(checks) == 1, checks
    match = re.fullmatch(r"(?:--\S+\s+)*CMD\s+(.+)", checks[0])
    assert match, checks[0]
    probe = " ".join(exec_or_shell(match[1]))
    assert f":{API_PORT}/livez" in probe and "urllib" in probe, probe


def test_dockerfile_cmd_is_the_api_command_of_compose(
    dockerfile: list[tuple[str, str]], services: dict[str, dict[str, Any]]
) -> None:
    commands = args_of(dockerfile, "CMD")
    assert commands, "no CMD"
    assert exec_or_shell(commands[-1]) == command_argv(services["api"])


def test_dockerfile_installs_dependencies_before_copying_the_code(
    dockerfile: list[tuple[str, str]],
) -> None:
    project = tomllib.loads(PYPROJECT.read_text())
    packages = [p.rstrip("*") for p in project["tool"]["setuptools"]["packages"]["find"]["include"]]
    copies = [
        (i, src)
        for i, (kw, args) in enumerate(dockerfile)
        if kw == "COPY"
        for src in [t for t in shlex.split(args) if not t.startswith("--")][:-1]
    ]
    copied = {src.rstrip("/"): i for i, src in copies}
    assert {"pyproject.toml", project["project"]["readme"], *packages} <= set(copied)
    installs = [
        i for i, (kw, args) in enumerate(dockerfile) if kw == "RUN" and "pip install" in args
    ]
    assert installs, "no pip install"
    assert copied["pyproject.toml"] < installs[0] < min(copied[p] for p in packages)
    assert any("pip install --no-cache-dir ." in dockerfile[i][1] for i in installs)
    assert max(copied[p] for p in packages) < installs[-1]


# --- .dockerignore --------------------------------------------------------------------------


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line.lstrip("/") for line in lines if line and not line.startswith("#")]


def is_ignored(path: str, patterns: list[str]) -> bool:
    """Whether the build context leaves ``path`` out (the last matching pattern wins; a match on
    a parent folder leaves out everything in it). Approximates Docker's matcher."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern.removeprefix("!")
        if any(fnmatch.fnmatchcase(c, glob) for c in candidates):
            ignored = not negated
    return ignored


def test_dockerignore_keeps_what_the_build_copies(dockerfile: list[tuple[str, str]]) -> None:
    patterns = dockerignore_patterns()
    sources = [
        src
        for args in args_of(dockerfile, "COPY")
        for src in [t for t in shlex.split(args) if not t.startswith("--")][:-1]
    ]
    assert sources, "no COPY"
    for src in sources:
        path = ROOT / src
        assert path.exists(), f"COPY {src}: no such file"
        files = [path] if path.is_file() else [f for f in path.rglob("*.py") if f.is_file()]
        for file in files:
            relative = file.relative_to(ROOT).as_posix()
            assert not is_ignored(relative, patterns), f"{relative}: left out by .dockerignore"


def test_dockerignore_leaves_out_local_state() -> None:
    patterns = dockerignore_patterns()
    for path in (".venv", ".git", "var", "data", ".mypy_cache", "tests"):
        assert is_ignored(path, patterns), f"{path} would be sent to the build"
    assert not is_ignored("api/cli.py", patterns)
