"""Unit tests for barrel's declared settings (gunicorn_barrel.config.settings).

Every test passes an explicit ``environ`` mapping; os.environ is never read or changed.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from gunicorn_barrel.config import arguments, settings
from gunicorn_barrel.config.settings import SettingsError, resolve

NAMES = (
    "runtime_dir", "max_frame_size", "websocket_deflate", "websocket_deflate_min_size",
    "gap_timeout", "max_unacked", "recovery_max_disconnection", "recovery_max_packets",
    "client_queue_limit", "slow_client_policy", "store", "store_path", "store_durability",
    "store_timeout", "store_max_value", "restart_delay", "bus", "bus_namespace",
    "federation_listen", "federation_peers", "federation_keys", "federation_queue_limit",
    "federation_worker_wait", "metrics_path", "metrics_listen", "statsd_interval",
)
KNOWN_LIST = "known settings: " + ", ".join(sorted(NAMES))


@pytest.fixture
def short_dir() -> Iterator[str]:
    """An existing absolute directory short enough for runtime_dir (<= 60 bytes)."""
    base = "/tmp" if os.path.isdir("/tmp") else tempfile.gettempdir()
    path = tempfile.mkdtemp(prefix="brl-", dir=base)
    assert len(path.encode()) <= 60, path
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _env(name: str) -> str:
    return "BARREL_" + name.upper()


# --------------------------------------------------------------------------- defaults


def test_declared_settings_match_the_dataclass() -> None:
    assert tuple(s.name for s in settings.SETTINGS) == NAMES
    assert tuple(settings.BarrelSettings.__dataclass_fields__) == NAMES


def test_defaults() -> None:
    resolved = resolve(None, environ={})
    assert resolved == settings.BarrelSettings(
        runtime_dir=tempfile.gettempdir(),
        max_frame_size=1024 * 1024,
        websocket_deflate=False,
        websocket_deflate_min_size=1024,
        gap_timeout=5.0,
        max_unacked=100_000,
        recovery_max_disconnection=120.0,
        recovery_max_packets=10_000,
        client_queue_limit=1000,
        slow_client_policy="disconnect",
        store="embedded",
        store_path=os.path.abspath("barrel-store.sqlite3"),
        store_durability="process",
        store_timeout=5.0,
        store_max_value=64 * 1024,
        restart_delay=0.1,
        bus="zmq",
        bus_namespace="",
        federation_listen="",
        federation_peers="",
        federation_keys="",
        federation_queue_limit=100_000,
        federation_worker_wait=2.0,
        metrics_path="",
        metrics_listen="",
        statsd_interval=10.0,
    )
    assert resolve({}, environ={}) == resolved


def test_unrelated_environment_variables_are_ignored() -> None:
    environ = {"PATH": "/bin", "BARRELS": "x", "barrel_max_frame_size": "nonsense", "XBARREL_FOO": "1"}
    assert resolve(environ=environ) == resolve(environ={})


@pytest.mark.parametrize("name", NAMES)
def test_env_var_names(name: str) -> None:
    (setting,) = [s for s in settings.SETTINGS if s.name == name]
    assert setting.env == _env(name)


# --------------------------------------------------------------------------- valid values

VALID: list[tuple[str, object, object]] = [
    ("max_frame_size", 1024, 1024),
    ("max_frame_size", 256 * 1024 * 1024, 256 * 1024 * 1024),
    ("max_frame_size", "4096", 4096),
    ("max_frame_size", " 2048 ", 2048),
    ("websocket_deflate", True, True),
    ("websocket_deflate", False, False),
    ("websocket_deflate", "1", True),
    ("websocket_deflate", "true", True),
    ("websocket_deflate", "Yes", True),
    ("websocket_deflate", " ON ", True),
    ("websocket_deflate", "0", False),
    ("websocket_deflate", "FALSE", False),
    ("websocket_deflate", "no", False),
    ("websocket_deflate", "off", False),
    ("restart_delay", 0, 0.0),
    ("restart_delay", 10, 10.0),
    ("restart_delay", "0.5", 0.5),
    ("restart_delay", 2.25, 2.25),
    ("bus", "zmq", "zmq"),
    ("bus", " redis://127.0.0.1:6379/0 ", "redis://127.0.0.1:6379/0"),
    ("bus", "redis://redis.internal", "redis://redis.internal"),
    ("bus", "rediss://user:pw@[::1]:6380/2", "rediss://user:pw@[::1]:6380/2"),
    ("bus", "unix:///run/redis.sock?db=1", "unix:///run/redis.sock?db=1"),
    ("bus_namespace", "chat-prod_2.eu", "chat-prod_2.eu"),
    ("bus_namespace", "", ""),
    ("metrics_path", "/metrics", "/metrics"),
    ("metrics_path", " /internal/prom ", "/internal/prom"),
    ("metrics_path", "", ""),
    ("metrics_listen", "127.0.0.1:9200", "127.0.0.1:9200"),
    ("metrics_listen", "[::1]:9200", "[::1]:9200"),
    ("metrics_listen", "", ""),
    ("statsd_interval", "0.5", 0.5),
]


@pytest.mark.parametrize(("name", "raw", "expected"), VALID)
def test_valid_value_from_config(name: str, raw: object, expected: object) -> None:
    value = getattr(resolve({name: raw}, environ={}), name)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(("name", "raw", "expected"), VALID)
def test_valid_value_from_env(name: str, raw: object, expected: object) -> None:
    value = getattr(resolve(environ={_env(name): str(raw)}), name)
    assert value == expected
    assert type(value) is type(expected)


def test_runtime_dir_from_config_and_env(short_dir: str) -> None:
    assert resolve({"runtime_dir": short_dir}, environ={}).runtime_dir == short_dir
    assert resolve(environ={"BARREL_RUNTIME_DIR": short_dir}).runtime_dir == short_dir
    assert resolve({"runtime_dir": "/"}, environ={}).runtime_dir == "/"


def test_runtime_dir_of_exactly_60_bytes_is_accepted(short_dir: str) -> None:
    path = short_dir + "/" + "d" * (60 - len(short_dir.encode()) - 1)
    os.mkdir(path)
    assert len(path.encode()) == 60
    assert resolve({"runtime_dir": path}, environ={}).runtime_dir == path


def test_all_settings_together(short_dir: str) -> None:
    resolved = resolve(
        {"runtime_dir": short_dir, "max_frame_size": 2048, "gap_timeout": 2, "max_unacked": 500},
        environ={"BARREL_WEBSOCKET_DEFLATE": "on", "BARREL_RESTART_DELAY": "1.5",
                 "BARREL_CLIENT_QUEUE_LIMIT": "50", "BARREL_SLOW_CLIENT_POLICY": "Drop_Oldest"},
    )
    assert resolved == dataclasses.replace(
        resolve(environ={}), runtime_dir=short_dir, max_frame_size=2048, websocket_deflate=True,
        gap_timeout=2.0, max_unacked=500, client_queue_limit=50, slow_client_policy="drop_oldest",
        restart_delay=1.5,
    )


# --------------------------------------------------------------------------- precedence


def test_env_wins_over_config() -> None:
    resolved = resolve(
        {"max_frame_size": 2048, "websocket_deflate": True},
        environ={"BARREL_MAX_FRAME_SIZE": "4096", "BARREL_WEBSOCKET_DEFLATE": "off"},
    )
    assert resolved.max_frame_size == 4096
    assert resolved.websocket_deflate is False


def test_config_wins_over_default_when_env_is_silent() -> None:
    resolved = resolve({"max_frame_size": 2048}, environ={"BARREL_RESTART_DELAY": "2"})
    assert resolved.max_frame_size == 2048
    assert resolved.restart_delay == 2.0


def test_resolve_does_not_mutate_its_inputs() -> None:
    overrides = {"max_frame_size": 2048}
    environ = {"BARREL_RESTART_DELAY": "2"}
    resolve(overrides, environ=environ)
    assert overrides == {"max_frame_size": 2048}
    assert environ == {"BARREL_RESTART_DELAY": "2"}


# --------------------------------------------------------------------------- unknown names


def test_unknown_name_in_config() -> None:
    with pytest.raises(SettingsError) as info:
        resolve({"max_frame_sise": 2048}, environ={})
    message = str(info.value)
    assert "'max_frame_sise'" in message
    assert "config file" in message
    assert KNOWN_LIST in message


def test_config_names_are_case_sensitive() -> None:
    with pytest.raises(SettingsError, match="unknown barrel setting 'MAX_FRAME_SIZE'"):
        resolve({"MAX_FRAME_SIZE": 2048}, environ={})


def test_unknown_barrel_env_var() -> None:
    with pytest.raises(SettingsError) as info:
        resolve(environ={"BARREL_DEFLATE": "on"})
    message = str(info.value)
    assert "'deflate'" in message
    assert "environment variable BARREL_DEFLATE" in message
    assert KNOWN_LIST in message


def test_lower_case_env_var_is_refused_naming_the_variable_to_set() -> None:
    with pytest.raises(SettingsError) as info:
        resolve(environ={"BARREL_max_frame_size": "4096"})
    assert str(info.value) == ("environment variable BARREL_max_frame_size is not read: barrel's "
                               "variables are upper case (BARREL_MAX_FRAME_SIZE)")


# --------------------------------------------------------------------------- bad values

BAD: list[tuple[str, object, str]] = [
    ("store", "memcached://x", "expected 'embedded', 'none' or a redis:// URL"),
    ("store_durability", "disk", "expected one of process, power"),
    ("store_max_value", 1, "must be between 16 and"),
    ("slow_client_policy", "kick", "expected one of disconnect, drop_oldest, got 'kick'"),
    ("gap_timeout", "0", "must be between 0.1 and 60.0"),
    ("client_queue_limit", "5", "must be between 10 and 1000000, got 5"),
    ("max_frame_size", "abc", "expected an integer, got 'abc'"),
    ("max_frame_size", "1.5", "expected an integer"),
    ("max_frame_size", "", "expected an integer"),
    ("max_frame_size", 1023, "must be between 1024 and 268435456, got 1023"),
    ("max_frame_size", 256 * 1024 * 1024 + 1, "must be between 1024 and 268435456"),
    ("max_frame_size", -5, "must be between"),
    ("websocket_deflate", "maybe", "expected on/off, true/false, yes/no or 1/0, got 'maybe'"),
    ("websocket_deflate", "2", "expected on/off"),
    ("websocket_deflate", "", "expected on/off"),
    ("restart_delay", "fast", "expected a number, got 'fast'"),
    ("restart_delay", -0.1, "must be between 0.0 and 10.0, got -0.1"),
    ("restart_delay", "10.5", "must be between 0.0 and 10.0"),
    ("restart_delay", "nan", "must be between"),
    ("restart_delay", "inf", "must be between"),
    ("runtime_dir", "relative/dir", "must be an absolute path, got 'relative/dir'"),
    ("runtime_dir", "", "must be an absolute path"),
    ("runtime_dir", "/no/such/barrel/dir", "directory '/no/such/barrel/dir' does not exist"),
    ("bus", "kafka", "expected 'zmq' or a redis://, rediss://, unix://, redis+sentinel:// or "
                     "redis+cluster:// URL, got 'kafka'"),
    ("bus", "", "expected 'zmq' or a redis://"),
    ("bus", "http://127.0.0.1:6379", "expected a redis://, rediss://, unix://, redis+sentinel:// or "
                                     "redis+cluster:// URL, got"),
    ("bus", "redis://127.0.0.1:port/0", "unparsable Redis URL 'redis://127.0.0.1:port/0'"),
    ("bus", "redis://127.0.0.1:99999/0", "unparsable Redis URL"),
    ("bus", "redis://:pw@/0", "a Redis URL needs a host"),
    ("bus", "redis://h/zero", "the database in a Redis URL is a number"),
    ("bus", "unix://", "a unix:// Redis URL needs a socket path"),
    ("bus", "redis+sentinel://127.0.0.1:26379", "names the master after the Sentinels"),
    ("bus", "redis+sentinel://127.0.0.1:26379/", "names the master after the Sentinels"),
    ("bus", "redis+sentinel://127.0.0.1/mymaster", "each server is host:port"),
    ("bus", "redis+sentinel://:s3cret@h:1,h:x/m", "got 'h:x' in 'redis+sentinel://:***@h:1,h:x/m'"),
    ("bus", "redis+sentinel://h:26379/m/zero", "the database in a Redis URL is a number"),
    ("bus", "redis+sentinel://h:26379/m?password=x", "takes no query"),
    ("store", "redis+sentinel://h:26379", "names the master after the Sentinels"),
    ("bus", "redis+cluster://h1:7000,h2",
     "each server is host:port (redis+cluster://h1:7000,h2:7001), got 'h2'"),
    ("bus", "redis+cluster://h1:7000/0", "names nodes only (a cluster has one database)"),
    ("store", "redis+cluster://:pw@h1:7000?x=1", "names nodes only"),
    ("bus_namespace", "a:b", "expected up to 64 letters, digits"),
    ("bus_namespace", "x" * 65, "expected up to 64 letters"),
    ("metrics_path", "metrics", "expected a path such as /metrics"),
    ("metrics_path", "/", "expected a path such as /metrics"),
    ("metrics_path", "/m?x=1", "expected a path such as /metrics"),
    ("metrics_listen", "9200", "expected HOST:PORT"),
    ("metrics_listen", "127.0.0.1:99999", "expected HOST:PORT"),
    ("metrics_listen", ":9200", "expected HOST:PORT"),
    ("statsd_interval", "0", "must be between 0.1 and 3600.0"),
]


@pytest.mark.parametrize(("name", "raw", "reason"), BAD)
def test_bad_value_from_config(name: str, raw: object, reason: str) -> None:
    with pytest.raises(SettingsError) as info:
        resolve({name: raw}, environ={})
    assert str(info.value).startswith(f"invalid barrel setting {name} (config file): ")
    assert reason in str(info.value)


@pytest.mark.parametrize(("name", "raw", "reason"), BAD)
def test_bad_value_from_env(name: str, raw: object, reason: str) -> None:
    with pytest.raises(SettingsError) as info:
        resolve(environ={_env(name): str(raw)})
    assert str(info.value).startswith(f"invalid barrel setting {name} ({_env(name)}): ")
    assert reason in str(info.value)


@pytest.mark.parametrize("name", ["max_frame_size", "restart_delay"])
def test_booleans_are_not_numbers(name: str) -> None:
    with pytest.raises(SettingsError, match=f"invalid barrel setting {name} \\(config file\\): expected a"):
        resolve({name: True}, environ={})


def test_runtime_dir_that_is_a_file(short_dir: str) -> None:
    path = os.path.join(short_dir, "f")
    Path(path).write_text("")
    with pytest.raises(SettingsError, match="runtime_dir .*does not exist"):
        resolve({"runtime_dir": path}, environ={})


def test_runtime_dir_too_long_for_unix_sockets(tmp_path: Path) -> None:
    path = tmp_path
    while len(str(path).encode()) <= 60:
        path = path / "longer-directory-name"
    path.mkdir(parents=True, exist_ok=True)
    with pytest.raises(SettingsError) as info:
        resolve(environ={"BARREL_RUNTIME_DIR": str(path)})
    message = str(info.value)
    assert message.startswith("invalid barrel setting runtime_dir (BARREL_RUNTIME_DIR): ")
    assert "path too long for unix sockets (max 60 bytes)" in message
    assert str(path) in message


def test_bad_env_value_is_reported_even_with_a_good_config_value() -> None:
    with pytest.raises(SettingsError, match="BARREL_MAX_FRAME_SIZE"):
        resolve({"max_frame_size": 2048}, environ={"BARREL_MAX_FRAME_SIZE": "big"})


def test_a_bad_bus_url_does_not_show_its_password() -> None:
    with pytest.raises(SettingsError) as info:
        resolve({"bus": "redis://u:s3cret@h:port/0"}, environ={})
    assert "s3cret" not in str(info.value)
    assert "redis://u:***@h:port/0" in str(info.value)


# --------------------------------------------------------------------------- bus and store


def test_the_store_follows_a_redis_bus_by_default() -> None:
    url = "redis://127.0.0.1:6379/3"
    assert resolve({"bus": url}, environ={}).store == url
    assert resolve(environ={"BARREL_BUS": url}).store == url
    assert resolve({"bus": "zmq"}, environ={}).store == "embedded"


def test_an_explicit_store_wins_over_the_bus() -> None:
    bus = "redis://127.0.0.1:6379/0"
    assert resolve({"bus": bus, "store": "none"}, environ={}).store == "none"
    assert resolve({"bus": bus}, environ={"BARREL_STORE": "redis://other/1"}).store == "redis://other/1"


@pytest.mark.parametrize("where", ["config", "env"])
def test_embedded_store_with_a_redis_bus_is_refused(where: str) -> None:
    overrides: dict[str, object] = {"bus": "redis://:pw@127.0.0.1:6379/0"}
    environ = {}
    if where == "config":
        overrides["store"] = "embedded"
    else:
        environ["BARREL_STORE"] = "embedded"
    with pytest.raises(SettingsError) as info:
        resolve(overrides, environ=environ)
    message = str(info.value)
    assert "store='embedded'" in message and "bus='redis://:***@127.0.0.1:6379/0'" in message
    assert "the embedded store needs the zmq bus" in message


def test_settings_error_is_a_value_error() -> None:
    assert issubclass(SettingsError, ValueError)


# --------------------------------------------------------------------------- reference


def test_reference_table_documents_every_setting() -> None:
    table = settings.reference_table()
    for setting in settings.SETTINGS:
        assert f"``{setting.name}`` / ``{setting.env}``" in table
        assert setting.doc
        assert f"    {setting.doc}" in table
    assert table.count("``BARREL_") == len(settings.SETTINGS)


def test_readme_settings_list_is_the_generated_one() -> None:
    # From the first setting's entry to the next section heading: nothing more, nothing less.
    readme = (Path(__file__).resolve().parent.parent / "README.rst").read_text()
    start = readme.index(f"``{settings.SETTINGS[0].name}`` / ")
    heading = re.compile(r"\n[^\n]+\n-{3,}\n").search(readme, start)
    assert heading is not None
    assert readme[start:heading.start()].strip() == settings.reference_table().strip(), (
        "README.rst's settings list differs from `python -m gunicorn_barrel.config.settings`")


def test_the_reference_says_which_settings_a_reload_cannot_change() -> None:
    table = settings.reference_table()
    for setting in settings.SETTINGS:
        entry = table.split(f"``{setting.name}`` / ", 1)[1].split("\n\n", 1)[0]
        assert ("Fixed at start" in entry) == setting.fixed_at_start, setting.name


# --------------------------------------------------------------------------- federation


@pytest.mark.parametrize("name, value", [
    ("federation_listen", "127.0.0.1:7000"),
    ("federation_listen", "tcp://127.0.0.1"),
    ("federation_peers", "tcp://127.0.0.1:7000"),
    ("federation_peers", "b=udp://127.0.0.1:7000"),
    ("federation_keys", "/nonexistent/barrel-keys"),
    ("federation_queue_limit", "10"),
    ("federation_worker_wait", "0"),
])
def test_bad_federation_settings_are_refused_with_their_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=f"invalid barrel setting {name} "):
        resolve({name: value}, environ={})


def _resolve_checked(overrides: dict[str, object], environ: dict[str, str]) -> settings.BarrelSettings:
    """What the arbiter's hooks do at config load: resolve, then check the federation keys."""
    from gunicorn_barrel.federation import keys

    resolved = resolve(overrides, environ=environ)
    keys.check_settings(resolved.federation_keys, resolved.federation_peers)
    return resolved


