"""The ``lmlab`` command line: ``lmlab <family> <verb> ...``.

Each family's commands live in their own module (``lmlab.cli.<family>``) and are imported only when used,
so ``lmlab --help`` stays fast. The commands parse arguments, call the public API and print; they hold no
logic of their own.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys

import click

from lmlab.errors import LmlabError

# command name -> "module:attribute" of a click command or group
COMMANDS: dict[str, str] = {
    "classify": "lmlab.cli.classify:classify",
    "embed": "lmlab.cli.embed:embed",
    "lm": "lmlab.cli.lm:lm",
    "seq2seq": "lmlab.cli.seq2seq:seq2seq",
    "translate": "lmlab.cli.seq2seq:translate",
    "gan": "lmlab.cli.gan:gan",
    "gpt": "lmlab.cli.gpt:gpt",
    "mlm": "lmlab.cli.mlm:mlm",
    "serve": "lmlab.cli.serve:serve",
    "plot": "lmlab.cli.common:plot",
    "tour": "lmlab.cli.tour:tour",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(name for name in COMMANDS if self._spec_exists(name))

    @staticmethod
    def _spec_exists(name: str) -> bool:
        module = COMMANDS[name].split(":")[0]
        return importlib.util.find_spec(module) is not None

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS or not self._spec_exists(name):
            return None
        module, attr = COMMANDS[name].split(":")
        return getattr(importlib.import_module(module), attr)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="lmlab")
def cli() -> None:
    """lmlab: language modeling from theory to practice."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``lmlab`` console script: user errors print one or two lines and exit 2."""
    try:
        cli.main(args=argv, prog_name="lmlab", standalone_mode=False)
    except LmlabError as err:
        click.echo(f"error: {err}", err=True)
        return err.exit_code
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return 130
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except click.ClickException as exc:
        exc.show()
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
