"""The one `afrd` command. Each subcommand lives in its component's own module.

A subcommand module exposes ``main(argv: list[str]) -> int`` with its own argparse parser, so
``afrd <cmd> --help`` shows that command's options and importing ``afrd.cli`` pulls in nothing
heavy (the daemon must start without torch).
"""

from __future__ import annotations

import importlib
import sys

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("afrd.sim.demo", "run the whole inspection cell simulated: train, export, inspect"),
    "run": ("afrd.daemon.main", "run the inspection daemon from a cell config"),
    "config": ("afrd.daemon.config_check", "check a cell config (afrd config check FILE)"),
    "watch": ("afrd.daemon.watch", "subscribe to a cell's verdicts and heatmaps"),
    "ctl": ("afrd.daemon.ctl", "send a command to a cell's control socket"),
    "capture": ("afrd.daemon.capture_cli", "record image sets from the cell without a model"),
    "label": ("afrd.data.label_cli", "mark recorded image sets good or defective"),
    "audit": ("afrd.daemon.audit_cli", "print and filter the audit log (who changed what)"),
    "train": (
        "afrd.model.train",
        "train a model (any registered kind: memory bank, AFRD, CAD, DCAM) on multi-light image sets",
    ),
    "eval": ("afrd.model.evaluate", "evaluate a checkpoint: I-AUROC, P-AUROC, AUPRO, plots"),
    "synth": ("afrd.data.synth_cli", "render synthetic multi-light parts in the Eyecandies layout"),
    "export": (
        "afrd.export.cli",
        "export a checkpoint to a bundle (onnx) or build a TensorRT engine (trt)",
    ),
    "calibrate": ("afrd.calibration.cli", "calibrate threshold, flat-field or exposure"),
    "web": ("afrd.web.cli", "the operator's page: live verdicts, threshold tuning, review"),
}


def _usage() -> str:
    width = max(len(n) for n in COMMANDS)
    lines = ["usage: afrd <command> [options]", "", "commands:"]
    lines += [f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += [
        "",
        "global options (before or after the command):",
        "  -q, --quiet        no progress bars (they are off anyway when stderr is no terminal)",
        "  --log-level LEVEL  debug | info | warning | error",
        "  -V, --version      print the version",
        "",
        "afrd <command> --help shows a command's options and their defaults.",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from afrd.cliargs import setup_logging, take_global_flags

    argv = take_global_flags(sys.argv[1:] if argv is None else argv)
    setup_logging()
    if not argv:
        print(f"afrd: a command is required\n\n{_usage()}", file=sys.stderr)
        return 2
    if argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0
    if argv[0] in ("-V", "--version"):
        from afrd import __version__

        print(f"afrd {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"afrd: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    from afrd.errors import AfrdError

    module = importlib.import_module(COMMANDS[name][0])
    try:
        return int(module.main(rest) or 0)
    except AfrdError as exc:
        print(f"afrd {name}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
