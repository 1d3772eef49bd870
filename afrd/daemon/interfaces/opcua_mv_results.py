"""ResultManagement's store: the last ``size`` results as ``ResultDataType``, what falls out
counted (``evicted``), and the ``afrd.result/1`` message -> ResultDataType mapping.

Every published result is one job and one result (IsPartial false): JobId and ResultId are
``"<seq>@<start>"``, the part's seq and the server's start time (UTC, to the second), unique
across restarts where seq alone starts again at 0. ResultContent is a list of
KeyValuePair (namespace 0, so any client decodes it): Verdict, Score, Threshold, Seq, and
ErrorCode/ErrorMessage for an ``error`` part.
"""

from __future__ import annotations

import datetime as _dt
import math
from collections import OrderedDict
from typing import Any

from asyncua import ua

COMPLETED, ABORTED, FAILED = 1, 3, 4  # ResultStateDataType
NOT_INSPECTED = ("paused", "overrun", "shutdown")  # refused before imaging: Aborted

# GetResultListFiltered's filters, in argument order (ResultState, the Id structures)
ID_FILTERS = (
    "MeasId",
    "PartId",
    "ExternalRecipeId",
    "InternalRecipeId",
    "ExternalConfigurationId",
    "InternalConfigurationId",
    "ProductId",
    "JobId",
)


def _time(text: Any) -> _dt.datetime:
    try:
        return _dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return _dt.datetime.now(_dt.timezone.utc)


def content(msg: dict) -> list[ua.Variant]:
    """ResultContent: the verdict, score and threshold of ``msg`` as KeyValuePairs."""
    score, thr = msg.get("score"), msg.get("threshold")
    items: list[tuple[str, ua.Variant]] = [
        ("Verdict", ua.Variant(str(msg.get("verdict", "")), ua.VariantType.String)),
        ("Score", ua.Variant(math.nan if score is None else float(score), ua.VariantType.Double)),
        ("Threshold", ua.Variant(math.nan if thr is None else float(thr), ua.VariantType.Double)),
        ("Seq", ua.Variant(int(msg.get("seq", 0)) & 0xFFFFFFFF, ua.VariantType.UInt32)),
    ]
    err = msg.get("error")
    if err:
        items.append(("ErrorCode", ua.Variant(str(err.get("code", "")), ua.VariantType.String)))
        text = str(err.get("message", ""))[:1000]
        items.append(("ErrorMessage", ua.Variant(text, ua.VariantType.String)))
    return [ua.Variant(ua.KeyValuePair(Key=ua.QualifiedName(k, 0), Value=v)) for k, v in items]


class ResultStore:
    """The bounded store behind GetResultById / GetResultComponentsById / GetResultListFiltered
    (only the server's loop touches it)."""

    def __init__(self, size: int, started: _dt.datetime) -> None:
        self.size = size
        self.boot = started.strftime("%Y%m%dT%H%M%SZ")
        self.results: OrderedDict[str, Any] = OrderedDict()
        self.evicted = 0

    def job_id(self, seq: int) -> str:
        return f"{seq}@{self.boot}"

    def add(self, msg: dict, recipe: str, config: str, meas: Any) -> Any:
        """``msg`` as a ResultDataType, stored (the oldest falls out past ``size``)."""
        seq = int(msg.get("seq", 0))
        start = _time(msg.get("timestamp"))
        lat = msg.get("latency_ms") or {}
        end = start + _dt.timedelta(milliseconds=float(lat.get("total") or 0.0))
        err = msg.get("error") or {}
        verdict = msg.get("verdict")
        state = COMPLETED if verdict in ("pass", "fail") else FAILED
        if err.get("code") in NOT_INSPECTED:
            state = ABORTED
        product = str(msg.get("product", ""))
        ident = self.job_id(seq)
        r = ua.ResultDataType(
            ResultId=ua.ResultIdDataType(Id=ident),
            HasTransferableDataOnFile=False,
            IsPartial=False,
            ResultState=state,
            MeasId=meas,
            PartId=ua.PartIdDataType(Id=str(msg.get("part_id", ""))),
            ExternalRecipeId=ua.RecipeIdExternalDataType(Id=recipe),
            InternalRecipeId=ua.RecipeIdInternalDataType(Id=recipe),
            ProductId=ua.ProductIdDataType(Id=product),
            InternalConfigurationId=ua.ConfigurationIdDataType(Id=config),
            JobId=ua.JobIdDataType(Id=ident),
            CreationTime=end,
            ProcessingTimes=ua.ProcessingTimesDataType(
                StartTime=start,
                EndTime=end,
                AcquisitionDuration=_ms(lat.get("acquire")),
                ProcessingDuration=_ms(lat.get("infer")),
            ),
            ResultContent=content(msg),
        )
        self.results[ident] = r
        while len(self.results) > self.size:
            self.results.popitem(last=False)
            self.evicted += 1
        return r

    def get(self, result_id: str) -> Any:
        return self.results.get(result_id)

    def filtered(self, state: int, ids: dict[str, str]) -> list[Any]:
        """Results (oldest first) with ResultState ``state`` (0: any) whose Id structures
        match ``ids`` (name -> Id; an empty Id matches any)."""
        want = {k: v for k, v in ids.items() if v}
        out = []
        for r in self.results.values():
            if state and r.ResultState != state:
                continue
            if all(getattr(getattr(r, k), "Id", None) == v for k, v in want.items()):
                out.append(r)
        return out


def _ms(v: Any) -> float | None:
    return None if v is None else float(v)
