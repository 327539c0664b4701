"""The control channel between a VM's shell and the hypervisor: typed messages, msgpack frames.

The plugin has no control import: MAC, RX mode, VLANs, multicast and MTU are requests the guest
makes here, and the hypervisor answers each under its policy. Messages are pydantic models
tagged by `kind`; on the wire each is one msgpack map {"id", "kind", ...fields}. The channel is
an in-memory pair of queues of encoded frames; anything with `send(bytes)`/`recv() -> bytes`
(a socket with length framing) could carry the same frames.
"""
from __future__ import annotations

from collections import deque
from typing import Annotated, Literal, Union

import msgpack
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, TypeAdapter, ValidationError

from npa.runtime.sandbox import NpaError


class ChannelError(NpaError):
    """A frame that is not a valid control message."""


MAX_FRAME = 16 << 10  # a control frame larger than this is refused undecoded
MAX_GROUPS = 256  # multicast groups in one request (the policy's limit is usually far lower)
# A MAC address as the guest writes it: six hex octets, so every value is 48-bit by construction.
Mac = Annotated[str, Field(pattern=r"^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$")]


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# -- shell -> hypervisor ------------------------------------------------------------------------
class SetMac(_Msg):
    kind: Literal["set_mac"] = "set_mac"
    mac: Mac


class SetRxMode(_Msg):
    kind: Literal["set_rx_mode"] = "set_rx_mode"
    promisc: StrictBool = False
    allmulti: StrictBool = False


class AddVlan(_Msg):
    kind: Literal["add_vlan"] = "add_vlan"
    vid: StrictInt = Field(ge=1, le=4094)


class RemoveVlan(_Msg):
    kind: Literal["remove_vlan"] = "remove_vlan"
    vid: StrictInt = Field(ge=1, le=4094)


class SetMulticast(_Msg):
    kind: Literal["set_multicast"] = "set_multicast"
    groups: tuple[Mac, ...] = Field(default=(), max_length=MAX_GROUPS)


class SetMtu(_Msg):
    kind: Literal["set_mtu"] = "set_mtu"
    mtu: StrictInt = Field(ge=68, le=65535)


# -- hypervisor -> shell ------------------------------------------------------------------------
class VfOffer(_Msg):
    kind: Literal["vf_offer"] = "vf_offer"
    vf: int
    pci_id: str
    bar0_size: int


class VfRevoke(_Msg):
    kind: Literal["vf_revoke"] = "vf_revoke"
    reason: str


class LinkState(_Msg):
    kind: Literal["link_state"] = "link_state"
    up: StrictBool


class Reply(_Msg):
    """The answer to request `id`: ok, or refused by policy rule `rule`, or an error."""

    kind: Literal["reply"] = "reply"
    id: int
    status: Literal["ok", "refused", "error"]
    rule: str | None = None
    message: str = ""


Request = Union[SetMac, SetRxMode, AddVlan, RemoveVlan, SetMulticast, SetMtu]
Message = Annotated[Union[SetMac, SetRxMode, AddVlan, RemoveVlan, SetMulticast, SetMtu,
                          VfOffer, VfRevoke, LinkState, Reply], Field(discriminator="kind")]
_MESSAGE = TypeAdapter(Message)


def encode(msg_id: int, msg: BaseModel) -> bytes:
    return msgpack.packb({"id": msg_id, **msg.model_dump()})


def decode(frame: bytes) -> tuple[int, BaseModel]:
    """(id, message) from one frame; ChannelError naming what is wrong."""
    if len(frame) > MAX_FRAME:
        raise ChannelError(f"control frame of {len(frame)} bytes; the limit is {MAX_FRAME}")
    try:
        data = msgpack.unpackb(frame, strict_map_key=True)
    except Exception as e:  # msgpack raises several unrelated types on garbage
        raise ChannelError(f"control frame is not msgpack: {e}") from None
    if not isinstance(data, dict) or type(data.get("id")) is not int or not 0 <= data["id"] < 1 << 63:
        raise ChannelError("control frame is not a map with an integer 'id'")
    msg_id = data.pop("id")
    if data.get("kind") == "reply":
        data["id"] = msg_id
    try:
        return msg_id, _MESSAGE.validate_python(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "message"
        bad = ChannelError(f"control message {data.get('kind')!r}: {where}: {err['msg']}")
        bad.msg_id = msg_id  # the frame said which request it was: the error answers that one
        raise bad from None


class Endpoint:
    """One side of a channel: sends to the peer's inbox, receives from its own."""

    def __init__(self, inbox: deque[bytes], outbox: deque[bytes]):
        self.inbox, self.outbox = inbox, outbox
        self._next_id = 1

    def send(self, msg: BaseModel, msg_id: int | None = None) -> int:
        if msg_id is None:
            msg_id, self._next_id = self._next_id, self._next_id + 1
        self.outbox.append(encode(msg_id, msg))
        return msg_id

    def recv(self) -> tuple[int, BaseModel] | None:
        return decode(self.inbox.popleft()) if self.inbox else None

    def pending(self) -> int:
        return len(self.inbox)


def channel() -> tuple[Endpoint, Endpoint]:
    """A connected pair: (shell side, hypervisor side)."""
    a, b = deque(), deque()
    return Endpoint(a, b), Endpoint(b, a)
