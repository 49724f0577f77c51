"""Sessions with roles (issue 16): the session table, the link rules, per-role tickets, and the
rules end to end through real sockets with the pure-Python test client."""

from __future__ import annotations

import asyncio
import logging
import pathlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spiceserver import Role, RoleQuery
from spiceserver.channels.link_rules import grant_link
from spiceserver.channels.session import SessionTable
from spiceserver.config import ServerConfig
from spiceserver.errors import ConfigError
from spiceserver.events import ChannelEvent
from spiceserver.proto.enums import ChannelType, LinkErr
from spiceserver.proto.messages import inputs as im
from spiceserver.proto.messages import main as mm
from spiceserver.role_tickets import RoleTickets
from spiceserver.roles import OWNER_ONLY_CHANNELS
from spiceserver.ticket import LinkKey, TicketThrottle, encrypt_ticket
from tests.conftest import Running, start_server
from tests.support.client import ClientChannel, LinkFailed, connect, link_channel

log = logging.getLogger("test")

# --- the session table ---------------------------------------------------------------------------


def test_one_client_replaces_as_libspice_but_a_viewer_never_replaces_an_owner() -> None:
    t = SessionTable(log, max_clients=1)
    a = t.open(Role.OWNER)
    assert a is not None
    b = t.open(Role.OWNER)
    assert b is not None and list(t) == [b]
    assert t.victims_for(Role.VIEWER) is None and t.open(Role.VIEWER) is None
    t.close(b)
    v = t.open(Role.VIEWER)
    assert v is not None and t.victims_for(Role.VIEWER) == [v]  # a viewer replaces a viewer


def test_full_table_an_owner_replaces_the_oldest_viewer_a_viewer_is_refused() -> None:
    t = SessionTable(log, max_clients=3)
    closed: list[int] = []
    o = t.open(Role.OWNER)
    v1 = t.open(Role.VIEWER)
    v2 = t.open(Role.VIEWER)
    assert o and v1 and v2
    for s in (o, v1, v2):
        s.closers.append(lambda s=s: closed.append(s.id))  # type: ignore[misc]
    assert t.open(Role.VIEWER) is None and len(t) == 3 and not closed
    o2 = t.open(Role.OWNER)
    assert o2 is not None and closed == [v1.id] and list(t) == [o, v2, o2]
    assert t.count(Role.OWNER) == 2 and t.count(Role.VIEWER) == 1


def test_full_of_owners_a_new_owner_replaces_the_oldest() -> None:
    t = SessionTable(log, max_clients=2)
    a, b = t.open(Role.OWNER), t.open(Role.OWNER)
    c = t.open(Role.OWNER)
    assert c is not None and list(t) == [b, c] and a not in list(t)


# --- the link rules ------------------------------------------------------------------------------


def _table() -> tuple[SessionTable, int, int]:
    t = SessionTable(log, max_clients=4)
    o, v = t.open(Role.OWNER), t.open(Role.VIEWER)
    assert o and v
    return t, o.id, v.id


@pytest.mark.parametrize(
    ("ctype", "which", "ticket", "code", "role"),
    [
        (ChannelType.INPUTS, "owner", Role.OWNER, LinkErr.OK, Role.OWNER),
        (ChannelType.INPUTS, "owner", Role.VIEWER, LinkErr.BAD_CONNECTION_ID, None),  # a viewer ticket never joins an owner
        (ChannelType.INPUTS, "viewer", Role.VIEWER, LinkErr.OK, Role.VIEWER),
        (ChannelType.INPUTS, "viewer", Role.OWNER, LinkErr.OK, Role.VIEWER),  # the session's role, not the ticket's
        (ChannelType.DISPLAY, "viewer", Role.VIEWER, LinkErr.OK, Role.VIEWER),
        (ChannelType.PLAYBACK, "viewer", Role.VIEWER, LinkErr.OK, Role.VIEWER),
        (ChannelType.RECORD, "viewer", Role.VIEWER, LinkErr.CHANNEL_NOT_AVAILABLE, None),
        (ChannelType.USBREDIR, "viewer", Role.OWNER, LinkErr.CHANNEL_NOT_AVAILABLE, None),
        (ChannelType.SMARTCARD, "viewer", None, LinkErr.CHANNEL_NOT_AVAILABLE, None),
        (ChannelType.PORT, "viewer", Role.VIEWER, LinkErr.CHANNEL_NOT_AVAILABLE, None),
        (ChannelType.WEBDAV, "viewer", Role.VIEWER, LinkErr.CHANNEL_NOT_AVAILABLE, None),
        (ChannelType.RECORD, "owner", Role.OWNER, LinkErr.OK, Role.OWNER),
        (ChannelType.INPUTS, "owner", None, LinkErr.OK, Role.OWNER),  # no ticketing: the id is all
        (ChannelType.INPUTS, "unknown", Role.OWNER, LinkErr.BAD_CONNECTION_ID, None),
    ],
)
def test_other_channel_link_rules(ctype: int, which: str, ticket: Role | None, code: int, role: Role | None) -> None:
    t, owner, viewer = _table()
    sid = {"owner": owner, "viewer": viewer, "unknown": 0x1234}[which]
    grant = grant_link(t, ctype, sid, ticket)
    assert (grant.code, grant.role) == (code, role)


