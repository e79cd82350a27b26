"""Option groups several commands take are one definition each (spikewatch.options):
same names, same help, same validation in every command."""

from __future__ import annotations

import importlib

import click
import pytest
from click.testing import CliRunner

from spikewatch import options as opt
from spikewatch.cli import COMMANDS


def command(name: str) -> click.Command:
    module, attr = COMMANDS[name].split(":")
    return getattr(importlib.import_module(module), attr)


def option(cmd: click.Command, flag: str) -> click.Option:
    (found,) = [p for p in cmd.params if isinstance(p, click.Option) and flag in p.opts]
    return found


@pytest.mark.parametrize("name", ["record", "console", "drive", "mark", "bridge"])
def test_client_keys_are_one_option_pair(name: str) -> None:
    cmd = command(name)
    keys, client_key = option(cmd, "--keys"), option(cmd, "--client-key")
    assert (keys.name, keys.help, keys.metavar) == ("keys", opt.KEYS_HELP, "DIR")
    assert (client_key.name, client_key.help, client_key.metavar) == ("client_key", opt.CLIENT_KEY_HELP, "NAME")


@pytest.mark.parametrize(
    "flag, names",
    [
        ("--quiet", ["sample", "mark", "bridge"]),
        ("--inlet", ["mark", "bridge"]),
        ("--history", ["record", "console"]),
        ("--duration", ["record", "console"]),
    ],
)
def test_shared_options_read_the_same_in_every_command(flag: str, names: list[str]) -> None:
    found = [option(command(name), flag) for name in names]
    assert len({(o.name, o.help, o.default, o.multiple) for o in found}) == 1, [o.help for o in found]


@pytest.mark.parametrize(
    "argv, says",
    [
        (["mark", "hi", "--client-key", "alice"], "give --keys too"),
        (["record", "tcp://127.0.0.1:1", "-o", "x.rec", "--client-key", "alice"], "give --keys too"),
        (["mark", "hi", "--keys", "/nonexistent/keys"], "--keys"),
        (["record", "tcp://127.0.0.1:1", "-o", "x.rec", "--duration", "5"], "has no unit"),
        (
            [
                "record",
                "tcp://127.0.0.1:1",
                "-o",
                "x.rec",
                "--history",
                "tcp://127.0.0.1:2",
                "--history",
                "tcp://127.0.0.1:3",
            ],
            "2 history endpoints for 1",
        ),
    ],
)
def test_bad_shared_options_are_one_usage_error(argv: list[str], says: str, tmp_path, monkeypatch) -> None:
    from spikewatch.cli import main

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(main, argv)
    assert res.exit_code == 2, res.output
    assert says in res.output and "Traceback" not in res.output
    assert not (tmp_path / "x.rec").exists()
