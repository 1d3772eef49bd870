"""afrd's Machine Vision tables (``opcua_mv_spec``) against the official NodeSet, which afrd does
not ship (README): point ``AFRD_MV_NODESET`` at ``Opc.Ua.MachineVision.NodeSet2.xml``
(github.com/OPCFoundation/UA-Nodeset, MachineVision/) to check every node id, browse name,
number and method signature afrd serves."""

from __future__ import annotations

import os
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from afrd.daemon.interfaces import opcua_mv_spec as S

NODESET = os.environ.get("AFRD_MV_NODESET")
pytestmark = pytest.mark.skipif(
    not NODESET or not Path(NODESET).is_file(),
    reason="AFRD_MV_NODESET does not name the official MachineVision NodeSet2.xml",
)
UA = "{http://opcfoundation.org/UA/2011/03/UANodeSet.xsd}"
TYPES = "{http://opcfoundation.org/UA/2008/02/Types.xsd}"


@pytest.fixture(scope="module")
def nodes() -> dict:
    root = ET.parse(NODESET).getroot()
    aliases = {a.get("Alias"): a.text for a in root.find(f"{UA}Aliases")}
    out = {}
    for el in root:
        if el.get("NodeId", "").startswith("ns=1;i="):
            refs = [
                (
                    aliases.get(r.get("ReferenceType"), r.get("ReferenceType")),
                    r.get("IsForward") != "false",
                    r.text,
                )
                for r in el.find(f"{UA}References")
            ]
            out[int(el.get("NodeId")[7:])] = (el, refs)
    return out


def name(nodes: dict, nid: int) -> str:
    return nodes[nid][0].get("BrowseName").split(":")[-1]


def ref(nodes: dict, nid: int, reftype: str, forward: bool = True) -> list[str]:
    return [t for r, f, t in nodes[nid][1] if r == reftype and f == forward]


def value(nodes: dict, nid: int) -> str:
    return "".join(nodes[nid][0].find(f"{UA}Value").itertext()).strip()


def test_types_states_transitions(nodes):
    for table in (S.SIMPLE, S.ENUMS, S.STRUCTS, S.OBJECT_TYPES):
        for n, row in table.items():
            assert name(nodes, row[0]) == n
    for n, (_t, enc, sup, fields) in S.STRUCTS.items():
        el = nodes[S.STRUCTS[n][0]][0]
        # the NodeSet lists a structure's own fields; its DataTypeDefinition (afrd's) all of them
        own = fields[len(S.STRUCTS[sup][3]) :] if sup else fields
        assert [f.get("Name") for f in el.find(f"{UA}Definition")] == [f[0] for f in own], n
        assert name(nodes, enc) == "Default Binary"
        parent = ref(nodes, S.STRUCTS[n][0], "i=45", False)
        assert parent == ([f"ns=1;i={S.STRUCTS[sup][0]}"] if sup else ["i=22"]), n
    for n, (machine, nid, number, prop) in S.STATES.items():
        assert name(nodes, nid) == n and int(value(nodes, prop)) == number
        assert ref(nodes, nid, "i=47", False) == [f"ns=1;i={S.OBJECT_TYPES[machine][0]}"]
    for n, (nid, number, prop, cause) in S.TRANSITIONS.items():
        assert name(nodes, nid) == n and int(value(nodes, prop)) == number
        src, dst = S.transition_ends(n)
        assert [name(nodes, int(t[7:])) for t in ref(nodes, nid, "i=51")] == [src]
        assert [name(nodes, int(t[7:])) for t in ref(nodes, nid, "i=52")] == [dst]
        causes = [name(nodes, int(t[7:])) for t in ref(nodes, nid, "i=53")]
        assert causes == ([cause] if cause else []), n
    for n, (nid, mandatory, _t) in S.EVENT_FIELDS.items():
        assert name(nodes, nid) == n
        assert ref(nodes, nid, "i=37") == (["i=78"] if mandatory else ["i=80"]), n


def test_method_signatures(nodes):
    for n, (typename, nid, in_id, out_id, mandatory, ins, outs) in S.METHODS.items():
        assert name(nodes, nid) == n
        assert ref(nodes, nid, "i=47", False) == [f"ns=1;i={S.OBJECT_TYPES[typename][0]}"]
        rule = ref(nodes, nid, "i=37")
        assert rule == (["i=78"] if mandatory else ["i=80"]), n
        for aid, args in ((in_id, ins), (out_id, outs)):
            if aid is None:
                continue
            got = [
                (
                    a.find(f"{TYPES}Name").text,
                    a.find(f"{TYPES}DataType").find(f"{TYPES}Identifier").text,
                )
                for a in nodes[aid][0].iter(f"{TYPES}Argument")
            ]
            want = [
                (a[0], f"i={a[1]}" if isinstance(a[1], int) else f"ns=1;i={_id(a[1])}")
                for a in args
            ]
            assert got == want, n


def _id(typename: str) -> int:
    for table in (S.SIMPLE, S.ENUMS, S.STRUCTS):
        if typename in table:
            return table[typename][0]
    raise KeyError(typename)