def test_a_promoted_session_links_with_its_own_password() -> None:
    t = SessionTable(log, max_clients=4)
    promoted = t.open(Role.OWNER, ticket_role=Role.VIEWER)  # set_role, or a policy promoting a viewer ticket
    owner = t.open(Role.OWNER, ticket_role=Role.OWNER)
    assert promoted and owner
    assert grant_link(t, ChannelType.RECORD, promoted.id, Role.VIEWER).code == LinkErr.OK
    assert grant_link(t, ChannelType.INPUTS, owner.id, Role.VIEWER).code == LinkErr.BAD_CONNECTION_ID


def test_main_link_rules() -> None:
    t = SessionTable(log, max_clients=2)
    assert grant_link(t, ChannelType.MAIN, 0, Role.VIEWER).role is Role.VIEWER
    assert grant_link(t, ChannelType.MAIN, 0, None).role is Role.OWNER  # no ticketing, no owner yet
    t.open(Role.OWNER)
    assert grant_link(t, ChannelType.MAIN, 0, None).role is Role.VIEWER  # then viewers
    t.open(Role.VIEWER)
    assert grant_link(t, ChannelType.MAIN, 0, Role.VIEWER).code == LinkErr.ERROR  # full
    assert grant_link(t, ChannelType.MAIN, 0, Role.OWNER).code == LinkErr.OK  # replaces the viewer
    seen: list[RoleQuery] = []

    def policy(q: RoleQuery) -> Role | None:
        seen.append(q)
        return None if q.peer == "10.0.0.9:1" else Role.OWNER

    assert grant_link(t, ChannelType.MAIN, 0, Role.VIEWER, peer="10.0.0.9:1", policy=policy).code == LinkErr.PERMISSION_DENIED
    assert grant_link(t, ChannelType.MAIN, 0, Role.VIEWER, peer="10.0.0.8:1", policy=policy).role is Role.OWNER
    assert seen[0] == RoleQuery("10.0.0.9:1", Role.VIEWER, False, 1, 1, 2)
    bad = grant_link(t, ChannelType.MAIN, 0, Role.OWNER, policy=lambda q: "owner")  # type: ignore[arg-type,return-value]
    assert bad.code == LinkErr.PERMISSION_DENIED
    one = SessionTable(log)
    one.open(Role.OWNER)
    assert grant_link(one, ChannelType.MAIN, 0, None).role is Role.OWNER  # max_clients 1: it replaces


# --- tickets per role ----------------------------------------------------------------------------


def test_role_tickets() -> None:
    key = LinkKey()
    tickets = RoleTickets(throttle=TicketThrottle(3, 60.0))
    tickets.set("own", now=0)
    tickets.set("view", role=Role.VIEWER, now=0)

    def auth(pw: str, **kw: object) -> tuple[str | None, Role | None]:
        r = tickets.authenticate(key, encrypt_ticket(key.public_der, pw), now=1, peer=("10.1.1.1", 5), **kw)  # type: ignore[arg-type]
        return r.reason, r.role

    assert auth("own") == (None, Role.OWNER)
    assert auth("view") == (None, Role.VIEWER)
    assert auth("nope")[0] == "invalid password"
    assert auth("x", required=False) == (None, None)
    assert auth("nope")[0] is not None and "locked out" in str(auth("nope")[0])
    assert "locked out" in str(auth("own")[0])  # the throttle is shared by the roles
    only_viewer = RoleTickets()
    only_viewer.set("view", 5, Role.VIEWER, now=0)
    r = only_viewer.authenticate(key, encrypt_ticket(key.public_der, "view"), now=6)
    assert r.reason == "the ticket has expired" and r.role is None


