"""Node configuration: defaults, path resolution and clear errors for bad files."""

from __future__ import annotations

import ast
import datetime as dt
import inspect
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import attrs
import pytest

import trustix_p2p
from tests import factories as f
from trustix_p2p import cli, configdoc
from trustix_p2p import config as config_module
from trustix_p2p.config import (
    FollowEntry,
    MdnsSettings,
    NodeConfig,
    default_config_path,
    field_annotation,
    load_node_config,
)
from trustix_p2p.configfile import check_options, find_problems
from trustix_p2p.errors import ConfigError
from trustix_p2p.keyfile import write_key_file
from trustix_p2p.options import (
    BOOL,
    CHOICE,
    FOLLOW,
    INTEGER,
    MDNS,
    METRICS,
    NUMBER,
    OPTIONS,
    OPTIONS_BY_NAME,
    PATH,
    STRINGS,
    TRANSPORT,
    Option,
)
from trustix_p2p.transport.connection import TransportLimits


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "node.toml"
    p.write_text(text)
    return p


def test_minimal_config_gets_documented_defaults(tmp_path: Path) -> None:
    c = load_node_config(write(tmp_path, 'state_dir = "state"\n'))
    assert c.state_dir == tmp_path / "state"
    assert c.key_file is None
    assert c.socket_path == tmp_path / "state" / "control.sock"
    assert c.spool_path == tmp_path / "state" / "spool"
    assert c.db_path == tmp_path / "state" / "db"
    assert c.checkpoint_interval == 2.0
    assert c.listen == ("127.0.0.1:0",)


