"""The Machine Vision methods' plumbing and the management methods (recipes, results,
configuration).

``wrap(types, name, fn)`` makes an asyncua method callback from a plain function: it checks the
count and type of every input argument against the specification's signature (asyncua does
not), hands ``fn`` the values, and types the outputs as the signature says. A refusal is a
call status: Bad_ArgumentsMissing / Bad_TooManyArguments, Bad_InvalidArgument with the
offending argument's Bad_TypeMismatch (or Bad_InvalidArgument), Bad_NotExecutable (the state
machine forbids it now), Bad_InvalidState (the daemon is stopping). What the specification
leaves to the method's ``Error`` output is answered there: 0, or afrd's negative codes below.
"""

from __future__ import annotations

import datetime as _dt
import logging
from collections.abc import Callable
from typing import Any

from asyncua import ua

from afrd.daemon.interfaces import opcua_mv_spec as S
from afrd.daemon.interfaces.opcua_mv_results import ID_FILTERS, ResultStore
from afrd.daemon.interfaces.opcua_mv_state import NotExecutable, VisionModel
from afrd.daemon.interfaces.opcua_mv_types import MvTypes

log = logging.getLogger("afrd.daemon.opcua")

# the methods' Error output: 0 OK; negative values are application-specific (§8: "Values < 0
# shall be used for application-specific errors")
OK = 0
ERR_UNKNOWN = -1  # no recipe / result / configuration with that id
ERR_NOT_PREPARED = -2  # StartSingleJob or UnprepareRecipe: that recipe is not the prepared one
ERR_NOT_INSPECTED = -3  # StartSingleJob: the daemon took the part but could not image it
# (overrun): its JobId is returned and its result (ResultState Aborted) is published as usual

_VT = ua.VariantType
_SCALARS = {
    S.BOOL: _VT.Boolean,
    S.INT32: _VT.Int32,
    S.UINT32: _VT.UInt32,
    S.STRING: _VT.String,
    S.UTCTIME: _VT.DateTime,
    "Handle": _VT.UInt32,
    "ResultStateDataType": _VT.Int32,
    "TriStateBooleanDataType": _VT.Int32,
}


class Refused(Exception):
    """A call refused as a whole: ``code`` (a StatusCodes name), and ``arg`` the index of the
    input argument at fault (its InputArgumentResults entry gets ``arg_code``)."""

    def __init__(self, code: str, why: str, arg: int | None = None, arg_code: str = "") -> None:
        super().__init__(why)
        self.code, self.arg, self.arg_code = code, arg, arg_code or code


def ident(value: Any) -> str:
    """The Id of an MV id structure (a null structure or a blank Id: "")."""
    return str(getattr(value, "Id", None) or "").strip()


def wrap(t: MvTypes, name: str, fn: Callable[..., list]) -> Callable:
    ins, outs = S.METHODS[name][5], S.METHODS[name][6]

    async def call(_parent: Any, *args: Any) -> Any:
        if len(args) != len(ins):
            code = "BadArgumentsMissing" if len(args) < len(ins) else "BadTooManyArguments"
            return _refuse(Refused(code, f"{len(args)} of {len(ins)} arguments"), len(ins), name)
        bad = [
            i for i, (a, spec) in enumerate(zip(args, ins, strict=True)) if not _fits(t, a, spec)
        ]
        if bad:
            r = Refused(
                "BadInvalidArgument", f"argument {ins[bad[0]][0]}", bad[0], "BadTypeMismatch"
            )
            return _refuse(r, len(ins), name)
        try:
            values = fn(*(a.Value for a in args))
        except NotExecutable as exc:
            return _refuse(Refused("BadNotExecutable", str(exc)), len(ins), name)
        except Refused as exc:
            return _refuse(exc, len(ins), name)
        return [_variant(v, spec) for v, spec in zip(values, outs, strict=True)]

    return call


def _refuse(exc: Refused, n_in: int, name: str) -> ua.CallMethodResult:
    log.info("opcua: %s refused (%s): %s", name, exc.code, exc)
    good = ua.StatusCode()
    results = [
        ua.StatusCode(getattr(ua.StatusCodes, exc.arg_code)) if i == exc.arg else good
        for i in range(n_in)
    ]
    return ua.CallMethodResult(
        StatusCode=ua.StatusCode(getattr(ua.StatusCodes, exc.code)),
        InputArgumentResults=results if exc.arg is not None else [],
    )


def _fits(t: MvTypes, arg: Any, spec: tuple) -> bool:
    if not isinstance(arg, ua.Variant):
        return False
    typ, array = spec[1], len(spec) > 2
    if array:  # BaseDataType[]: any array (or null)
        return arg.Value is None or isinstance(arg.Value, list)
    if typ in _SCALARS:
        return arg.VariantType == _SCALARS[typ] and arg.Value is not None
    # an MV structure, or null (an empty id)
    return arg.Value is None or isinstance(arg.Value, t.cls(typ))


def _variant(value: Any, spec: tuple) -> ua.Variant:
    typ, array = spec[1], len(spec) > 2
    if typ == S.VARIANT:
        return ua.Variant(value, _VT.Variant)
    if typ in _SCALARS:
        return ua.Variant(value, _SCALARS[typ])
    return ua.Variant(value, _VT.ExtensionObject) if array else ua.Variant(value)


def page(items: list, max_results: int, start: int) -> tuple[list, bool]:
    """``items[start:start + max_results]`` (0: no limit) and whether that reaches the end."""
    end = len(items) if max_results == 0 else start + max_results
    return items[start:end], end >= len(items)