# --- end to end ----------------------------------------------------------------------------------


async def _start(**kw: object) -> Running:
    kw.setdefault("password", "own")
    kw.setdefault("viewer_password", "view")
    kw.setdefault("max_clients", 4)
    return await start_server(**kw)


def test_a_viewer_password_needs_ticketing() -> None:
    with pytest.raises(ConfigError):
        ServerConfig(port=0, viewer_password="view", disable_ticketing=True)


async def _channels(main: ClientChannel) -> list[tuple[int, int]]:
    await main.send(mm.AttachChannels())
    lst = await main.expect(mm.ChannelsList, skip=(mm.Name, mm.Uuid, mm.MouseMode))
    return [(c.type, c.id) for c in lst.channels]


async def _settled(inp: ClientChannel) -> None:
    """Everything sent before on ``inp`` was handled: MOTION_ACK_BUNCH motions get their ack."""
    for _ in range(im.MOTION_ACK_BUNCH):
        await inp.send(im.MouseMotion(dx=1, dy=1, buttons_state=0))
    await inp.expect(im.MouseMotionAck, skip=(im.InputsInit, im.KeyModifiers))


async def test_viewer_keys_dropped_owner_keys_pass_and_channel_lists() -> None:
    r = await _start()
    r.server.add_record(lambda pcm: None)
    r.server.add_playback()
    r.server.remove_tablet()
    try:
        owner = await connect(r.ep, password="own")
        viewer = await connect(r.ep, password="view")
        assert [s.role for s in r.server.sessions()] == [Role.OWNER, Role.VIEWER]
        assert ChannelType.RECORD in {t for t, _ in await _channels(owner.main)}
        vlist = await _channels(viewer.main)
        assert ChannelType.RECORD not in {t for t, _ in vlist} and ChannelType.PLAYBACK in {t for t, _ in vlist}
        vin = await viewer.link(ChannelType.INPUTS)
        oin = await owner.link(ChannelType.INPUTS)
        await vin.send(im.KeyDown(code=0x1E))
        await vin.send(im.KeyUp(code=0x9E))
        await _settled(vin)
        await oin.send(im.KeyDown(code=0x30))
        await oin.send(im.KeyUp(code=0xB0))
        await _settled(oin)
        assert [e for e in r.devices.events if e[0] == "scancodes"] == [("scancodes", b"\x30"), ("scancodes", b"\xb0")]
        assert [e for e in r.devices.events if e[0] == "motion"] == [("motion", 1, 1, 0, 0)] * 4  # the owner's
        assert r.server.sessions()[1].inputs_dropped == 2 + im.MOTION_ACK_BUNCH
        # a viewer's mouse mode request changes nothing
        await viewer.main.send(mm.MouseModeRequest(mode=2))
        # owner-only channels: refused to a viewer, even with the owner's ticket
        with pytest.raises(LinkFailed) as e:
            await link_channel(r.ep, ChannelType.RECORD, connection_id=viewer.session_id, password="own")
        assert e.value.code == LinkErr.CHANNEL_NOT_AVAILABLE
        # a viewer's ticket never joins the owner's session
        with pytest.raises(LinkFailed) as e:
            await link_channel(r.ep, ChannelType.INPUTS, connection_id=owner.session_id, password="view")
        assert e.value.code == LinkErr.BAD_CONNECTION_ID
        rec = await owner.link(ChannelType.RECORD)
        await rec.close()
    finally:
        await r.server.close()


