"""The deploy files, checked without Docker: parsed, and compared with the code they deploy.

Compose services, ports, volumes and environment against ``Settings`` and the CLI; the
Dockerfile; MirrorMaker topics against the event contract and the processor's topic router;
Kafka ACL scripts; ClickHouse users; Grafana provisioning and the dashboards' SQL against the
migrations (parsed here, and run on chDB in the integration test at the end).
"""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import tomllib
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import typer.main
import yaml
from atmpnet.cli import app as cli_app
from atmpnet.contract.events import DERIVED_EVENT_TYPES, EVENT_TYPES
from atmpnet.settings import REPO_ROOT, Settings
from atmpnet.streams.ingest import TopicRouter
from atmpnet.transport import DEAD_LETTER_TOPIC, INPUT_TOPICS
from atmpnet.warehouse.migrations import load_migrations

DEPLOY = REPO_ROOT / "deploy"
# the Kafka principal of each atmpnet service that reaches Kafka (the view refresher publishes
# the derived topics, as the processors would)
KAFKA_PRINCIPALS = {
    "gateway": "atmpnet-gateway",
    "processor": "atmpnet-processor",
    "views": "atmpnet-processor",
}
ATMPNET_SERVICES = ("gateway", "processor", "api", "migrate", "schemas-register", "views")
EVENT_TOPICS = {t.TOPIC for t in EVENT_TYPES}
DERIVED_TOPICS = {t.TOPIC for t in DERIVED_EVENT_TYPES} | {DEAD_LETTER_TOPIC}
_INTERPOLATION = re.compile(r"\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?])?(?P<arg>[^}]*)\}")


# --- parsing helpers ---


def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return loaded


def services() -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose()["services"]
    return found


def env_example() -> dict[str, str]:
    out = {}
    for line in (DEPLOY / ".env.example").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def environment(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.partition("=")[::2] for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} against ``env``."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m["name"], m["op"] or "", m["arg"]
        if op.endswith("-"):
            return env.get(name) or arg
        if op.endswith("?"):
            assert name in env, f"${{{name}}} is required by compose but not in .env.example"
        return env.get(name, "")

    return _INTERPOLATION.sub(one, value)


def _unescape(text: str) -> str:
    return re.sub(r"\\(.)", r"\1", text)


def java_properties(path: Path) -> dict[str, str]:
    """A .properties file as Java reads it: continuations, '=' or ':' separators, escapes."""
    logical: list[str] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.lstrip() if not pending else raw.strip()
        if not pending and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2 == 1:
            pending += line[:-1]
            continue
        logical.append(pending + line)
        pending = ""
    out = {}
    for line in logical:
        m = re.match(r"^((?:\\.|[^=:\s])+)\s*[=:\s]\s*(.*)$", line)
        assert m, f"{path.name}: cannot parse {line!r}"
        out[_unescape(m[1])] = _unescape(m[2])
    return out


def cli_command(args: list[str]) -> Any:
    """The click command an argument list names, checking every --option exists on it."""
    command: Any = typer.main.get_command(cli_app)  # typer carries its own copy of click
    rest = list(args)
    while hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        name = rest.pop(0)
        assert name in command.commands, f"`atmpnet {' '.join(args)}`: no command {name!r}"
        command = command.commands[name]
    options = {
        opt for p in command.params for opt in [*getattr(p, "opts", []), *getattr(p, "secondary_opts", [])]
    }
    for word in rest:
        if word.startswith("--"):
            assert word.split("=")[0] in options, f"`atmpnet {' '.join(args)}`: no option {word}"
    return command


def settings_env_names() -> set[str]:
    return {f"ATMPNET_{name.upper()}" for name in Settings.model_fields}


def deploy_text_files() -> Iterator[Path]:
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.suffix in {
            ".yaml",
            ".yml",
            ".json",
            ".xml",
            ".properties",
            ".sh",
            ".md",
            "",
        }:
            yield path


