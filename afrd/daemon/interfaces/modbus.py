"""Modbus TCP server (pymodbus): the trigger/busy/done handshake a PLC programmer expects.

One register map, 0-based protocol addresses, holding registers (FC3/6/16; FC4 reads the same
registers). Coils and discrete inputs address the same registers bit by bit: coil/input
``16 * register + bit`` (coil 0 = the trigger bit, inputs 160-166 = the status bits). Every
unit id is answered. The map (also a table in the README, generated from ``REGISTERS``):

- written by the PLC: 0 control (bit 0 trigger), 1-2 part number (uint32), 3 product index;
- written by the cell (read-only: a write is refused with exception 2, illegal address): 10
  status bits, 11-20 the handshake's result, 21-26 the last result of any trigger, 27-34
  counters, 35 daemon state, 36 refused triggers.

Words of 32-bit values: high word first (big-endian, "ABCD"); floats are IEEE-754 float32,
NaN when there is no score. Handshake: the PLC writes part number and product index, then sets
the trigger bit; on that rising edge the cell clears done/pass/fail/error, sets busy and
triggers the part; when the part's result is published it writes 11-20, sets done and one of
pass/fail/error and clears busy; the PLC reads the result and clears the trigger bit, and the
cell clears done. A rising edge while busy is refused (counted in 36, nothing triggered).
Every write (FC 5, 6, 15, 16, 23) is judged on the registers it would leave, by one check:
values the map does not define (reserved control bits, set by register or by coil, a product
index beyond ``modbus.products``) are refused with exception 3 (illegal value); addresses beyond
the map and the cell's registers with exception 2; mask write (FC 22) with exception 1. Nothing a
client sends stops the server or the daemon; at most ``modbus.max_connections`` clients are
served at once, and one silent for ``modbus.idle_timeout_s`` is dropped.
"""

from __future__ import annotations

import asyncio
import logging
import math
import socket
import struct
from typing import Any

from pymodbus.constants import ExcCodes
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import DataType, SimData, SimDevice

from afrd.config.plc import ModbusConfig
from afrd.daemon.interfaces.base import Hooks, TriggerReply
from afrd.daemon.interfaces.loop import ConnectionGuard, LoopThread
from afrd.errors import AfrdError

log = logging.getLogger("afrd.daemon.modbus")  # the name the journal has always shown

# (address, words, name, type, writer, meaning)
REGISTERS: tuple[tuple[int, int, str, str, str, str], ...] = (
    (0, 1, "control", "bits", "PLC", "bit 0 trigger (rising edge starts a part); bits 1-15 must be 0"),
    (1, 2, "part_number", "uint32", "PLC", "part id = modbus.part_id_format with n; 0 = numbered by the cell"),
    (3, 1, "product_index", "uint16", "PLC", "0 = trigger.product, N = the Nth of modbus.products (default: the [[product]] names)"),
    (10, 1, "status", "bits", "cell", "0 ready, 1 busy, 2 done, 3 pass, 4 fail, 5 error, 6 heartbeat (toggles every 0.5 s)"),
    (11, 2, "seq", "uint32", "cell", "sequence number of the handshake's part"),
    (13, 2, "result_part_number", "uint32", "cell", "the part number the PLC triggered it with"),
    (15, 2, "score", "float32", "cell", "anomaly score (NaN for an error)"),
    (17, 2, "threshold", "float32", "cell", "threshold it was judged against"),
    (19, 1, "error_code", "uint16", "cell", "0 none, else the table below"),
    (20, 1, "verdict", "uint16", "cell", "0 none, 1 pass, 2 fail, 3 error"),
    (21, 2, "last_seq", "uint32", "cell", "last result of any trigger (control socket, camera line, OPC UA, Modbus)"),
    (23, 1, "last_verdict", "uint16", "cell", "0 none yet, 1 pass, 2 fail, 3 error"),
    (24, 2, "last_score", "float32", "cell", "its score (NaN for an error)"),
    (26, 1, "last_error_code", "uint16", "cell", "its error code"),
    (27, 2, "parts", "uint32", "cell", "results since the daemon started"),
    (29, 2, "passed", "uint32", "cell", "pass results"),
    (31, 2, "failed", "uint32", "cell", "fail results"),
    (33, 2, "errors", "uint32", "cell", "error results"),
    (35, 1, "state", "uint16", "cell", "0 starting, 1 running, 2 paused, 3 reloading, 4 stopping"),
    (36, 1, "refused", "uint16", "cell", "rising edges refused because busy (wraps at 65536)"),
)  # fmt: skip
ADDR = {r[2]: r[0] for r in REGISTERS}
SIZE = REGISTERS[-1][0] + REGISTERS[-1][1]
PLC_WORDS = 4  # registers 0-3 are the PLC's