async def test_set_role_live_and_disconnect() -> None:
    r = await _start()
    r.server.add_record(lambda pcm: None)
    events: list[ChannelEvent] = []
    r.server.add_channel_listener(events.append)
    try:
        a = await connect(r.ep, password="own")
        b = await connect(r.ep, password="view")
        await _channels(a.main)
        await _channels(b.main)
        ain = await a.link(ChannelType.INPUTS)
        arec = await a.link(ChannelType.RECORD)
        await ain.send(im.KeyDown(code=0x1E))  # held while demoted: released by the server
        await _settled(ain)
        r.server.set_role(a.session_id, "viewer")
        assert await arec.closed()
        await r.devices.wait_for(lambda ev: ("scancodes", b"\x9e") in ev)
        n = len(r.devices.events)
        await ain.send(im.KeyDown(code=0x20))
        await _settled(ain)
        assert len(r.devices.events) == n  # input stopped at once
        r.server.set_role(b.session_id, Role.OWNER)
        more = await b.main.expect(mm.ChannelsList, skip=(mm.MouseMode, mm.AgentConnected, mm.AgentConnectedTokens))
        assert [(c.type, c.id) for c in more.channels] == [(ChannelType.RECORD, 0)]
        brec = await b.link(ChannelType.RECORD)
        with pytest.raises(KeyError):
            r.server.set_role(0x99, Role.OWNER)
        roles = {(e.info.session_id, e.info.channel): e.info.role for e in events if e.kind == "connected"}
        assert roles[a.session_id, "main"] == "owner" and roles[b.session_id, "main"] == "viewer"
        assert roles[b.session_id, "record"] == "owner"
        assert {c.session_id: c.role for c in r.server.clients()} == {a.session_id: "viewer", b.session_id: "owner"}
        changed = {(e.info.session_id, e.info.channel, e.info.role) for e in events if e.kind == "role-changed"}
        assert {(a.session_id, "main", "viewer"), (a.session_id, "inputs", "viewer"), (b.session_id, "main", "owner")} <= changed
        m = await r.server.metrics()
        assert m.sessions_by_role == {"owner": 1, "viewer": 1}
        assert 'spiceserver_sessions_by_role{role="viewer"} 1' in m.prometheus()
        r.server.disconnect(a.session_id)
        assert await a.main.closed() and await ain.closed()
        assert [s.id for s in r.server.sessions()] == [b.session_id]
        await brec.close()
    finally:
        await r.server.close()


async def test_no_ticketing_first_owner_then_viewers_and_max_clients() -> None:
    r = await start_server(max_clients=2)
    try:
        a = await connect(r.ep)
        b = await connect(r.ep)
        assert [s.role for s in r.server.sessions()] == [Role.OWNER, Role.VIEWER]
        with pytest.raises(LinkFailed) as e:
            await connect(r.ep)  # full, and a viewer never replaces anyone
        assert e.value.code == LinkErr.ERROR and e.value.stage == "result"
        await a.main.close()
        await asyncio.wait_for(_until(lambda: len(r.server.sessions()) == 1), 10)
        c = await connect(r.ep)  # no owner left: the next client is the owner
        assert {s.id: s.role for s in r.server.sessions()} == {b.session_id: Role.VIEWER, c.session_id: Role.OWNER}
    finally:
        await r.server.close()


async def test_role_policy_and_set_ticket_per_role() -> None:
    r = await _start(viewer_password=None)
    try:
        with pytest.raises(LinkFailed):
            await connect(r.ep, password="view")
        r.server.set_ticket("watch", role="viewer")
        v = await connect(r.ep, password="watch")
        assert r.server.sessions()[0].role is Role.VIEWER and v.init.agent_connected == 0
        r.server.set_role_policy(lambda q: Role.VIEWER if q.ticket_role is Role.OWNER else None)
        o = await connect(r.ep, password="own")
        assert r.server.sessions()[1].id == o.session_id and r.server.sessions()[1].role is Role.VIEWER
        with pytest.raises(LinkFailed) as e:
            await connect(r.ep, password="watch")
        assert e.value.code == LinkErr.PERMISSION_DENIED
        r.server.set_role_policy(None)
    finally:
        await r.server.close()


async def _until(pred: object) -> None:
    while not pred():  # type: ignore[operator]
        await asyncio.sleep(0.01)


async def test_the_agent_is_an_owners_only() -> None:
    r = await _start()
    r.server.remove_tablet()
    try:
        r.server.set_agent_attached(True)
        owner = await connect(r.ep, password="own")
        viewer = await connect(r.ep, password="view")
        assert (owner.init.agent_connected, viewer.init.agent_connected) == (1, 0)
        await viewer.main.send(mm.AgentStart(num_tokens=10))  # not told of an agent: ignored
        await viewer.main.send(mm.MouseModeRequest(mode=2))  # agent mouse makes client mode possible: not for a viewer
        r.server.set_agent_attached(False)
        assert await owner.main.expect(mm.AgentDisconnected, skip=(mm.Name, mm.Uuid))
        r.server.set_agent_attached(True)
        assert await owner.main.expect(mm.AgentConnectedTokens, skip=(mm.MouseMode,))
        # the viewer heard of neither change (its next message is the mouse mode update)
        assert isinstance(await viewer.main.expect(mm.MouseMode, skip=(mm.Name, mm.Uuid)), mm.MouseMode)
        assert r.server.mouse_mode == 1
        r.server.set_role(viewer.session_id, Role.OWNER)  # promoted: the agent appears
        assert await viewer.main.expect(mm.AgentConnectedTokens, skip=(mm.MouseMode,))
        r.server.set_role(owner.session_id, "viewer")  # demoted: it goes away
        assert await owner.main.expect(mm.AgentDisconnected, skip=(mm.MouseMode,))
    finally:
        await r.server.close()


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["main", "other", "close", "set_role"]),
        st.sampled_from([None, Role.OWNER, Role.VIEWER]),
        st.sampled_from(list(ChannelType)),
        st.integers(0, 7),
    ),
    max_size=40,
)


