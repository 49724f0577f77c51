"""A test-only SASL client: a SCRAM client (RFC 5802) and the link's AUTH_SASL exchange as
spice-gtk ``spice-channel.c`` (``spice_channel_perform_auth_sasl``) runs it, over a raw stream."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import struct
from dataclasses import dataclass, field

from spiceserver.proto.enums import CommonCap, LinkErr
from spiceserver.proto.link import HEADER, LinkMess, LinkReply, caps_to_words
from spiceserver.proto.sasl import encode_data
from tests.support.client import Endpoint, open_stream

__all__ = ["ScramClient", "SaslConversation", "sasl_link"]

SASL_CAPS = caps_to_words({CommonCap.PROTOCOL_AUTH_SELECTION, CommonCap.AUTH_SASL, CommonCap.MINI_HEADER})


@dataclass
class ScramClient:
    """Client side of SCRAM; ``authzid`` goes into the gs2 header as cyrus does (``n,a=alice,``)."""

    hash_name: str
    user: str
    password: str
    authzid: str | None = None
    cnonce: str = "fyko+d2lbbFgONRv9qkxdawL"
    bare: str = field(init=False, default="")
    auth_message: bytes = field(init=False, default=b"")
    salted: bytes = field(init=False, default=b"")

    @property
    def gs2(self) -> str:
        return f"n,{'a=' + self.authzid if self.authzid else ''},"

    def first(self) -> bytes:
        self.bare = f"n={self.user},r={self.cnonce}"
        return (self.gs2 + self.bare).encode()

    def final(self, server_first: bytes, *, nonce: str | None = None, cbind: str | None = None) -> bytes:
        attrs = dict(a.split("=", 1) for a in server_first.decode().split(","))
        self.salted = hashlib.pbkdf2_hmac(self.hash_name, self.password.encode(), base64.b64decode(attrs["s"]), int(attrs["i"]))
        c = cbind if cbind is not None else base64.b64encode(self.gs2.encode()).decode()
        without_proof = f"c={c},r={nonce or attrs['r']}"
        self.auth_message = f"{self.bare},{server_first.decode()},{without_proof}".encode()
        client_key = hmac.digest(self.salted, b"Client Key", self.hash_name)
        stored = hashlib.new(self.hash_name, client_key).digest()
        sig = hmac.digest(stored, self.auth_message, self.hash_name)
        proof = bytes(a ^ b for a, b in zip(client_key, sig, strict=True))
        return f"{without_proof},p={base64.b64encode(proof).decode()}".encode()

    def server_signature(self) -> bytes:
        server_key = hmac.digest(self.salted, b"Server Key", self.hash_name)
        return b"v=" + base64.b64encode(hmac.digest(server_key, self.auth_message, self.hash_name))


class SaslConversation:
    """The AUTH_SASL exchange after the LinkReply, as spice-gtk frames it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, reply: LinkReply) -> None:
        self.reader, self.writer, self.reply = reader, writer, reply
        self.mechlist = b""

    async def u32(self) -> int:
        return int(struct.unpack("<I", await asyncio.wait_for(self.reader.readexactly(4), 10))[0])

    async def select(self) -> bytes:
        """Choose SASL, read the mechanism list."""
        self.writer.write(struct.pack("<I", 2))
        self.mechlist = await asyncio.wait_for(self.reader.readexactly(await self.u32()), 10)
        return self.mechlist

    async def start(self, mech: str, data: bytes | None) -> tuple[bytes | None, bool]:
        self.writer.write(struct.pack("<I", len(mech)) + mech.encode() + encode_data(data))
        return await self.answer()

    async def step(self, data: bytes | None) -> tuple[bytes | None, bool]:
        self.writer.write(encode_data(data))
        return await self.answer()

    async def answer(self) -> tuple[bytes | None, bool]:
        n = await self.u32()
        data = (await self.reader.readexactly(n))[:-1] if n else None
        complete = (await self.reader.readexactly(1))[0]
        return data, bool(complete)

    async def result(self) -> tuple[int, bytes]:
        """The SASL verdict: (0, b"") or (1, the reason)."""
        code = await self.u32()
        return (code, await self.reader.readexactly(await self.u32())) if code else (code, b"")


async def sasl_link(
    ep: Endpoint, channel_type: int, channel_id: int = 0, *, connection_id: int = 0, common_caps: tuple[int, ...] = SASL_CAPS
) -> SaslConversation:
    """Link with AUTH_SASL in the caps (or ``common_caps`` words); raises AssertionError when the
    reply is an error."""
    reader, writer = await open_stream(ep)
    body = LinkMess(connection_id, channel_type, channel_id, common_caps, ()).encode()
    writer.write(HEADER.pack(b"REDQ", 2, 2, len(body)) + body)
    _magic, _major, _minor, size = HEADER.unpack(await asyncio.wait_for(reader.readexactly(HEADER.size), 10))
    reply = LinkReply.parse(await reader.readexactly(size))
    assert reply.error == LinkErr.OK, reply.error
    return SaslConversation(reader, writer, reply)
