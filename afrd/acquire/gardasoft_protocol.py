"""What the driver and the emulator share of the Gardasoft RT-style ASCII protocol.

Commands are ASCII, CR-terminated; every reply ends with the prompt ``>``; a failed command
answers ``Err n``. Commands: ``RSc,s`` continuous (channel c at s %), ``RTc,p,d,s`` pulse
(width p µs, delay d µs, level s %), ``RPc,i`` trigger input i for channel c, ``TRc`` software
trigger, ``VR`` version, ``ST`` status (one line per channel), ``GR`` last error (``E<n>``).
"""

from __future__ import annotations

PROMPT = b">"
TERMINATOR = b"\r"

# Meaning of each ``Err n``. Numbering follows the emulator; check it against your controller's
# manual before relying on a specific code.
ERROR_CODES: dict[int, str] = {
    1: "unknown command",
    2: "wrong number of parameters",
    3: "parameter out of range",
    4: "no such channel",
    5: "command not valid in the channel's current mode",
    6: "output fault (open or short circuit on the channel)",
    7: "trigger input out of range",
    9: "internal controller error",
}


def error_meaning(code: int) -> str:
    return ERROR_CODES.get(code, f"unknown error code {code}")


def fmt_num(x: float) -> str:
    """A number as the controller reads it: integers without a point, else up to 3 decimals."""
    if float(x).is_integer():
        return str(int(x))
    return f"{x:.3f}".rstrip("0").rstrip(".")