def test_federation_needs_keys(short_dir: str) -> None:
    from gunicorn_barrel import hooks
    from gunicorn_barrel.federation import keys

    with pytest.raises(SettingsError, match="federation_keys is required"):
        hooks.install({}, federation_listen="tcp://127.0.0.1:7000")
    with pytest.raises(SettingsError, match="federation_keys is required"):
        _resolve_checked({"federation_listen": "tcp://127.0.0.1:7000"}, environ={})
    with pytest.raises(SettingsError, match="federation_keys: .* exactly one"):
        _resolve_checked({"federation_listen": "tcp://127.0.0.1:7000", "federation_keys": short_dir},
                         environ={})
    keys.generate(short_dir, "a")
    keys.generate(os.path.join(short_dir, "other"), "b")
    with pytest.raises(SettingsError, match="no public key for peer 'b'"):
        _resolve_checked({"federation_peers": "b=tcp://10.1.2.3:7000"},
                         environ={"BARREL_FEDERATION_KEYS": short_dir})
    shutil.copy(os.path.join(short_dir, "other", "b.key"), os.path.join(short_dir, "peers", "b.key"))
    resolved = _resolve_checked({"federation_peers": "b=tcp://10.1.2.3:7000"},
                       environ={"BARREL_FEDERATION_KEYS": short_dir})
    assert resolved.federation_keys == short_dir