# --- compose: services, images, commands ---


def test_compose_has_every_part_of_the_deployment() -> None:
    svc = services()
    expected = {
        "kafka-1", "kafka-2", "kafka-3", "kafka-init", "schema-registry", "clickhouse",
        "otel-collector", "grafana", "gateway", "processor", "api", "migrate", "schemas-register",
    }  # fmt: skip
    assert expected <= set(svc)
    assert {name for name in svc if name.startswith("mirrormaker-")}, "a MirrorMaker per site"
    for name, service in svc.items():
        image = service.get("image", "")
        assert image and ":" in image and not image.endswith(":latest"), f"{name}: image not pinned: {image}"


def test_kafka_is_three_kraft_brokers_with_one_quorum() -> None:
    svc = services()
    brokers = {n: environment(s) for n, s in svc.items() if re.fullmatch(r"kafka-\d", n)}
    assert len(brokers) == 3
    voters = {env["KAFKA_CONTROLLER_QUORUM_VOTERS"] for env in brokers.values()}
    assert len(voters) == 1
    quorum = dict(v.split("@") for v in voters.pop().split(","))
    assert sorted(quorum) == sorted(env["KAFKA_NODE_ID"] for env in brokers.values()) == ["1", "2", "3"]
    for name, env in brokers.items():
        assert "controller" in env["KAFKA_PROCESS_ROLES"] and "broker" in env["KAFKA_PROCESS_ROLES"]
        assert quorum[env["KAFKA_NODE_ID"]].split(":")[0] == name == svc[name]["hostname"]
        controller_port = quorum[env["KAFKA_NODE_ID"]].split(":")[1]
        assert f"CONTROLLER://:{controller_port}" in env["KAFKA_LISTENERS"]
        advertised = dict(item.split("://") for item in env["KAFKA_ADVERTISED_LISTENERS"].split(","))
        assert all(addr.startswith(f"{name}:") for addr in advertised.values())
        protocols = dict(item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
        assert protocols["CLIENT"].startswith("SASL_"), "clients authenticate"
        assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
        assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
        assert int(env["KAFKA_MIN_INSYNC_REPLICAS"]) == 2
        assert not svc[name].get("ports"), "brokers' plaintext listeners stay on the private network"
    bootstrap = environment(svc["processor"])["ATMPNET_KAFKA_BOOTSTRAP_SERVERS"].split(",")
    assert sorted(bootstrap) == sorted(f"{n}:9092" for n in brokers)


def test_atmpnet_services_run_real_cli_commands_from_one_image() -> None:
    svc = services()
    images = {svc[name]["image"] for name in ATMPNET_SERVICES}
    assert len(images) == 1, "one image for every role"
    for name in ATMPNET_SERVICES:
        build = svc[name]["build"]
        command = svc[name]["command"]
        if svc[name].get("entrypoint"):  # a shell loop around atmpnet commands
            assert svc[name]["entrypoint"][0] == "/bin/sh"
            invoked = re.findall(r"\batmpnet ([a-z-]+(?: [a-z-]+)*)", command[0])
            assert invoked, f"{name}: the shell command runs no atmpnet command"
            for args in invoked:
                cli_command(args.split())
            continue
        assert (DEPLOY / build["context"] / build["dockerfile"]).resolve() == (
            DEPLOY / "Dockerfile"
        ).resolve()
        cli_command(command)
    assert svc["gateway"]["command"][:2] == ["gateway", "serve"]
    assert svc["processor"]["command"][0] == "process"
    assert "--no-views" in svc["processor"]["command"], "scaled workers must not each refresh the views"
    refreshers = [n for n in ATMPNET_SERVICES if "rebuild" in " ".join(svc[n]["command"])]
    assert refreshers == ["views"]
    assert svc["api"]["command"] == ["serve"]


# --- compose: environment against Settings, secrets only from the environment ---


def test_every_atmpnet_variable_is_a_settings_field() -> None:
    known = settings_env_names()
    seen = set()
    for name, service in services().items():
        for key in environment(service):
            if key.startswith("ATMPNET_"):
                seen.add(key)
                assert key in known, f"{name}: {key} is no field of atmpnet.settings.Settings"
        if name in ATMPNET_SERVICES:
            foreign = [k for k in environment(service) if not k.startswith("ATMPNET_")]
            assert not foreign, f"{name} reads only ATMPNET_ settings, not {foreign}"
    for key in env_example():
        if key.startswith("ATMPNET_") and key != "ATMPNET_IMAGE_TAG":  # compose's own, for the image tag
            assert key in known, f".env.example: {key} is no Settings field"
    for line in (DEPLOY / "Dockerfile").read_text().splitlines():
        seen.update(re.findall(r"\b(ATMPNET_[A-Z_]+)=", line))
    assert seen - {"ATMPNET_IMAGE_TAG"} <= known
    assert {
        "ATMPNET_KAFKA_BOOTSTRAP_SERVERS",
        "ATMPNET_CLICKHOUSE_URL",
        "ATMPNET_SCHEMA_REGISTRY_URL",
    } <= seen


@pytest.mark.parametrize("service", ["gateway", "processor", "api", "migrate", "views"])
def test_service_environment_validates_as_settings(service: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The values compose gives (placeholders of .env.example aside) are valid Settings."""
    example = env_example()
    env = {k: interpolate(v, example) for k, v in environment(services()[service]).items()}
    for key, value in env.items():
        if "<" not in value:  # a <placeholder> is the operator's to fill
            monkeypatch.setenv(key, value)
    settings = Settings()
    if service == "gateway":  # writes Kafka only
        assert not [k for k in env if k.startswith("ATMPNET_CLICKHOUSE_")]
    else:
        assert settings.clickhouse_url and not settings.embedded_clickhouse
        assert env["ATMPNET_CLICKHOUSE_PASSWORD"].startswith("<"), "password comes from .env"
    if service not in KAFKA_PRINCIPALS:  # ClickHouse only: no broker, no Kafka credentials
        assert not [k for k in env if k.startswith("ATMPNET_KAFKA_")]
        return
    assert settings.kafka_bootstrap_servers and not settings.embedded_kafka
    assert settings.kafka_sasl_mechanism == "SCRAM-SHA-512"
    assert settings.kafka_sasl_username == KAFKA_PRINCIPALS[service], "each role has its own Kafka principal"
    assert env["ATMPNET_KAFKA_SASL_PASSWORD"].startswith("<"), "password comes from .env"
    assert settings.topic_replication == 3


def test_compose_variables_are_all_in_env_example_and_used() -> None:
    text = (DEPLOY / "compose.yaml").read_text()
    referenced = {m["name"] for m in _INTERPOLATION.finditer(text)}
    example = env_example()
    required = {m["name"] for m in _INTERPOLATION.finditer(text) if (m["op"] or "").endswith("?")}
    assert required <= set(example), f"missing from .env.example: {sorted(required - set(example))}"
    assert set(example) <= referenced, f"unused in compose: {sorted(set(example) - referenced)}"


def test_no_secret_is_committed() -> None:
    for key, value in env_example().items():
        if re.search(r"PASSWORD|SECRET|TOKEN", key):
            assert "<" in value and ">" in value, f".env.example: {key} must be a <placeholder>"
    assert "\n.env\n" in "\n" + (DEPLOY / ".gitignore").read_text(), "deploy/.env is git-ignored"
    literal = re.compile(r"""(password|secret)\s*[=:]\s*["']?(?![$<"'{]|\s|$)""", re.I)
    for path in deploy_text_files():
        if path.name in {".env.example", "README.md"}:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0] if path.suffix in {".yaml", ".properties", ".sh", ""} else line
            code = re.sub(r"\$\{[^}]*\}|\$\w+", "$", code)  # a reference to the environment is fine
            assert not literal.search(code), f"{path.relative_to(REPO_ROOT)}:{number}: literal secret? {line}"
    for user in ET.parse(DEPLOY / "clickhouse/users.d/atmpnet.xml").getroot().find("users") or []:
        for password in user.iter("password"):
            assert not (password.text or "").strip() and password.get("from_env"), user.tag


def test_every_mounted_file_exists_and_ports_are_unique() -> None:
    published: dict[str, str] = {}
    for name, service in services().items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("."):
                assert (DEPLOY / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in compose()["volumes"], f"{name}: named volume {source} is not declared"
        for port in service.get("ports", []):
            host = port.rsplit(":", 1)[0]
            assert host not in published, f"{name} and {published[host]} both publish {host}"
            published[host] = name


def test_published_ports_are_the_ports_services_listen_on() -> None:
    svc = services()

    def container_ports(name: str) -> set[int]:
        return {int(p.rsplit(":", 1)[1]) for p in svc[name].get("ports", [])}

    gateway = svc["gateway"]["command"]
    assert container_ports("gateway") == {int(gateway[gateway.index("--port") + 1])}
    for name in ("gateway", "api"):
        (port,) = container_ports(name)
        assert f"127.0.0.1:{port}/healthz" in " ".join(svc[name]["healthcheck"]["test"]), name
    assert container_ports("api") == {int(environment(svc["api"])["ATMPNET_API_PORT"])}
    assert environment(svc["api"])["ATMPNET_API_HOST"] == "0.0.0.0"
    assert "--host" in gateway and gateway[gateway.index("--host") + 1] == "0.0.0.0"
    config = ET.parse(DEPLOY / "clickhouse/config.d/atmpnet.xml").getroot()
    http_port = int(config.findtext("http_port") or 0)
    assert container_ports("clickhouse") == {http_port}
    assert environment(svc["processor"])["ATMPNET_CLICKHOUSE_URL"] == f"http://clickhouse:{http_port}"
    registry = environment(svc["schema-registry"])["SCHEMA_REGISTRY_LISTENERS"]
    assert container_ports("schema-registry") == {int(registry.rsplit(":", 1)[1])}
    assert environment(svc["processor"])["ATMPNET_SCHEMA_REGISTRY_URL"].endswith(
        f":{registry.rsplit(':', 1)[1]}"
    )


def test_services_start_after_what_they_need() -> None:
    svc = services()
    for name in ("gateway", "processor", "api"):
        needs = svc[name]["depends_on"]
        assert needs["migrate"]["condition"] == needs["schemas-register"]["condition"]
        assert needs["migrate"]["condition"] == "service_completed_successfully"
    assert "schema-registry" in svc["schemas-register"]["depends_on"]
    assert "clickhouse" in svc["migrate"]["depends_on"]


# --- the image ---


def test_dockerfile_is_multi_stage_pinned_and_non_root() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    stages = re.findall(r"^FROM (\S+)(?: AS (\w+))?", text, re.M)
    assert len(stages) >= 2, "multi-stage"
    for image, _ in stages:
        resolved = re.sub(r"\$\{(\w+)\}", lambda m: args[m[1]], image)
        assert re.search(r":\d+\.\d+\.\d+", resolved) or "@sha256:" in resolved, (
            f"base not pinned: {resolved}"
        )
    final = text[text.rindex("\nFROM ") :]
    user = re.findall(r"^USER (\S+)", final, re.M)
    assert user and user[-1].split(":")[0] not in {"root", "0"}, "runs as a non-root user"
    assert re.search(r'^ENTRYPOINT \["atmpnet"\]', final, re.M)
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for item in source.split():
            assert (REPO_ROOT / item).exists(), f"COPY {item}: not in the repository"


def test_the_image_carries_every_package_data_file() -> None:
    """A non-editable install (the image) gets the migrations, templates and static assets."""
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["atmpnet"]
    package = REPO_ROOT / "services" / "atmpnet"
    for path in package.rglob("*"):
        if path.is_file() and path.suffix not in {".py", ".pyc"} and "__pycache__" not in path.parts:
            rel = path.relative_to(package).as_posix()
            assert any(
                fnmatch.fnmatch(rel, p) or fnmatch.fnmatch(rel, p.replace("**/", "")) for p in patterns
            ), f"{rel} would be missing from the image: add it to package-data"


# --- multi-site: MirrorMaker 2 and ACLs ---


def mirror_files() -> list[Path]:
    files = sorted((DEPLOY / "mirrormaker").glob("*.properties"))
    assert files
    return files


@pytest.mark.parametrize("path", mirror_files(), ids=lambda p: p.stem)
def test_mirrormaker_copies_exactly_the_input_topics_with_the_site_prefix(path: Path) -> None:
    props = java_properties(path)
    clusters = [c.strip() for c in props["clusters"].split(",")]
    assert "central" in clusters and len(clusters) == 2
    (site,) = (c for c in clusters if c != "central")
    assert path.stem == site and re.fullmatch(r"[a-z0-9][a-z0-9-]{0,62}", site)
    assert props[f"{site}->central.enabled"] == "true"
    assert props.get(f"central->{site}.enabled", "false") == "false", "nothing flows back to a site"
    assert props["replication.policy.class"].endswith("DefaultReplicationPolicy")
    separator = props.get("replication.policy.separator", ".")
    pattern = re.compile("|".join(f"(?:{p.strip()})" for p in props[f"{site}->central.topics"].split(",")))
    candidates = EVENT_TOPICS | DERIVED_TOPICS | set(INPUT_TOPICS) | {"_schemas", "heartbeats"}
    mirrored = {t for t in candidates if pattern.fullmatch(t)}
    assert mirrored == EVENT_TOPICS == set(INPUT_TOPICS), "exactly the contract's input topics"
    router = TopicRouter()
    for event_type in EVENT_TYPES:
        remote = f"{site}{separator}{event_type.TOPIC}"
        assert router.route(remote) == (event_type, site), f"processors must read {remote}"
        assert re.fullmatch(router.pattern, remote)
    # on central it writes as the site itself, and keeps MirrorMaker's topics in its prefix
    assert f'username="{site}"' in props["central.sasl.jaas.config"]
    assert "${env:" in props["central.sasl.jaas.config"] and "${env:" in props[f"{site}.sasl.jaas.config"]
    for key in ("config.storage.topic", "offset.storage.topic", "status.storage.topic", "group.id"):
        assert props[f"central.{key}"].startswith(f"{site}."), f"central.{key} outside {site}.*"
    assert props[f"{site}->central.emit.heartbeats.enabled"] == "false"
    assert props[f"{site}->central.emit.checkpoints.enabled"] == "false"


def test_every_mirrored_site_has_a_service_credentials_and_acls() -> None:
    svc = services()
    example = env_example()
    init_env = environment(svc["kafka-init"])
    example_sites = example["ATMP_SITES"].split()
    for path in mirror_files():
        site = path.stem
        var = f"KAFKA_SITE_{site.upper().replace('-', '_')}_PASSWORD"
        assert var in init_env and var in example, f"{var}: scram-users.sh needs it for {site}"
        assert site in example_sites
        mounts = [
            v for s in svc.values() for v in s.get("volumes", []) if v.startswith(f"./mirrormaker/{site}.")
        ]
        assert mounts, f"no MirrorMaker service mounts {path.name}"
        (service,) = (s for s in svc.values() if any(v in mounts for v in s.get("volumes", [])))
        provided = set(environment(service))
        needed = set(re.findall(r"\$\{env:(\w+)\}", path.read_text()))
        assert needed <= provided, f"{path.name} needs {sorted(needed - provided)} from its service"


def test_acls_let_a_site_write_only_its_own_prefix() -> None:
    script = (DEPLOY / "kafka" / "acls.sh").read_text()
    topics = re.search(r'^INPUT_TOPICS="([^"]+)"', script, re.M)
    assert topics and set(topics[1].split()) == EVENT_TOPICS
    derived = re.search(r'^DERIVED_TOPICS="([^"]+)"', script, re.M)
    assert derived and set(derived[1].split()) == DERIVED_TOPICS
    central = script[script.index("central() {") : script.index("\nsite() {")]
    grants = re.findall(r"acl ((?:\\\n|[^\n])+)", central)
    site_grants = [g for g in grants if 'User:${site}"' in g]
    assert site_grants, "central grants each site something"
    for grant in site_grants:
        if "--topic" in grant:
            assert '--resource-pattern-type prefixed --topic "${site}."' in grant, grant
            assert "Write" in grant
        elif "--group" in grant:
            assert '--group "${site}."' in grant
        else:
            assert "--cluster" in grant and "IdempotentWrite" in grant
    assert not re.search(r'User:\$\{site\}".*--topic "?atmp', central), (
        "a site never writes atmp.* on central"
    )
    users = (DEPLOY / "kafka" / "scram-users.sh").read_text()
    for principal in ("atmpnet-gateway", "atmpnet-processor", "schema-registry"):
        assert f"set_scram {principal} " in users
    for name, principal in KAFKA_PRINCIPALS.items():
        assert environment(services()[name])["ATMPNET_KAFKA_SASL_USERNAME"] == principal
    for var in re.findall(r"set_scram \S+ (\w+)", users):
        assert var in environment(services()["kafka-init"]), f"kafka-init lacks {var}"


def _run_acls(tmp_path: Path, *args: str, sites: str = "") -> tuple[subprocess.CompletedProcess[str], str]:
    """Run acls.sh against a stand-in kafka-acls.sh that only records its arguments."""
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("bash is not available")
    log = tmp_path / "granted.log"
    fake = tmp_path / "kafka-acls.sh"
    fake.write_text('#!/bin/sh\necho "$*" >> "$ACLS_LOG"\n')
    fake.chmod(0o755)
    env = {
        "PATH": "/usr/bin:/bin",
        "KAFKA_ADMIN_BOOTSTRAP": "kafka-1:19092",
        "KAFKA_BIN": str(tmp_path),
        "ACLS_LOG": str(log),
        "ATMP_SITES": sites,
    }
    done = subprocess.run(
        [bash, str(DEPLOY / "kafka" / "acls.sh"), *args], env=env, capture_output=True, text=True, check=False
    )
    return done, log.read_text() if log.exists() else ""


@pytest.mark.parametrize(
    "site",
    [
        "atmp",
        "atmpnet",
        "atmpnet-processor",
        "mm2-offset-syncs",
        "_schemas",
        "__consumer",
        "admin",
        "schema-registry",
        "mirror",
        "Site-A",
        "site.a",
        "site a",
        "site-*",
        "-site",
        "",
        "a" * 64,
    ],
)
def test_acls_refuse_a_reserved_or_malformed_site_id_before_granting_anything(
    tmp_path: Path, site: str
) -> None:
    # "atmp" would get prefix rights over "atmp." (every central topic), "admin" the super user's name
    if site.strip() and " " not in site:  # ATMP_SITES is split on blanks
        done, granted = _run_acls(tmp_path, "central", sites=f"site-a {site}")
        assert done.returncode != 0, done.stdout
        assert f"site id '{site}'" in done.stderr
        assert granted == "", "no ACL is added when any site id is refused"
    done, granted = _run_acls(tmp_path, "site", site)
    assert done.returncode != 0
    assert "site id" in done.stderr
    assert granted == ""


def test_acls_grant_valid_site_ids_their_own_prefix(tmp_path: Path) -> None:
    done, granted = _run_acls(tmp_path, "central", sites="site-a 7-north")
    assert done.returncode == 0, done.stderr
    assert "--resource-pattern-type prefixed --topic site-a." in granted
    assert "--resource-pattern-type prefixed --topic 7-north." in granted
    done, granted = _run_acls(tmp_path, "site", "site-a")
    assert done.returncode == 0, done.stderr
    assert "User:site-a" in granted


def test_topics_script_creates_the_contract_topics() -> None:
    script = (DEPLOY / "kafka" / "topics.sh").read_text()
    listed = set(re.findall(r"\batmp\.[a-z-]+\.v\d+\b", script))
    assert listed == EVENT_TOPICS | DERIVED_TOPICS


# --- ClickHouse users ---


def test_clickhouse_has_a_writer_and_a_read_only_reader() -> None:
    root = ET.parse(DEPLOY / "clickhouse/users.d/atmpnet.xml").getroot()
    users = root.find("users")
    assert users is not None
    writer, reader = users.find("atmpnet_writer"), users.find("atmpnet_reader")
    assert writer is not None and reader is not None
    default = users.find("default")
    assert default is not None and default.find("password") is not None, "the built-in user has a password"
    profile = root.find(f"profiles/{reader.findtext('profile')}")
    assert profile is not None and profile.findtext("readonly") in {"1", "2"}
    reader_grants = [q.text or "" for q in reader.iter("query")]
    assert reader_grants and all(
        re.match(r"GRANT (SELECT|SHOW)(, (SELECT|SHOW))* ON atmpnet\.\*$", g) for g in reader_grants
    )
    writer_grants = " ".join(q.text or "" for q in writer.iter("query"))
    assert "INSERT" in writer_grants and "CREATE TABLE" in writer_grants
    clickhouse_env = environment(services()["clickhouse"])
    config = ET.parse(DEPLOY / "clickhouse/config.d/atmpnet.xml").getroot()
    for element in [*root.iter("password"), *config.iter("secret")]:
        assert element.get("from_env") in clickhouse_env, f"{element.get('from_env')} not given to clickhouse"
    assert clickhouse_env["CLICKHOUSE_SKIP_USER_SETUP"] == "1"
    assert environment(services()["processor"])["ATMPNET_CLICKHOUSE_USER"] == "atmpnet_writer"
    datasource = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/clickhouse.yaml").read_text())
    assert datasource["datasources"][0]["jsonData"]["username"] == "atmpnet_reader"


# --- Grafana and the collector ---


def datasource() -> dict[str, Any]:
    loaded = yaml.safe_load((DEPLOY / "grafana/provisioning/datasources/clickhouse.yaml").read_text())
    (source,) = loaded["datasources"]
    assert isinstance(source, dict)
    return source


def dashboards() -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted((DEPLOY / "grafana/dashboards").glob("*.json"))}


def dashboard_queries() -> Iterator[tuple[str, str, str]]:
    for name, board in dashboards().items():
        for variable in board.get("templating", {}).get("list", []):
            yield name, f"variable {variable['name']}", variable["query"]
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                yield name, panel["title"], target["rawSql"]


def test_grafana_provisions_the_datasource_and_four_dashboards() -> None:
    source = datasource()
    grafana = services()["grafana"]
    assert source["type"] in environment(grafana)["GF_INSTALL_PLUGINS"]
    assert source["jsonData"]["host"] == "clickhouse"
    assert (
        source["jsonData"]["defaultDatabase"]
        == environment(services()["processor"])["ATMPNET_CLICKHOUSE_DATABASE"]
    )
    assert source["secureJsonData"]["password"].lstrip("$") in environment(grafana)
    provider = yaml.safe_load((DEPLOY / "grafana/provisioning/dashboards/atmpnet.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    assert f"./grafana/dashboards:{path}:ro" in grafana["volumes"]
    boards = dashboards()
    assert set(boards) == {"capacity", "deviation-triage", "configuration-drift", "comparative-performance"}
    assert len({b["uid"] for b in boards.values()}) == 4
    for board in boards.values():
        assert board["panels"]
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] == source["uid"], panel["title"]
            assert all(t["datasource"]["uid"] == source["uid"] for t in panel["targets"])


def migration_tables() -> dict[str, set[str]]:
    """Every table and view the migrations create, with its columns (parsed, not executed)."""
    tables: dict[str, set[str]] = {}
    for migration in load_migrations():
        for statement in migration.statements():
            table = re.match(r"CREATE TABLE IF NOT EXISTS (\w+)\s*\((.*)\)\s*ENGINE", statement, re.S)
            if table:
                columns = re.findall(r"^\s*`?(\w+)`?\s+[A-Z]", table[2], re.M)
                tables[table[1]] = set(columns)
                continue
            view = re.match(
                r"CREATE VIEW IF NOT EXISTS (\w+) AS\s+SELECT \* EXCEPT \(([^)]*)\) FROM (\w+)", statement
            )
            if view:
                tables[view[1]] = tables[view[3]] - {c.strip() for c in view[2].split(",")}
    return tables


def test_dashboard_sql_names_tables_and_columns_of_the_migrations() -> None:
    tables = migration_tables()
    assert {"capacity_lanes", "deviation_triage", "drift_modules", "performance"} <= set(tables)
    keywords = {
        "select", "from", "where", "and", "or", "not", "in", "is", "null", "as", "group", "by", "order",
        "desc", "asc", "distinct", "interval", "day", "limit",
    }  # fmt: skip
    for board, title, sql in dashboard_queries():
        named = re.findall(r"\b(?:FROM|JOIN)\s+(\w+)", sql, re.I)
        assert named, f"{board}/{title}: no table"
        for table in named:
            assert table in tables, f"{board}/{title}: no table or view {table!r} in the migrations"
        columns = set().union(*(tables[t] for t in named))
        stripped = re.sub(r"'[^']*'|\$\{[^}]*\}|\$__\w+", " ", sql)
        aliases = set(re.findall(r"\bAS\s+(\w+)", stripped, re.I))
        for word in re.findall(r"\b([a-z_][a-z0-9_]*)\b(?!\s*\()", stripped):
            if word in keywords or word in aliases or word in tables:
                continue
            assert word in columns, f"{board}/{title}: column {word!r} is in none of {named}"


def test_collector_pipelines_use_defined_components() -> None:
    config = yaml.safe_load((DEPLOY / "otel/collector.yaml").read_text())
    for pipeline in config["service"]["pipelines"].values():
        for kind in ("receivers", "processors", "exporters"):
            for component in pipeline.get(kind, []):
                assert component in config[kind], f"{component} is not defined under {kind}"
    collector = services()["otel-collector"]
    assert any(v.startswith("./otel/collector.yaml:") for v in collector["volumes"])
    port = config["exporters"]["prometheus"]["endpoint"].rsplit(":", 1)[1]
    assert any(p.endswith(f":{port}") for p in collector["ports"])


# --- the dashboards' SQL runs on ClickHouse with the migrations applied ---


def grafana_macros(sql: str) -> str:
    """What the Grafana ClickHouse plugin substitutes before a query reaches the server."""
    sql = re.sub(r"\$__timeFilter\((\w+)\)", r"(\1 >= now() - INTERVAL 30 DAY AND \1 <= now())", sql)
    sql = sql.replace("${site:singlequote}", "'site-a', 'site-b'")
    return sql.replace("$__fromTime", "now() - INTERVAL 30 DAY").replace("$__toTime", "now()")


@pytest.mark.integration
def test_dashboard_sql_runs_on_the_migrated_warehouse(clickhouse: Any) -> None:
    from atmpnet.warehouse.migrations import apply_migrations

    apply_migrations(clickhouse)
    for board, title, sql in dashboard_queries():
        try:
            clickhouse.query(grafana_macros(sql))
        except Exception as exc:
            pytest.fail(f"{board}/{title}: {exc}\n{sql}")
