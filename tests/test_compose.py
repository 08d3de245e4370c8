"""compose.yaml runs PostgreSQL and two PromptProxy replicas behind nginx. No Docker
engine runs here, so the file is read with PyYAML, its variables are filled in by
compose's rules (`${VAR}`, `${VAR:-default}`, `${VAR:?error}`), and what it says is
checked against the Dockerfile, PromptProxy's settings and deploy/nginx.conf."""

import re
import subprocess
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography.fernet import Fernet

from promptproxy import config
from promptproxy.data import crypto

from .servers import ROOT, dockerfile_env, instruction

COMPOSE = ROOT / "compose.yaml"
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
README = ROOT / "README.md"
REQUIRED = ("PROMPTPROXY_SECRET_KEY", "PROMPTPROXY_ENCRYPTION_KEY", "POSTGRES_PASSWORD")
# Read outside config.DEFAULTS: the database URL where the storage is chosen, the secrets
# by config.load_secrets.
READ_ELSEWHERE = {"DATABASE_URL", "SECRET_KEY", "ENCRYPTION_KEY"}
ENV = {"PROMPTPROXY_SECRET_KEY": "s" * 64, "PROMPTPROXY_ENCRYPTION_KEY": crypto.new_key(),
       "POSTGRES_PASSWORD": "pg-Password_1"}
VARIABLE = re.compile(r"\$\{(\w+)(?::?([?-])([^}]*))?\}")


class Missing(Exception):
    """A `${VAR:?message}` whose variable is not set: compose stops with the message."""


def interpolate(node, environ):
    """`node` with compose's variables filled in from `environ`."""
    if isinstance(node, dict):
        return {key: interpolate(value, environ) for key, value in node.items()}
    if isinstance(node, list):
        return [interpolate(value, environ) for value in node]
    if not isinstance(node, str):
        return node

    def value(match):
        name, operator, argument = match.groups()
        if environ.get(name):
            return environ[name]
        if operator == "?":
            raise Missing(f"{name}: {argument}")
        return argument if operator == "-" else ""
    return VARIABLE.sub(value, node)


def compose(environ=ENV):
    return interpolate(yaml.safe_load(COMPOSE.read_text()), environ)


def replicas(services):
    """The services built from this repository's Dockerfile."""
    return {name: service for name, service in services.items() if service.get("build") in (".", {"context": "."})}


def environment(service):
    env = service.get("environment", {})
    return env if isinstance(env, dict) else dict(item.split("=", 1) for item in env)


def nginx(text):
    """nginx's configuration as [(directive, [arguments], children or None)]."""
    tokens = re.findall(r'"[^"]*"|[{};]|[^\s{};"]+', re.sub(r"#[^\n]*", "", text))

    def block(i):
        items, words = [], []
        while i < len(tokens):
            token, i = tokens[i], i + 1
            if token == ";":
                items.append((words[0], words[1:], None))
                words = []
            elif token == "{":
                children, i = block(i)
                items.append((words[0], words[1:], children))
                words = []
            elif token == "}":
                return items, i
            else:
                words.append(token.strip('"'))
        assert words == [], f"unfinished directive {words}"
        return items, i
    return block(0)[0]


def directives(items, name):
    """The arguments of every `name` directive, at any depth."""
    found = []
    for directive, arguments, children in items:
        if directive == name:
            found.append(arguments)
        if children:
            found += directives(children, name)
    return found


def seconds(duration):
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", duration).groups()
    return int(number) * {"ms": 0.001, "s": 1, None: 1, "m": 60, "h": 3600}[unit]


def test_two_promptproxy_replicas_share_one_postgresql_database():
    services = compose()["services"]
    assert set(services) == {"postgres", "promptproxy-1", "promptproxy-2", "nginx"}
    built = replicas(services)
    assert sorted(built) == ["promptproxy-1", "promptproxy-2"]

    postgres = services["postgres"]
    assert re.fullmatch(r"postgres:\d+(\.\d+)?(-\w+)?", postgres["image"])  # the official image
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    volume, _, path = postgres["volumes"][0].partition(":")
    assert volume in compose()["volumes"] and path == "/var/lib/postgresql/data"
    pg = environment(postgres)

    data_dir = dockerfile_env()["PROMPTPROXY_DATA_DIR"]
    urls, data_volumes = set(), set()
    for name, service in built.items():
        env = environment(service)
        url = urlsplit(env["PROMPTPROXY_DATABASE_URL"])
        assert (url.scheme, url.hostname, url.port) == ("postgresql", "postgres", 5432), name
        assert (url.username, url.password, url.path) == (
            pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], "/" + pg["POSTGRES_DB"]), name
        urls.add(url.geturl())
        assert service["depends_on"]["postgres"] == {"condition": "service_healthy"}, name
        assert env["PROMPTPROXY_TRUSTED_PROXIES"] == "1", name  # nginx, one hop
        assert "ports" not in service, name  # reached through nginx only
        (volume,) = service["volumes"]
        name_, _, path = volume.partition(":")
        assert path == data_dir and name_ in compose()["volumes"]
        data_volumes.add(name_)
    assert len(urls) == 1  # one database
    assert len(data_volumes) == 2  # a data dir each

    proxy = services["nginx"]
    assert proxy["image"].startswith("nginx:")
    assert "./deploy/nginx.conf:/etc/nginx/conf.d/default.conf:ro" in proxy["volumes"]
    assert set(proxy["depends_on"]) == set(built)
    assert [port.split(":")[-1] for port in proxy["ports"]] == ["80"]