class Management:
    """RecipeManagement, ResultManagement and ConfigurationManagement over the daemon's
    recipes (``recipes()``: the names, the cell's ``[[product]]`` or its one recipe), the
    result store and the one configuration a cell runs (its config file, id = the cell id)."""

    def __init__(
        self,
        model: VisionModel,
        store: ResultStore,
        recipes: Callable[[], list[str]],
        cell: str,
        started: _dt.datetime,
    ) -> None:
        self.model, self.store, self.recipes = model, store, recipes
        self.config = ua.ConfigurationDataType(
            HasTransferableDataOnFile=False,
            InternalId=ua.ConfigurationIdDataType(Id=cell),
            LastModified=started,
        )

    def handlers(self) -> dict[str, Callable[..., list]]:
        return {
            "GetRecipeListFiltered": self.recipe_list,
            "PrepareRecipe": self.prepare,
            "UnprepareRecipe": self.unprepare,
            "GetResultById": self.result_by_id,
            "GetResultComponentsById": self.result_components,
            "GetResultListFiltered": self.result_list,
            "ActivateConfiguration": self.activate,
            "GetConfigurationById": self.configuration_by_id,
            "GetConfigurationList": self.configuration_list,
        }

    # ------------------------------------------------------------------ recipes
    def recipe_list(self, external, product, prepared, max_results, start, _timeout) -> list:
        names = self.recipes()
        want = {n for n in (ident(external), ident(product)) if n}
        found = [
            n
            for n in names
            if all(w == n for w in want)
            and (prepared == 2 or (n == self.model.prepared) == bool(prepared))
        ]
        items, complete = page(
            [ua.RecipeIdInternalDataType(Id=n) for n in found], max_results, start
        )
        return [complete, len(items), 0, items, OK]

    def _named(self, external: Any, internal: Any) -> str | None:
        name = ident(external) or ident(internal)
        return name if name in self.recipes() else None

    def prepare(self, external, internal) -> list:
        name = self._named(external, internal)
        if name is None:
            return [ua.RecipeIdInternalDataType(Id=""), False, ERR_UNKNOWN]
        self.model.prepare(name)
        log.info("opcua: recipe %s prepared (StartSingleJob without one uses it)", name)
        return [ua.RecipeIdInternalDataType(Id=name), True, OK]

    def unprepare(self, external, internal) -> list:
        name = self._named(external, internal)
        if name is None:
            return [ua.RecipeIdInternalDataType(Id=""), ERR_UNKNOWN]
        if name != self.model.prepared:
            return [ua.RecipeIdInternalDataType(Id=name), ERR_NOT_PREPARED]
        self.model.unprepare()
        return [ua.RecipeIdInternalDataType(Id=name), OK]

    # ------------------------------------------------------------------ results
    def result_by_id(self, result_id, _timeout) -> list:
        r = self.store.get(ident(result_id))
        return [0, r or empty_result(), OK if r is not None else ERR_UNKNOWN]

    def result_components(self, result_id, _timeout) -> list:
        r = self.store.get(ident(result_id))
        found = r is not None
        r = r or empty_result()
        epoch = ua.get_win_epoch()
        return [
            False,
            0,
            r.IsPartial,
            False,
            r.ResultState,
            r.MeasId or ua.MeasIdDataType(Id=""),  # an optional field: empty, not null
            r.PartId or ua.PartIdDataType(Id=""),
            r.ExternalRecipeId or ua.RecipeIdExternalDataType(Id=""),
            r.InternalRecipeId,
            r.ProductId or ua.ProductIdDataType(Id=""),
            r.ExternalConfigurationId or ua.ConfigurationIdDataType(Id=""),
            r.InternalConfigurationId,
            r.JobId,
            r.CreationTime,
            r.ProcessingTimes or ua.ProcessingTimesDataType(StartTime=epoch, EndTime=epoch),
            r.ResultContent or [],
            OK if found else ERR_UNKNOWN,
        ]

    def result_list(self, state, *rest) -> list:
        ids, (max_results, start, _timeout) = rest[: len(ID_FILTERS)], rest[len(ID_FILTERS) :]
        found = self.store.filtered(
            state, {k: ident(v) for k, v in zip(ID_FILTERS, ids, strict=True)}
        )
        items, complete = page(found, max_results, start)
        return [complete, len(items), 0, items, OK]

    # ------------------------------------------------------------------ configuration
    def _is_active(self, internal: Any) -> bool:
        return ident(internal) == self.config.InternalId.Id

    def activate(self, internal) -> list:
        return [OK if self._is_active(internal) else ERR_UNKNOWN]

    def configuration_by_id(self, internal, _timeout) -> list:
        if self._is_active(internal):
            return [0, self.config, OK]
        empty = ua.ConfigurationDataType(
            InternalId=ua.ConfigurationIdDataType(Id=""), LastModified=ua.get_win_epoch()
        )
        return [0, empty, ERR_UNKNOWN]

    def configuration_list(self, max_results, start, _timeout) -> list:
        items, complete = page([self.config], max_results, start)
        return [complete, len(items), 0, items, OK]


def empty_result() -> Any:
    """What a result access method returns with an error: ResultState 0 (Undefined), which
    §12.19 says indicates an error there."""
    return ua.ResultDataType(
        ResultId=ua.ResultIdDataType(Id=""),
        IsPartial=False,
        ResultState=0,
        InternalRecipeId=ua.RecipeIdInternalDataType(Id=""),
        InternalConfigurationId=ua.ConfigurationIdDataType(Id=""),
        JobId=ua.JobIdDataType(Id=""),
        CreationTime=ua.get_win_epoch(),
    )