def test_every_option_is_read(tmp_path: Path) -> None:
    c = load_node_config(
        write(
            tmp_path,
            """
state_dir = "/var/lib/t"
key_file = "k.key"
control_socket = "/run/t.sock"
spool_dir = "/var/spool/t"
checkpoint_interval = 5
spool_poll_interval = 0.5
listen = ["0.0.0.0:7946", "[::1]:7946"]
seeds = ["ZgN4XXOrNLS3pGWzHRS8Po8ZJxCbchlnbUYJ5GnDCUk=@10.0.0.1:7946", "peer.example:7946"]
max_submit_batch = 100
log_level = "debug"
""",
        )
    )
    assert c.state_dir == Path("/var/lib/t") and c.key_file == tmp_path / "k.key"
    assert c.socket_path == Path("/run/t.sock") and c.spool_path == Path("/var/spool/t")
    assert c.checkpoint_interval == 5.0 and c.spool_poll_interval == 0.5
    assert c.listen == ("0.0.0.0:7946", "[::1]:7946") and c.seeds == (
        "ZgN4XXOrNLS3pGWzHRS8Po8ZJxCbchlnbUYJ5GnDCUk=@10.0.0.1:7946",
        "peer.example:7946",
    )
    assert c.max_submit_batch == 100 and c.log_level == "debug"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "needs 'state_dir'"),
        ('state_dir = "s"\nstate_dri = "x"\n', "unknown configuration option"),
        ("state_dir = 3\n", "wrong type"),
        ('state_dir = "s"\ncheckpoint_interval = 0\n', "checkpoint_interval"),
        ('state_dir = "s"\ncheckpoint_interval = true\n', "wrong type"),
        ('state_dir = "s"\nlisten = [1]\n', "listen"),
        ('state_dir = "s"\nlog_level = "loud"\n', "log_level"),
        # Every address is parsed when the file loads, not when it is first dialled.
        ('state_dir = "s"\nseeds = ["abc@10.0.0.1:7946"]\n', "'seeds'.*pinned key"),
        ('state_dir = "s"\nseeds = ["no port"]\n', "'seeds'.*host:port"),
        ('state_dir = "s"\nseeds = ["h:99999"]\n', "'seeds'.*out of range"),
        ('state_dir = "s"\nseeds = ["h:0"]\n', "'seeds'.*out of range"),
        ('state_dir = "s"\nseeds = ["::1:7946"]\n', "'seeds'.*brackets"),
        ('state_dir = "s"\nlisten = ["127.0.0.1"]\n', "'listen'.*host:port"),
        ('state_dir = "s"\nlisten = ["k@127.0.0.1:1"]\n', "'listen'.*key"),
        ("state_dir = ", "not valid TOML"),
    ],
)
def test_bad_configs_are_refused_with_a_clear_message(
    tmp_path: Path, text: str, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        load_node_config(write(tmp_path, text))


def test_missing_file_and_env_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_node_config(tmp_path / "absent.toml")
    monkeypatch.setenv("TRUSTIX_P2P_CONFIG", str(tmp_path / "x.toml"))
    assert default_config_path() == tmp_path / "x.toml"
    monkeypatch.delenv("TRUSTIX_P2P_CONFIG")
    assert default_config_path() == Path("/etc/trustix-p2p/node.toml")


# --- The option table drives reading, NodeConfig and the docs ------------------------------

NUMERIC = [o for o in OPTIONS if o.kind in (NUMBER, INTEGER)]
OPTIONAL = [o for o in OPTIONS if not o.required]


def check(data: dict[str, object]) -> dict[str, object]:
    return check_options({"state_dir": "s", **data}, "/base")


@pytest.mark.parametrize("option", OPTIONAL, ids=lambda o: o.name)
def test_every_option_is_read_with_its_default(tmp_path: Path, option: Option) -> None:
    assert set(check({})) == set(OPTIONS_BY_NAME)
    assert check({})[option.name] == option.default
    config = load_node_config(write(tmp_path, 'state_dir = "state"\n'))
    assert getattr(config, option.name) == option.default


@pytest.mark.parametrize("option", NUMERIC, ids=lambda o: o.name)
def test_number_bounds_are_inclusive_and_enforced_at_both_ends(option: Option) -> None:
    assert option.minimum is not None and option.maximum is not None
    assert option.minimum <= option.default <= option.maximum  # type: ignore[operator]
    for edge in (option.minimum, option.maximum):
        value = int(edge) if option.kind == INTEGER else float(edge)
        assert check({option.name: value})[option.name] == value
    if option.kind == INTEGER:
        outside = [int(option.minimum) - 1, int(option.maximum) + 1]
    else:
        outside = [
            math.nextafter(option.minimum, -math.inf),
            math.nextafter(option.maximum, math.inf),
            math.nan,
            math.inf,
        ]
    for value in outside:
        with pytest.raises(ConfigError, match=f"'{option.name}': must be between") as info:
            check({option.name: value})
        assert option.bounds_text() in str(info.value)


def test_a_number_may_be_written_as_an_integer_and_is_read_as_a_float() -> None:
    value = check({"checkpoint_interval": 5, "handshake_timeout": 1})
    assert value["checkpoint_interval"] == 5.0 and type(value["checkpoint_interval"]) is float
    assert type(value["handshake_timeout"]) is float


@pytest.mark.parametrize("name", ["listen", "seeds"])
def test_address_lists_hold_at_most_their_max_items(name: str) -> None:
    option = OPTIONS_BY_NAME[name]
    assert option.max_items == 1024
    full = [f"127.0.0.1:{port}" for port in range(1, 1025)]
    assert check({name: full})[name] == tuple(full)
    with pytest.raises(ConfigError, match=f"'{name}': must hold at most 1024 items, not 1025"):
        check({name: [*full, "127.0.0.1:1025"]})


def test_log_level_takes_exactly_its_choices() -> None:
    for level in ("debug", "info", "warning", "error"):
        assert check({"log_level": level})["log_level"] == level
    for level in ("DEBUG", "critical", ""):
        with pytest.raises(ConfigError, match="'log_level': must be one of debug, info"):
            check({"log_level": level})


_GOOD = {PATH: "p", NUMBER: 1.5, INTEGER: 1, CHOICE: "info", STRINGS: ["h:1"], BOOL: False}
_WRONG: dict[str, list[object]] = {
    # A boolean is never a number, nor a float an integer.
    PATH: [1, True, ["p"], {"a": 1}, dt.date(2024, 1, 1)],
    NUMBER: [True, False, "1", [1], {"a": 1}],
    INTEGER: [True, 10.0, "1", [1]],
    CHOICE: [1, True, ["info"]],
    BOOL: [1, 0, "true", ["yes"]],
    STRINGS: ["h:1", 1, {"a": "h:1"}, [1], ["h:1", True]],
    FOLLOW: ["k", 1, {"public_key": "k"}, ["k"]],
    MDNS: [True, "eth0", ["127.0.0.1"]],
    METRICS: [True, "127.0.0.1:9464", ["127.0.0.1:9464"]],
}


@pytest.mark.parametrize(
    ("option", "value"),
    [(o, v) for o in OPTIONS for v in _WRONG[o.kind]],
    ids=lambda x: x.name if isinstance(x, Option) else repr(x),
)
def test_a_value_of_the_wrong_type_is_refused_naming_the_option(
    option: Option, value: object
) -> None:
    with pytest.raises(ConfigError, match=f"option '{option.name}': wrong type: expected"):
        check({option.name: value})


def test_the_wrong_type_message_says_what_was_expected_and_what_was_found() -> None:
    with pytest.raises(ConfigError) as info:
        check({"max_connections": 10.0})
    assert str(info.value) == (
        "configuration option 'max_connections': wrong type: expected an integer, got a float"
    )
    with pytest.raises(ConfigError) as info:
        check({"seeds": ["h:1", "h:2", 3]})
    assert str(info.value).endswith("expected an array of strings, but the 3rd item is an integer")


@pytest.mark.parametrize("value", ["", "a\0b"])
def test_a_path_must_be_a_usable_string(value: str) -> None:
    with pytest.raises(ConfigError, match="'key_file': must not"):
        check({"key_file": value})


def test_paths_are_expanded_and_made_absolute(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/home/u")
    values = check({"key_file": "~/k", "spool_dir": "sp", "control_socket": "/run/c"})
    assert values["state_dir"] == "/base/s" and values["key_file"] == "/home/u/k"
    assert values["spool_dir"] == "/base/sp" and values["control_socket"] == "/run/c"


def test_an_unknown_option_suggests_the_one_meant() -> None:
    with pytest.raises(ConfigError) as info:
        check({"max_conections": 3})
    assert str(info.value) == (
        "configuration option 'max_conections': unknown configuration option; "
        "did you mean 'max_connections'?"
    )


def test_every_problem_is_found_and_the_error_counts_the_rest(tmp_path: Path) -> None:
    data = {"bogus": 1, "checkpoint_interval": 0, "listen": [1], "log_level": "loud"}
    values, problems = find_problems(data, "/base")
    assert [name for name, _ in problems] == [
        "bogus",
        "state_dir",
        "checkpoint_interval",
        "listen",
        "log_level",
    ]
    # The values hold exactly the options that are fine.
    assert set(values) == set(OPTIONS_BY_NAME) - {name for name, _ in problems}
    path = write(tmp_path, 'state_dir = "s"\nbogus = 1\nlog_level = "loud"\n')
    with pytest.raises(ConfigError) as info:
        load_node_config(path)
    assert str(info.value) == (
        "configuration option 'bogus': unknown configuration option (and 1 more problem; "
        f"'trustix-p2p config check {path}' lists them)"
    )


def test_node_config_fields_are_the_table_in_order_with_its_defaults() -> None:
    fields = attrs.fields(NodeConfig)
    assert [f.name for f in fields] == [o.name for o in OPTIONS]
    for field, option in zip(fields, OPTIONS, strict=True):
        expected = attrs.NOTHING if option.required else option.default
        assert field.default == expected, option.name


def test_the_declaration_for_type_checkers_matches_the_table() -> None:
    # NodeConfig's fields are generated at run time; mypy sees `_Options` in config.py's
    # `if TYPE_CHECKING:` block instead.  A row added to the table needs a line there.
    tree = ast.parse(inspect.getsource(config_module))
    (declared,) = [
        node
        for block in tree.body
        if isinstance(block, ast.If) and ast.unparse(block.test) == "TYPE_CHECKING"
        for node in block.body
        if isinstance(node, ast.ClassDef) and node.name == "_Options"
    ]
    lines = [
        (stmt.target.id, ast.unparse(stmt.annotation), stmt.value is not None)
        for stmt in declared.body
        if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
    ]
    assert lines == [(o.name, field_annotation(o), not o.required) for o in OPTIONS]


def test_node_config_keeps_its_keyword_constructor_and_paths(tmp_path: Path) -> None:
    c = NodeConfig(
        state_dir=tmp_path, key_file=tmp_path / "k", control_socket=None, checkpoint_interval=9.0
    )
    assert c.checkpoint_interval == 9.0 and c.key_file == tmp_path / "k"
    assert c.socket_path == tmp_path / "control.sock" and c.db_path == tmp_path / "db"
    assert attrs.evolve(c, spool_dir=tmp_path / "sp").spool_path == tmp_path / "sp"
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        c.state_dir = tmp_path  # type: ignore[misc]
    assert repr(c).startswith("NodeConfig(state_dir=")


def test_the_transport_options_are_exactly_the_transport_limits_with_their_defaults() -> None:
    transport = {o.name: o.default for o in OPTIONS if o.group == TRANSPORT}
    defaults = TransportLimits()
    assert transport == {f.name: getattr(defaults, f.name) for f in attrs.fields(TransportLimits)}
    assert NodeConfig(state_dir=Path("/s")).transport_limits() == defaults


def test_the_transport_options_in_a_file_reach_transport_limits(tmp_path: Path) -> None:
    text = """state_dir = "s"
handshake_timeout = 1.5
idle_timeout = 60
send_timeout = 7.25
max_connections = 1000
max_pending_handshakes = 10
max_connections_per_source = 2
max_message_size = 65536
"""
    limits = load_node_config(write(tmp_path, text)).transport_limits()
    assert limits == TransportLimits(
        handshake_timeout=1.5,
        idle_timeout=60.0,
        send_timeout=7.25,
        max_connections=1000,
        max_pending_handshakes=10,
        max_connections_per_source=2,
        max_message_size=65536,
    )


def test_the_option_table_loads_neither_typing_nor_attrs() -> None:
    # The post-build hook imports it through `configfile` on every build.
    package = os.path.dirname(os.path.dirname(trustix_p2p.__file__ or ""))
    code = (
        f"import sys; sys.path[:0] = [{package!r}]; import trustix_p2p.options; "
        "print(' '.join(sorted(sys.modules)))"
    )
    proc = subprocess.run(
        [sys.executable, "-I", "-S", "-c", code], capture_output=True, text=True, check=True
    )
    loaded = set(proc.stdout.split())
    assert "trustix_p2p.options" in loaded
    assert not {"typing", "attr", "attrs", "pathlib"} & loaded


# --- trustix-p2p config check --------------------------------------------------------------


def run_check(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, list[str], str]:
    status = cli.main(["config", "check", str(path)])
    out, err = capsys.readouterr()
    return status, out.splitlines(), err


def test_config_check_says_ok_for_a_good_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_key_file(tmp_path / "node.key", f.key("config"))
    path = write(tmp_path, 'state_dir = "state"\nkey_file = "node.key"\nmax_connections = 9\n')
    assert run_check(path, capsys) == (0, [f"ok: {path}"], "")


def test_config_check_lists_every_problem_one_line_each(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    key = tmp_path / "loose.key"
    write_key_file(key, f.key("config"))
    key.chmod(0o644)
    path = write(
        tmp_path,
        """key_file = "loose.key"
max_conections = 3
checkpoint_interval = true
max_message_size = 1024
log_level = "loud"
listen = ["0.0.0.0:7946", "127.0.0.1"]
seeds = ["h:99999"]
""",
    )
    status, lines, err = run_check(path, capsys)
    assert status == 2 and err == ""
    prefix = f"{path}: option "
    assert all(line.startswith(prefix) for line in lines), lines
    assert [line[len(prefix) :] for line in lines] == [
        "'max_conections': unknown configuration option; did you mean 'max_connections'?",
        "'state_dir': missing; every configuration needs 'state_dir'",
        "'checkpoint_interval': wrong type: expected a number, got a boolean",
        "'log_level': must be one of debug, info, warning, error, not 'loud'",
        "'max_message_size': must be between 65536 and 67108864 bytes, not 1024",
        "'listen': address '127.0.0.1': expected host:port",
        "'seeds': address 'h:99999': port 99999 out of range",
        f"'key_file': key file {key} has mode 0644 and is accessible by group or others; "
        f"refusing to use it. Fix with: chmod 600 {key}",
    ]


def test_config_check_refuses_a_missing_key_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, 'state_dir = "s"\nkey_file = "absent.key"\n')
    status, lines, _ = run_check(path, capsys)
    assert status == 2
    assert lines == [
        f"{path}: option 'key_file': key file {tmp_path / 'absent.key'} does not exist; "
        f"create one with: trustix-p2p keygen {tmp_path / 'absent.key'}"
    ]


@pytest.mark.parametrize(("text", "message"), [(None, "cannot read"), ("x = ", "not valid TOML")])
def test_config_check_of_an_unreadable_file_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str | None, message: str
) -> None:
    path = tmp_path / "node.toml"
    if text is not None:
        path.write_text(text)
    status, lines, err = run_check(path, capsys)
    assert status == 2 and lines == []
    assert err.startswith("trustix-p2p: error: ") and message in err
    assert err.count("\n") == 1


# --- docs/configuration.md ---------------------------------------------------------------


def test_the_committed_configuration_doc_is_generated_from_the_table() -> None:
    committed = (Path(__file__).parents[1] / "docs" / "configuration.md").read_text()
    assert committed == configdoc.render(), (
        "docs/configuration.md differs from the option table; regenerate it with: "
        f"{configdoc.REGENERATE}"
    )


def test_the_doc_names_every_option_once() -> None:
    text = configdoc.render()
    for option in OPTIONS:
        assert text.count(f"| `{option.name}` |") == 1, option.name


def test_the_example_file_loads_and_its_commented_defaults_are_the_defaults(
    tmp_path: Path,
) -> None:
    example = configdoc.example_toml()
    config = load_node_config(write(tmp_path, example))
    assert config.state_dir == Path("/var/lib/trustix-p2p")
    assert config.key_file == tmp_path / "node.key"
    # Uncommented, every "# name = default" line means exactly the default.
    uncommented = "\n".join(
        line[2:] if re.match(r"# \w+ = ", line) else line for line in example.splitlines()
    )
    assert load_node_config(write(tmp_path, uncommented)) == config
    for option in OPTIONS:
        if option.default is not None:
            assert re.search(f"^(# )?{option.name} = ", example, re.MULTILINE), option.name


KEY_A = "ZgN4XXOrNLS3pGWzHRS8Po8ZJxCbchlnbUYJ5GnDCUk="


def test_follow_tables_and_mdns_are_read_as_records(tmp_path: Path) -> None:
    config = load_node_config(
        write(
            tmp_path,
            'state_dir = "s"\nanti_entropy_interval = 2\nfollow_unknown = "mirror"\n'
            f'[[follow]]\npublic_key = "{KEY_A}"\nname = "alice"\n'
            '[mdns]\nenabled = true\ninterfaces = ["127.0.0.1"]\n',
        )
    )
    assert config.follow == (FollowEntry(KEY_A, "alice", "mirror"),)
    assert config.mdns == MdnsSettings(True, ("127.0.0.1",))
    assert config.anti_entropy_interval == 2.0
    assert config.follow_unknown == "mirror"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[[follow]]\nname = "x"\n', "needs public_key"),
        ('[[follow]]\npublic_key = "abc"\n', "public_key is not valid base64"),
        ('[[follow]]\npublic_key = "AAAA"\n', "3 bytes, not a 32-byte Ed25519 key"),
        (f'[[follow]]\npublic_key = "{KEY_A}"\nmode = "all"\n', "mode must be one of"),
        (f'[[follow]]\npublic_key = "{KEY_A}"\nkey = 1\n', "unknown key 'key'"),
        (
            f'[[follow]]\npublic_key = "{KEY_A}"\n[[follow]]\npublic_key = "{KEY_A}"\n',
            "names the same public_key twice",
        ),
        ("[mdns]\nenabled = true\n", "enabled needs interfaces"),
        ('[mdns]\nenabled = "yes"\n', "enabled must be true or false"),
        ("[mdns]\nport = 5353\n", "unknown key 'port'"),
    ],
)
def test_bad_follow_and_mdns_tables_are_explained(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_node_config(write(tmp_path, 'state_dir = "s"\n' + text))