# --------------------------------------------------------------------------- side processes


def _side_settings(short_dir: str) -> settings.BarrelSettings:
    """Settings with a value other than the default for everything a side process takes."""
    return resolve({
        "max_frame_size": 2 * 1024 * 1024, "store_path": f"{short_dir}/s.sqlite3",
        "store_durability": "power", "store_max_value": 1000,
        "federation_listen": "tcp://127.0.0.1:7000", "federation_peers": "b=tcp://[::1]:7001,c=tcp://h:7002",
        "federation_keys": short_dir, "federation_queue_limit": 500,
        "federation_worker_wait": 7.5, "metrics_listen": "[::1]:9200", "statsd_interval": 2.5,
    }, environ={})


@pytest.mark.parametrize("process, names", [
    (settings.BROADCASTER, {"max_frame_size", "federation_listen", "federation_peers", "federation_keys",
                            "federation_queue_limit", "federation_worker_wait"}),
    (settings.STORE_SERVER, {"max_frame_size", "store_path", "store_durability", "store_max_value"}),
    (settings.EXPORTER, {"metrics_listen", "statsd_interval"}),
])
def test_a_side_process_reads_the_values_the_arbiter_passes(process: str, names: set[str],
                                                           short_dir: str) -> None:
    values = _side_settings(short_dir)
    argv = arguments.instance_args("/run/x", 42) + arguments.command_line(values, process)
    args = arguments.parser("side", process).parse_args(argv)
    assert {name for name in vars(args) if name not in ("runtime_dir", "parent_pid")} == names
    for name in names:
        assert getattr(args, name) == getattr(values, name), name
    assert (args.runtime_dir, args.parent_pid) == ("/run/x", 42)


