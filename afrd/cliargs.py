"""The command-line conventions every `afrd` command follows, in one place.

- Defaults are shown in ``--help`` (:func:`parser`).
- The same flag names for the same things (:func:`add_dataset_args`): ``--data ROOT``,
  ``--category C`` (repeatable or a comma list, in every command), ``--split``, ``--image-size``.
- Global flags (``--quiet``, ``--log-level``) are accepted before or after the subcommand
  (:func:`take_global_flags`).
- Long steps show a progress bar on a terminal and stay quiet when stderr is not one, or with
  ``--quiet`` (:func:`progress`).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TypeVar

from afrd.errors import ConfigError

T = TypeVar("T")

_QUIET_ENV = "AFRD_QUIET"
_LOG_ENV = "AFRD_LOG_LEVEL"
LOG_LEVELS = ("debug", "info", "warning", "error")


class _Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Defaults in --help, descriptions printed as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        # "(default: None)" and "(default: False)" say nothing; a help that names its own
        # default needs no second one.
        d = action.default
        if d is None or d is False or d == "" or d is argparse.SUPPRESS:
            return action.help
        if action.help and "default" in action.help:
            return action.help
        return super()._get_help_string(action)


def parser(prog: str, description: str | None = None, **kw) -> argparse.ArgumentParser:
    """An ArgumentParser that shows defaults in ``--help``."""
    return argparse.ArgumentParser(
        prog=prog, description=description, formatter_class=_Formatter, **kw
    )


def subparsers(p: argparse.ArgumentParser) -> argparse._SubParsersAction:
    """Required subcommands (a missing one is exit 2 with usage) whose parsers show defaults."""
    sub = p.add_subparsers(dest="cmd", required=True, metavar="COMMAND")
    sub.add_parser = _with_formatter(sub.add_parser)  # type: ignore[method-assign]
    return sub


def _with_formatter(add):
    def add_parser(name: str, **kw):
        kw.setdefault("formatter_class", _Formatter)
        if "help" in kw:
            kw.setdefault("description", kw["help"])
        return add(name, **kw)

    return add_parser


def add_dataset_args(
    p: argparse.ArgumentParser,
    *,
    required: bool = True,
    split: str | None = None,
    split_help: str = "dataset split",
    image_size: int | None = None,
    category_help: str = "category / product (repeatable or a comma list; default: all, or "
    "the only one)",
) -> None:
    """``--data``, ``--category``, and, when given a default, ``--split`` and ``--image-size``."""
    p.add_argument(
        "--data",
        required=required,
        metavar="ROOT",
        help="dataset root (Eyecandies layout or afrd capture layout)",
    )
    p.add_argument("--category", action="append", default=None, metavar="C", help=category_help)
    if split is not None:
        p.add_argument("--split", default=split, help=split_help)
    if image_size is not None:
        p.add_argument(
            "--image-size", type=int, default=image_size, help="square input size in pixels"
        )


def int_list(text: str) -> tuple[int, ...]:
    """argparse type: comma-separated integers, e.g. ``1,2``."""
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,2, got {text!r}") from None


def categories(values: Sequence[str] | None) -> list[str] | None:
    """``--category a --category b,c`` -> ``["a", "b", "c"]``; None when not given."""
    if not values:
        return None
    out = [c.strip() for v in values for c in v.split(",") if c.strip()]
    return out or None


def one_category(values: Sequence[str] | None, flag: str = "--category") -> str | None:
    """The single category a command works on; ConfigError when several are given."""
    cats = categories(values)
    if cats and len(cats) > 1:
        raise ConfigError(f"{flag}: this command takes one category, got {cats}")
    return cats[0] if cats else None


def take_global_flags(argv: Sequence[str]) -> list[str]:
    """Apply and remove ``--quiet`` / ``--log-level L`` wherever they stand in ``argv``."""
    rest: list[str] = []
    level = None
    it = iter(argv)
    for arg in it:
        if arg in ("-q", "--quiet"):
            os.environ[_QUIET_ENV] = "1"
        elif arg == "--log-level":
            level = next(it, None)
        elif arg.startswith("--log-level="):
            level = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    if level is not None:
        if level.lower() not in LOG_LEVELS:
            raise SystemExit(
                f"afrd: --log-level expects one of {', '.join(LOG_LEVELS)}, got {level!r}"
            )
        os.environ[_LOG_ENV] = level.lower()
    return rest


def setup_logging(
    default: str = "warning", fmt: str = "%(levelname)s %(name)s: %(message)s"
) -> None:
    """Configure the root logger at --log-level (or ``default``); a later call replaces it."""
    level = os.environ.get(_LOG_ENV, default).upper()
    logging.basicConfig(level=level, format=fmt, force=True)


def quiet() -> bool:
    """True when progress bars should stay off: --quiet, or stderr is not a terminal."""
    return bool(os.environ.get(_QUIET_ENV)) or not sys.stderr.isatty()


def progress(
    items: Iterable[T], desc: str, total: int | None = None, unit: str = "set"
) -> Iterator[T]:
    """``items`` with a progress bar on stderr when it is a terminal."""
    if quiet():
        yield from items
        return
    from tqdm import tqdm

    yield from tqdm(items, desc=desc, total=total, unit=unit, leave=False)