READY, BUSY, DONE, PASS, FAIL, ERROR, HEARTBEAT = (1 << i for i in range(7))
VERDICT_CODES = {"pass": 1, "fail": 2, "error": 3}
STATE_CODES = {"starting": 0, "running": 1, "paused": 2, "reloading": 3, "stopping": 4}
# error.code -> register value; codes added later map to 99 (their text is on ZeroMQ/OPC UA)
ERROR_CODES = {
    "acquire": 1,
    "register": 2,
    "infer": 3,
    "nan_score": 4,
    "overrun": 5,
    "shutdown": 6,
    "paused": 7,
    "internal": 8,
    "unknown_product": 9,
    "refused": 20,
}
OTHER_ERROR = 99
_WRITE_REGS = (6, 16, 23)
_WRITE_COILS = (5, 15)


def words32(value: int) -> list[int]:
    v = int(value) & 0xFFFFFFFF
    return [v >> 16, v & 0xFFFF]


def words_f32(value: float | None) -> list[int]:
    f = math.nan if value is None else float(value)
    return list(struct.unpack(">HH", struct.pack(">f", f)))


def from_words32(hi: int, lo: int) -> int:
    return (hi << 16) | lo


def written(
    fc: int, address: int, regs: list[int], values: list[int] | list[bool]
) -> tuple[int, list[int]]:
    """The registers a write would leave: (first register, their values). A coil write changes
    bits of registers (coil ``16 * r + b`` is bit ``b`` of register ``r``), so its result is
    the touched registers with those bits set or cleared."""
    if fc not in _WRITE_COILS:
        return address, [int(v) & 0xFFFF for v in values]
    first = address // 16
    words = regs[first : first + (address % 16 + len(values) + 15) // 16]
    for i, on in enumerate(values, address - 16 * first):
        r, b = divmod(i, 16)
        words[r] = words[r] | (1 << b) if on else words[r] & ~(1 << b)
    return first, words


def _probe_bind(host: str, port: int) -> None:
    """Raise the OSError binding ``host:port`` gives (port in use, no such address)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))


class ModbusServer(LoopThread):
    """The ``[modbus]`` server; results and triggers run on its own event loop."""

    name = "modbus"

    def __init__(self, cfg: ModbusConfig, hooks: Hooks, products: list[str] | None = None) -> None:
        guard = ConnectionGuard(self.name, cfg.max_connections, idle_timeout_s=cfg.idle_timeout_s)
        super().__init__(hooks, cfg.host, cfg.port, guard)
        self.cfg = cfg
        # product index N -> products[N-1]: [modbus].products, else the cell's [[product]] names
        self.products = list(cfg.products or products or [])
        self._server: ModbusTcpServer | None = None
        self._regs: list[int] = [0] * (SIZE + 1)
        self._prev_trigger = False
        self._pending: tuple[int, int] | None = None  # (seq, part number) of the handshake
        self._counts = {"pass": 0, "fail": 0, "error": 0}
        self._beat = False

    # ---------------------------------------------------------------- serving
    async def _serve(self) -> None:
        data = [
            SimData(0, count=PLC_WORDS, datatype=DataType.REGISTERS),
            SimData(PLC_WORDS, count=SIZE - PLC_WORDS, datatype=DataType.REGISTERS, readonly=True),
        ]
        device = SimDevice(0, simdata=data, use_bit_addressing=True, action=self._access)
        self._server = ModbusTcpServer(device, address=(self.host, self.port))
        block = self._server.context.devices[0].block["x"]
        if block[0] != 0:
            raise RuntimeError(f"pymodbus register block starts at {block[0]}, expected 0")
        self._regs = block[2]  # the server's own list: what clients read
        self._set_state("starting")
        self._regs[ADDR["score"] : ADDR["score"] + 2] = words_f32(None)
        self._regs[ADDR["threshold"] : ADDR["threshold"] + 2] = words_f32(None)
        self._regs[ADDR["last_score"] : ADDR["last_score"] + 2] = words_f32(None)
        try:
            await self._server.serve_forever(background=True)
        except RuntimeError:  # pymodbus says only "could not start listen": find out why
            _probe_bind(self.host, self.port)
            raise
        if self.port == 0:  # asyncio.Server: the port the OS picked
            self.port = self._server.transport.sockets[0].getsockname()[1]

    async def _stop(self) -> None:
        if self._server is not None:
            self._set_state("stopping")
            await self._server.shutdown()

    async def _access(
        self,
        fc: int,
        _start: int,
        address: int,
        _count: int,
        regs: list[int],
        values: list[int] | list[bool] | None,
    ) -> ExcCodes | None:
        """pymodbus calls this before a request touches the registers (``values`` None: a read).
        Every write, by register or by coil, is judged on the registers it would leave
        (``_check``); after an accepted one, look for the trigger's edges."""
        if values is None:
            return None
        if fc not in _WRITE_REGS + _WRITE_COILS:  # mask write (22): not part of the handshake
            return ExcCodes.ILLEGAL_FUNCTION
        if (exc := self._check(*written(fc, address, regs, values))) is not None:
            return exc
        asyncio.get_running_loop().call_soon(self._after_write)
        return None

    def _check(self, first: int, words: list[int]) -> ExcCodes | None:
        """The one rule for every write path (FC 5, 6, 15, 16, 23): ``words``, the values
        registers ``first``.. would hold, must be the PLC's and mean something."""
        for a, v in enumerate(words, first):
            if a >= PLC_WORDS:  # the cell's (pymodbus's read-only flags refuse these first)
                return ExcCodes.ILLEGAL_ADDRESS
            if a == ADDR["control"] and v & ~1:
                return ExcCodes.ILLEGAL_VALUE
            if a == ADDR["product_index"] and v > len(self.products):
                return ExcCodes.ILLEGAL_VALUE
        return None

    def _after_write(self) -> None:
        trig = bool(self._regs[ADDR["control"]] & 1)
        prev, self._prev_trigger = self._prev_trigger, trig
        if trig and not prev:
            self._on_trigger()
        elif prev and not trig:
            self._status(clear=DONE)

    # ---------------------------------------------------------------- handshake
    def _status(self, set_: int = 0, clear: int = 0) -> None:
        a = ADDR["status"]
        self._regs[a] = (self._regs[a] & ~clear | set_) & 0xFFFF

    def _on_trigger(self) -> None:
        r = self._regs
        if r[ADDR["status"]] & BUSY:
            r[ADDR["refused"]] = (r[ADDR["refused"]] + 1) & 0xFFFF
            log.warning("modbus: trigger while busy with seq %s refused", self._pending)
            return
        self._status(set_=BUSY, clear=DONE | PASS | FAIL | ERROR)
        r[ADDR["verdict"]] = 0
        n = from_words32(r[ADDR["part_number"]], r[ADDR["part_number"] + 1])
        idx = r[ADDR["product_index"]]
        product = self.hooks.default_product if idx == 0 else self.products[idx - 1]
        part_id = self.cfg.part_id_format.format(n=n) if n else None
        try:
            reply: TriggerReply = self.hooks.trigger(part_id, product)
        except AfrdError as exc:
            log.warning("modbus: trigger refused: %s", exc)
            self._complete(None, n, {"verdict": "error", "error": {"code": "refused"}})
            return
        except Exception:
            log.exception("modbus: trigger failed")
            self._complete(None, n, {"verdict": "error", "error": {"code": "internal"}})
            return
        self._pending = (reply.seq, n)

    def _complete(self, seq: int | None, n: int, msg: dict[str, Any]) -> None:
        r = self._regs
        verdict = msg.get("verdict", "error")
        if seq is not None:
            r[ADDR["seq"] : ADDR["seq"] + 2] = words32(seq)
        r[ADDR["result_part_number"] : ADDR["result_part_number"] + 2] = words32(n)
        r[ADDR["score"] : ADDR["score"] + 2] = words_f32(msg.get("score"))
        r[ADDR["threshold"] : ADDR["threshold"] + 2] = words_f32(msg.get("threshold"))
        r[ADDR["error_code"]] = self._error_code(msg)
        r[ADDR["verdict"]] = VERDICT_CODES.get(verdict, 3)
        bit = {"pass": PASS, "fail": FAIL}.get(verdict, ERROR)
        # done last: a PLC that sees done reads a complete result
        self._status(set_=bit | DONE, clear=BUSY)

    @staticmethod
    def _error_code(msg: dict) -> int:
        err = msg.get("error")
        if not err:
            return 0
        return ERROR_CODES.get(err.get("code"), OTHER_ERROR)

    def _on_result(self, msg: dict) -> None:
        r = self._regs
        verdict = msg.get("verdict")
        if verdict in self._counts:
            self._counts[verdict] += 1
        seq = int(msg.get("seq", 0))
        r[ADDR["last_seq"] : ADDR["last_seq"] + 2] = words32(seq)
        r[ADDR["last_verdict"]] = VERDICT_CODES.get(verdict, 3)
        r[ADDR["last_score"] : ADDR["last_score"] + 2] = words_f32(msg.get("score"))
        r[ADDR["last_error_code"]] = self._error_code(msg)
        c = self._counts
        for key, v in (
            ("parts", sum(c.values())),
            ("passed", c["pass"]),
            ("failed", c["fail"]),
            ("errors", c["error"]),
        ):
            r[ADDR[key] : ADDR[key] + 2] = words32(v)
        if self._pending is not None and self._pending[0] == seq:
            _, n = self._pending
            self._pending = None
            self._complete(seq, n, msg)

    def _set_state(self, state: str) -> None:
        self._regs[ADDR["state"]] = STATE_CODES.get(state, 0)
        if state == "running":
            self._status(set_=READY)
        else:
            self._status(clear=READY)

    async def _tick(self) -> None:
        self._beat = not self._beat
        self._status(set_=HEARTBEAT) if self._beat else self._status(clear=HEARTBEAT)
        self._set_state(str(self.hooks.status().get("state", "starting")))