@pytest.mark.parametrize("missing", REQUIRED)
def test_compose_refuses_to_start_without_each_shared_secret(missing):
    environ = {name: value for name, value in ENV.items() if name != missing}
    with pytest.raises(Missing, match=f"^{missing}: set {missing} in .env"):
        compose(environ)


def test_every_replica_gets_the_same_secrets_from_the_environment():
    raw = yaml.safe_load(COMPOSE.read_text())["services"]
    built = replicas(compose()["services"])
    for name in built:
        for secret in ("PROMPTPROXY_SECRET_KEY", "PROMPTPROXY_ENCRYPTION_KEY"):
            assert raw[name]["environment"][secret].startswith(f"${{{secret}:?"), name  # required, no default
            assert environment(built[name])[secret] == ENV[secret]


def test_compose_sets_only_real_settings():
    names = set(re.findall(r"\bPROMPTPROXY_(\w+)", COMPOSE.read_text()))
    assert {"DATABASE_URL", "SECRET_KEY", "ENCRYPTION_KEY", "TRUSTED_PROXIES"} <= names
    assert names - set(config.DEFAULTS) - READ_ELSEWHERE == set()
    for service in replicas(compose()["services"]).values():
        assert all(name.startswith("PROMPTPROXY_") for name in environment(service))


def test_nginx_balances_both_replicas_and_passes_streams_unbuffered():
    conf = nginx(NGINX_CONF.read_text())
    (port,) = instruction("EXPOSE")
    (upstream,) = [(arguments, children) for directive, arguments, children in conf if directive == "upstream"]
    (name,), servers = upstream
    assert sorted(arguments[0] for arguments in directives(servers, "server")) == [
        f"{replica}:{port}" for replica in sorted(replicas(compose()["services"]))]
    assert directives(conf, "proxy_pass") == [[f"http://{name}"]]
    assert directives(conf, "proxy_buffering") == [["off"]]
    assert directives(conf, "proxy_request_buffering") == [["off"]]
    assert seconds(directives(conf, "proxy_read_timeout")[0][0]) >= 300
    headers = {arguments[0]: arguments[1] for arguments in directives(conf, "proxy_set_header")}
    assert headers["X-Forwarded-For"] == "$proxy_add_x_forwarded_for"
    assert headers["X-Forwarded-Proto"] == "$scheme"
    (body_size,) = directives(conf, "client_max_body_size")
    assert int(body_size[0].rstrip("m")) * 1024 * 1024 > config.DEFAULTS["MAX_BODY_BYTES"]
    assert ["non_idempotent"] not in [[a] for args in directives(conf, "proxy_next_upstream") for a in args]


def test_the_readme_makes_secrets_that_compose_and_promptproxy_accept(tmp_path):
    text = README.read_text()
    section = text[text.index("\n## Several instances\n"):]
    section = section[:section.index("\n## ", 1)]
    commands = [line for line in section.splitlines() if line.startswith("python3 -c ")]
    assert len(commands) == 3
    for command in commands:
        subprocess.run(command, shell=True, cwd=tmp_path, check=True, timeout=30)
    made = dict(line.split("=", 1) for line in (tmp_path / ".env").read_text().splitlines())
    assert sorted(made) == sorted(REQUIRED)

    fernet = Fernet(made["PROMPTPROXY_ENCRYPTION_KEY"])  # what crypto.init makes of it
    assert fernet.decrypt(fernet.encrypt(b"sk-upstream")) == b"sk-upstream"
    assert len(made["PROMPTPROXY_SECRET_KEY"]) >= 64
    for service in replicas(compose(made)["services"]).values():  # the password survives the URL
        assert urlsplit(environment(service)["PROMPTPROXY_DATABASE_URL"]).password == made["POSTGRES_PASSWORD"]
    assert "docker compose up" in section
