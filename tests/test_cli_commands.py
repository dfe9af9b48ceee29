"""Command line: every command has help; user mistakes are one line, exit 1 or 2, no traceback."""

import socket

import pytest
from helpers import assert_one_line_error, cli_run, free_port

from mia.cli import cli

COMMANDS = sorted(cli.commands)


def run(args):
    return cli_run(*args, catch_exceptions=False)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name):
    result = run([name, "--help"])
    assert result.exit_code == 0
    assert "Usage: " in result.output and name in result.output
    assert len(cli.commands[name].help or "") > 20


def test_expected_commands_exist():
    for name in ("record", "replay", "sim", "demo", "inspect", "verify", "tail"):
        assert name in cli.commands


def test_bad_date(tmp_path):
    line = assert_one_line_error(run(["replay", "--data-dir", tmp_path, "--date", "2026-13-45"]), 2)
    assert "2026-13-45" in line


def test_day_with_no_data(tmp_path):
    (tmp_path / "data").mkdir()
    line = assert_one_line_error(
        run(["replay", "--data-dir", tmp_path / "data", "--date", "2026-01-02"]), 2)
    assert "2026-01-02" in line


def test_unknown_config_key(tmp_path):
    cfg = tmp_path / "mia.toml"
    cfg.write_text("[polygon]\nunderlying = ['SPX']\n")
    line = assert_one_line_error(run(["record", "--data-dir", tmp_path / "d", "--config", cfg,
                                      "--no-dtc", "--duration", "1s"]), 2)
    assert "underlying" in line


def test_unreachable_dtc_host(tmp_path):
    port = free_port()  # nothing listens there
    line = assert_one_line_error(run(["record", "--data-dir", tmp_path, "--dtc", f"127.0.0.1:{port}",
                                      "--symbols", "ESZ6", "--no-polygon", "--no-publish",
                                      "--exit-if-unreachable", "1", "--duration", "2s", "-q"]), 1)
    assert f"127.0.0.1:{port}" in line


def test_bus_port_in_use(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        line = assert_one_line_error(run(["record", "--data-dir", tmp_path, "--sim", "--no-polygon",
                                          "--publish", f"tcp://127.0.0.1:{port}",
                                          "--duration", "1s", "-q"]), 1)
    assert str(port) in line


def test_bad_duration_and_bad_address(tmp_path):
    assert_one_line_error(run(["record", "--data-dir", tmp_path, "--sim", "--duration", "soon"]), 2)
    assert_one_line_error(run(["record", "--data-dir", tmp_path, "--dtc", "nowhere",
                               "--symbols", "ES"]), 2)