def test_a_side_process_reads_empty_values_as_off(short_dir: str) -> None:
    values = resolve({}, environ={})
    argv = arguments.instance_args("/run/x", 42) + arguments.command_line(values, settings.BROADCASTER)
    args = arguments.parser("side", settings.BROADCASTER).parse_args(argv)
    assert (args.federation_listen, args.federation_peers, args.federation_keys) == ("", "", "")


def test_a_side_process_refuses_a_bad_value_as_the_setting_does(capsys: pytest.CaptureFixture[str]) -> None:
    parser = arguments.parser("side", settings.STORE_SERVER)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(["--runtime-dir=/r", "--parent-pid=1", "--max-frame-size=2048",
                           "--store-path=/s", "--store-durability=fast", "--store-max-value=100"])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert "argument --store-durability: expected one of process, power, got 'fast'" in error


def test_the_hub_takes_settings_under_short_flags(short_dir: str) -> None:
    parser = argparse.ArgumentParser()
    arguments.add_settings(parser, ["federation_listen", "federation_keys", "max_frame_size"],
                           drop_prefix="federation_", required=["federation_keys"])
    args = parser.parse_args(["--keys", short_dir, "--listen", "tcp://0.0.0.0:7000"])
    assert (args.federation_listen, args.federation_keys) == ("tcp://0.0.0.0:7000", short_dir)
    assert args.max_frame_size == settings.declared("max_frame_size").default()
    with pytest.raises(SystemExit):
        parser.parse_args(["--listen", "tcp://0.0.0.0:7000"])  # --keys is required


@pytest.mark.parametrize("url, shown", [
    ("redis://:secret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
    ("redis://u:secret@h:port/0", "redis://u:***@h:port/0"),  # refused for its port, still masked
    ("rediss://u@h:6380/1?password=secret", "rediss://u@h:6380/1"),
    ("redis://[::1]:6379", "redis://[::1]:6379"),
    ("unix:///run/redis.sock?password=secret", "unix:///run/redis.sock"),
    ("redis://[::1", "<unparsable URL>"),
])
def test_urls_are_shown_without_their_password(url: str, shown: str) -> None:
    from gunicorn_barrel.config.values import safe_url

    assert safe_url(url) == shown
