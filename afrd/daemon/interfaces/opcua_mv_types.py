"""The Machine Vision types built on an asyncua server from ``opcua_mv_spec``'s tables.

``build_types(server)`` registers the namespace ``MV_URI`` and adds the data types (with their
Default Binary encodings and definitions, loaded into asyncua's ``ua`` classes), the object
types with their declarations (state machines: every state and transition; methods with their
argument properties) and ResultReadyEventType, each with the specification's node id. It returns
``MvTypes``, what the instance builder (``opcua_mv``) looks ids and classes up in.

asyncua's limits met, each with its workaround here (README: measured):

- ``register_aliases(ns)``: structures whose fields use the MV TrimmedString/Handle do not load
  (every client of a Machine Vision server meets it);
- ``event_generator``: asyncua deep-copies every field of an event for every subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from asyncua import Server, ua
from asyncua.common import events
from asyncua.common.manage_nodes import create_data_type, create_encoding

from afrd.daemon.interfaces import opcua_mv_spec as S

_STATE_TYPE, _TRANSITION_TYPE = 2307, 2310
_FROM_STATE, _TO_STATE, _HAS_CAUSE, _TYPEDEF = 51, 52, 53, 40


def register_aliases(ns: int) -> None:
    """Map the MV ``TrimmedString`` and ``Handle`` ids of namespace ``ns`` to asyncua's classes.

    asyncua (2.1) resolves a structure field's data type by its Python name and registers a
    simple data type only under a name ``ua`` does not have yet; namespace 0 of OPC UA 1.05 has
    both names, so without this ``load_data_type_definitions`` fails on every MV structure with
    an ``Id`` field (client and server alike)."""
    ua.register_basetype("TrimmedString", ua.NodeId(S.SIMPLE["TrimmedString"][0], ns), ua.String)
    ua.register_basetype("Handle", ua.NodeId(S.SIMPLE["Handle"][0], ns), ua.UInt32)


async def event_generator(srv: Server, etype: ua.NodeId, source: Any) -> Any:
    """asyncua's EventGenerator for ``etype`` fired from ``source``, minus one copy: asyncua
    deep-copies each field value for each subscriber when an event fires (a ResultReadyEvent's
    structures: most of its cost, BENCHMARKS.md). Sharing is safe here because afrd assigns new
    values for every event and never changes one after it fired."""
    ev = await events.get_event_obj_from_type_node(srv.get_node(etype))
    ev.__class__ = type("SharedFieldsEvent", (type(ev),), {"to_event_fields": _shared_fields})
    return await srv.get_event_generator(ev, source)


def _shared_fields(self: Any, select_clauses: list) -> list[ua.Variant]:
    """An event's fields for one subscription's select clauses (its values, not copies)."""
    out = []
    for clause in select_clauses:
        if clause.BrowsePath:
            name = self.browse_path_to_attribute_name(clause.BrowsePath)
        else:
            name = ua.AttributeIds(clause.AttributeId).name
        value = getattr(self, name, None)
        out.append(ua.Variant() if value is None else ua.Variant(value, self.data_types[name]))
    return out


@dataclass
class MvTypes:
    """The built types: node ids by browse name, and the ``ua`` classes of the structures."""

    ns: int
    nodes: dict[str, ua.NodeId] = field(default_factory=dict)  # types, states, transitions

    def datatype(self, t: str | int) -> ua.NodeId:
        """A data type by MV name or namespace-0 number."""
        return ua.NodeId(t) if isinstance(t, int) else self.nodes[t]

    def cls(self, name: str) -> Any:
        """The ``ua`` class of an MV structure or enumeration (after ``build_types``)."""
        return getattr(ua, name)

    def argument(self, spec: tuple) -> ua.Argument:
        """A method ``ua.Argument`` from a spec row ``(name, type[, 1 for an array])``."""
        arg = ua.Argument()
        arg.Name = spec[0]
        arg.DataType = self.datatype(spec[1])
        arg.ValueRank = spec[2] if len(spec) > 2 else -1
        arg.ArrayDimensions = [0] if arg.ValueRank == 1 else []
        arg.Description = ua.LocalizedText(spec[0])
        return arg


async def build_types(srv: Server) -> MvTypes:
    ns = await srv.register_namespace(S.MV_URI)
    t = MvTypes(ns)
    register_aliases(ns)
    await _data_types(srv, t)
    await srv.load_data_type_definitions()
    for name, (nid, sup) in S.OBJECT_TYPES.items():
        node = await srv.get_node(ua.NodeId(sup)).add_object_type(ua.NodeId(nid, ns), _qn(name, ns))
        t.nodes[name] = node.nodeid
    for name, (machine, nid, number, prop) in S.STATES.items():
        node = await add_typed_object(
            srv, t.nodes[machine], ua.NodeId(nid, ns), _qn(name, ns), _STATE_TYPE
        )
        await _number(node, prop, ns, "StateNumber", number)
        t.nodes[name] = node.nodeid
    for name, (typename, nid, in_id, out_id, mandatory, ins, outs) in S.METHODS.items():
        parent = srv.get_node(t.nodes[typename])
        m = await add_method(t, parent, ua.NodeId(nid, ns), name, None, ins, outs, (in_id, out_id))
        await m.set_modelling_rule(mandatory)
        t.nodes[f"{typename}.{name}"] = m.nodeid
    for name, (nid, number, prop, cause) in S.TRANSITIONS.items():
        await _transition(srv, t, name, ua.NodeId(nid, ns), number, prop, cause)
    for typename, name, nid, mandatory, kind, what in S.COMPONENTS:
        parent = srv.get_node(t.nodes[typename])
        if kind == "object":
            node = await add_typed_object(
                srv, parent.nodeid, ua.NodeId(nid, ns), _qn(name, ns), t.nodes[what]
            )
        else:
            node = await parent.add_variable(
                ua.NodeId(nid, ns), _qn(name, ns), None, datatype=t.datatype(what)
            )
        await node.set_modelling_rule(mandatory)
    event_type = srv.get_node(t.nodes["ResultReadyEventType"])
    for name, (nid, mandatory, what) in S.EVENT_FIELDS.items():
        # asyncua's event objects leave out a property whose declared value is null
        p = await event_type.add_property(
            ua.NodeId(nid, ns), _qn(name, ns), _empty(t, what), datatype=t.datatype(what)
        )
        await p.set_modelling_rule(mandatory)
    return t


async def add_typed_object(
    srv: Server, parent: ua.NodeId, nid: ua.NodeId, qn: ua.QualifiedName, typedef: Any
) -> Any:
    """An object of type ``typedef`` without asyncua instantiating the type's declarations
    (afrd builds the instance's children itself, with its own callbacks)."""
    node = await srv.get_node(parent).add_object(nid, qn)
    await retype(node, typedef)
    return node


async def retype(node: Any, typedef: Any) -> None:
    """Point ``node``'s HasTypeDefinition at ``typedef`` (asyncua's add_* set a base type)."""
    for ref in await node.get_references(refs=_TYPEDEF):
        await node.delete_reference(ref.NodeId, _TYPEDEF)
    await node.add_reference(ua.NodeId(typedef) if isinstance(typedef, int) else typedef, _TYPEDEF)


async def add_method(
    t: MvTypes,
    parent: Any,
    nid: ua.NodeId,
    name: str,
    callback: Any,
    ins: list,
    outs: list,
    arg_ids: tuple[int | None, int | None] = (None, None),
) -> Any:
    """A method with its InputArguments/OutputArguments properties (ids ``arg_ids`` in the MV
    namespace when given: the type's declarations)."""
    m = await parent.add_method(nid, _qn(name, t.ns), callback, [], [])
    for bname, args, aid in (
        ("InputArguments", ins, arg_ids[0]),
        ("OutputArguments", outs, arg_ids[1]),
    ):
        if not args:
            continue
        pid = (
            ua.NodeId(aid, t.ns)
            if aid is not None
            else ua.NodeId(NamespaceIndex=nid.NamespaceIndex)
        )
        if isinstance(nid.Identifier, str):  # an instance: readable ids beside the method's
            pid = ua.NodeId(f"{nid.Identifier}.{bname}", nid.NamespaceIndex)
        value = ua.Variant([t.argument(a) for a in args], ua.VariantType.ExtensionObject)
        p = await m.add_property(
            pid, ua.QualifiedName(bname, 0), value, datatype=ua.NodeId(S.ARGUMENT)
        )
        await p.write_value_rank(1)
        if aid is not None:
            await p.set_modelling_rule(True)
    return m


async def _data_types(srv: Server, t: MvTypes) -> None:
    ns = t.ns
    for name, (nid, base) in S.SIMPLE.items():
        t.nodes[name] = (
            await create_data_type(srv.get_node(ua.NodeId(base)), ua.NodeId(nid, ns), _qn(name, ns))
        ).nodeid
    for name, (nid, names, first) in S.ENUMS.items():
        node = await create_data_type(
            srv.get_node(ua.NodeId(S.ENUMERATION)), ua.NodeId(nid, ns), _qn(name, ns)
        )
        d = ua.EnumDefinition()
        d.Fields = [
            ua.EnumField(
                Value=i, Name=n, DisplayName=ua.LocalizedText(n), Description=ua.LocalizedText(n)
            )
            for i, n in enumerate(names, start=first)
        ]
        await node.write_data_type_definition(d)
        t.nodes[name] = node.nodeid
    for name, (nid, enc, sup, fields) in S.STRUCTS.items():
        parent = srv.get_node(t.nodes[sup] if sup else ua.NodeId(S.STRUCTURE))
        node = await create_data_type(parent, ua.NodeId(nid, ns), _qn(name, ns))
        encoding = await create_encoding(
            node, ua.NodeId(enc, ns), ua.QualifiedName("Default Binary", 0)
        )
        d = ua.StructureDefinition()
        d.DefaultEncodingId = encoding.nodeid
        d.BaseDataType = parent.nodeid
        optional = any(f[2] for f in fields)
        d.StructureType = (
            ua.StructureType.StructureWithOptionalFields if optional else ua.StructureType.Structure
        )
        t.nodes[name] = node.nodeid
        d.Fields = [_field(t, f) for f in fields]
        await node.write_data_type_definition(d)


def _field(t: MvTypes, f: tuple) -> ua.StructureField:
    out = ua.StructureField()
    out.Name, out.DataType, out.IsOptional = f[0], t.datatype(f[1]), f[2]
    out.ValueRank = 1 if len(f) > 3 else -1
    out.ArrayDimensions = [0] if len(f) > 3 else []
    out.MaxStringLength = 0
    return out


async def _transition(
    srv: Server, t: MvTypes, name: str, nid: ua.NodeId, number: int, prop: int, cause: str | None
) -> None:
    src, dst = S.transition_ends(name)
    machine = S.STATES[src][0]
    node = await add_typed_object(srv, t.nodes[machine], nid, _qn(name, t.ns), _TRANSITION_TYPE)
    await _number(node, prop, t.ns, "TransitionNumber", number)
    await node.add_reference(t.nodes[src], _FROM_STATE)
    await node.add_reference(t.nodes[dst], _TO_STATE)
    declared = [k for k in t.nodes if k.endswith(f".{cause}")] if cause else []
    if declared:
        await node.add_reference(t.nodes[declared[0]], _HAS_CAUSE)
    t.nodes[name] = node.nodeid


async def _number(node: Any, prop: int, ns: int, bname: str, value: int) -> None:
    await node.add_property(
        ua.NodeId(prop, ns), ua.QualifiedName(bname, 0), ua.Variant(value, ua.VariantType.UInt32)
    )


def _empty(t: MvTypes, what: str | int) -> ua.Variant:
    """A non-null initial value of a declared event field."""
    if what == S.VARIANT:
        return ua.Variant([], ua.VariantType.Variant)
    if what == S.BOOL:
        return ua.Variant(False, ua.VariantType.Boolean)
    if what == S.UTCTIME:
        return ua.Variant(ua.get_win_epoch(), ua.VariantType.DateTime)
    if what == "ResultStateDataType":
        return ua.Variant(0, ua.VariantType.Int32)
    cls = t.cls(what)
    if what == "ProcessingTimesDataType":
        return ua.Variant(cls(StartTime=ua.get_win_epoch(), EndTime=ua.get_win_epoch()))
    return ua.Variant(cls(Id=""))


def _qn(name: str, ns: int) -> ua.QualifiedName:
    return ua.QualifiedName(name, ns)