@settings(max_examples=300, deadline=None)
@given(max_clients=st.integers(1, 4), ops=_OPS)
def test_link_rules_hold_whatever_the_sequence(max_clients: int, ops: list[tuple[str, Role | None, ChannelType, int]]) -> None:
    """Whatever links, closes and role changes come: never more than max_clients sessions, a viewer
    never replaces anyone, and a viewer's ticket never joins a session its main link did not make a
    viewer one, nor a viewer session an owner-only channel."""
    t = SessionTable(log, max_clients=max_clients)
    for op, role, ctype, pick in ops:
        live = list(t)
        target = live[pick % len(live)] if live else None
        if op == "main":
            grant = grant_link(t, ChannelType.MAIN, 0, role)
            if grant.code == LinkErr.OK:
                assert grant.role is not None
                before = set(s.id for s in t)
                s = t.open(grant.role, ticket_role=role)
                assert s is not None
                if grant.role is Role.VIEWER and max_clients > 1:
                    assert before <= set(x.id for x in t)  # nobody pushed out
            else:
                assert role is Role.VIEWER or (role is None and t.count(Role.OWNER)) or max_clients > 1
        elif op == "close" and target is not None:
            t.close(target)
        elif op == "set_role" and target is not None:
            target.role = role or Role.OWNER
        elif op == "other" and ctype != ChannelType.MAIN:
            sid = target.id if target is not None else 0x5EED
            grant = grant_link(t, ctype, sid, role)
            if grant.code == LinkErr.OK:
                assert target is not None and grant.role is target.role
                if role is Role.VIEWER:
                    assert target.role is Role.VIEWER or target.ticket_role is Role.VIEWER
                if ctype in OWNER_ONLY_CHANNELS:
                    assert target.role is Role.OWNER
        assert len(t) <= max_clients


async def test_set_role_and_disconnect_from_another_thread() -> None:
    r = await _start()
    try:
        a = await connect(r.ep, password="own")
        ain = await a.link(ChannelType.INPUTS)
        await asyncio.to_thread(r.server.set_role, a.session_id, "viewer")
        await asyncio.to_thread(r.server.set_role, 0x99, "viewer")  # unknown: logged, not raised
        with pytest.raises(ValueError):
            await asyncio.to_thread(r.server.set_role, a.session_id, "admin")
        await ain.send(im.KeyDown(code=0x1E))
        await _settled(ain)  # (the role change was scheduled before these messages were read)
        assert r.server.sessions()[0].role is Role.VIEWER and not [e for e in r.devices.events if e[0] == "scancodes"]
        await asyncio.to_thread(r.server.disconnect, a.session_id)
        assert await a.main.closed() and await ain.closed()
    finally:
        await r.server.close()


async def test_a_sasl_login_is_an_owner_unless_the_policy_says_otherwise(tmp_path: pathlib.Path) -> None:
    from tests.test_sasl_auth import sasl_server, scram_login

    r, ep = await sasl_server(tmp_path, max_clients=3)
    seen: list[RoleQuery] = []

    def policy(q: RoleQuery) -> Role | None:
        seen.append(q)
        return Role.VIEWER if len(seen) > 1 else q.ticket_role

    events: list[ChannelEvent] = []
    r.server.add_channel_listener(events.append)
    try:
        assert (await scram_login(ep, ChannelType.MAIN, "secret"))[:2] == (0, LinkErr.OK)
        r.server.set_role_policy(policy)
        assert (await scram_login(ep, ChannelType.MAIN, "secret"))[:2] == (0, LinkErr.OK)
        assert (await scram_login(ep, ChannelType.MAIN, "secret"))[:2] == (0, LinkErr.OK)
        assert [(q.user, q.ticket_role) for q in seen] == [("alice", Role.OWNER)] * 2
        # (each login's INIT was read: its main channel had linked, with the role it was given)
        assert [e.info.role for e in events if e.kind == "connected"] == ["owner", "owner", "viewer"]
    finally:
        await r.server.close()
