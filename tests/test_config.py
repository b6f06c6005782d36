"""Node configuration: defaults, path resolution and clear errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from trustix_p2p.config import default_config_path, load_node_config
from trustix_p2p.errors import ConfigError


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
