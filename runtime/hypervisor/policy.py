"""The hypervisor's policy: what each VM's VF may do, in the vocabulary of `ip link set DEV vf N`.

A TOML file:

    [defaults]                  # optional; applies to every VM, listed or not
    max_mtu = 1500

    [vm.vm0]
    mac = "02:00:00:00:00:01"   # or macs = [...]: the MACs it may use (the first is assigned)
    trust = false               # trusted: may ask for promiscuous / all-multicast
    spoofchk = true             # drop frames with a source MAC or VLAN it may not use
    vlan = 100                  # port VLAN: added and stripped by the switch, invisible to the guest
    guest_vlans = [10, 20]      # or: VLANs the guest may tag itself (not with a port VLAN)
    max_mtu = 9000
    multicast_limit = 16
    state = "auto"              # link state: auto | enable | disable
    storm_control = { broadcast_pps = 1000, multicast_pps = 20000 }   # 0: no limit
    watchdog_us = 5000          # a plugin leaving the device's work undone this long is faulted

Defaults are safe: spoof checking on, not trusted, no VLAN, MTU 1500, 16 multicast groups. A VM
with no MAC in the policy gets the one the hypervisor assigns. Errors name the line and field.
"""
from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Literal

from pydantic import (BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, ValidationError,
                      field_validator, model_validator)

from npa.nic_model.frames import format_mac, is_group
from npa.runtime.sandbox import Budgets, NpaError

ETH_HEADER = 14


class PolicyError(NpaError):
    """A policy file that cannot be read or does not validate; the message says where."""


def parse_mac(text: str) -> int:
    """'02:00:00:00:00:01' -> int; refuses group and all-zero addresses."""
    if not re.fullmatch(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}", text):
        raise ValueError(f"{text!r} is not a MAC address like 02:00:00:00:00:01")
    mac = int(text.replace(":", ""), 16)
    if is_group(mac) or mac == 0:
        raise ValueError(f"{text} is a multicast or zero address, not a VF's own")
    return mac


class StormControl(BaseModel):
    """Broadcast and multicast frames a second a VM's VF may send; the rest are dropped at the
    switch and counted. On by default: 1,000 broadcast frames a second is hundreds of times
    what ARP and DHCP need, yet stops a storm at under 0.01% of a 10G port's 14.88 Mpps;
    20,000 multicast frames a second carries dozens of video streams (about 700 frames a
    second each at 8 Mbit/s). 0 turns a limit off."""

    model_config = ConfigDict(extra="forbid", strict=True)
    broadcast_pps: int = Field(1000, ge=0, le=100_000_000)
    multicast_pps: int = Field(20_000, ge=0, le=100_000_000)


class Rules(BaseModel):
    """One VM's rules; every field has a safe default."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    macs: tuple[StrictStr, ...] = ()
    trust: StrictBool = False  # strict: "yes" is not a boolean, "100" not a number
    spoofchk: StrictBool = True
    vlan: StrictInt = Field(0, ge=0, le=4094)
    guest_vlans: tuple[StrictInt, ...] = ()
    max_mtu: StrictInt = Field(1500, ge=68, le=9702)
    multicast_limit: StrictInt = Field(16, ge=0, le=4096)
    state: Literal["auto", "enable", "disable"] = "auto"
    # The data-path watchdog: a plugin that leaves work the device could do untouched this long
    # (device time) is faulted, as Linux's netdev TX timeout and ENA's keep-alive do.
    watchdog_us: StrictInt = Field(5000, ge=100, le=10_000_000)
    storm_control: StormControl = StormControl()
    # Fair shares of the single-threaded host: a plugin using more fuel per poll than this, on
    # average over a window of polls, is polled less (every N host steps, so that it gets about
    # this much per step); over it for `fair_strikes` windows in a row, it is faulted. The
    # bundled plugins use under 150,000 per poll at full load.
    fuel_per_step: StrictInt = Field(1_000_000, ge=10_000, le=10**12)
    # The same account in wall time, host calls included (cheap in fuel, not in time): a poll
    # or interrupt call over this on average is polled less, then faulted, as for fuel. The
    # bundled plugins take 20-40 µs a poll at full load, a pure-Python driver some 500.
    wall_us_per_step: StrictInt = Field(1000, ge=50, le=1_000_000)
    fair_window_polls: StrictInt = Field(16, ge=1, le=100_000)
    fair_strikes: StrictInt = Field(3, ge=1, le=1000)
    # Deadlines of one export call (wall clock, 5 ms granularity): npa_init, and the plugin's
    # start function and constructors, under `init_budget_ms`; every data-path call under
    # `call_budget_ms`. No plugin holds the host loop longer.
    init_budget_ms: StrictInt = Field(50, ge=5, le=1000)
    call_budget_ms: StrictInt = Field(10, ge=5, le=1000)
    # DMA faults (accesses the IOMMU window refused) in one window of `fair_window_polls`
    # polls above this fault the plugin: the VM goes on emulated, settled by the record.
    dma_fault_limit: StrictInt = Field(64, ge=0, le=1_000_000)

    def budgets(self) -> Budgets:
        """What one call into this VM's plugin may spend (the fuel of one call stays the
        sandbox's: the per-step share is the fairness account's)."""
        return Budgets(deadline_s=self.call_budget_ms / 1000, init_deadline_s=self.init_budget_ms / 1000)

    @model_validator(mode="before")
    @classmethod
    def _one_mac_spelling(cls, data):
        if isinstance(data, dict) and "mac" in data:
            if "macs" in data:
                raise ValueError("give mac or macs, not both")
            data = dict(data)
            data["macs"] = [data.pop("mac")]
        return data

    @field_validator("macs")
    @classmethod
    def _macs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(format_mac(parse_mac(m)) for m in v)

    @field_validator("guest_vlans")
    @classmethod
    def _vids(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if bad := [x for x in v if not 1 <= x <= 4094]:
            raise ValueError(f"VLAN ids are 1 to 4094, not {bad[0]}")
        return tuple(sorted(set(v)))

    @model_validator(mode="after")
    def _port_or_guest_vlans(self):
        if self.vlan and self.guest_vlans:
            raise ValueError("a port VLAN (vlan) and guest VLANs (guest_vlans) exclude each other")
        return self

    @property
    def mac_ints(self) -> tuple[int, ...]:
        return tuple(parse_mac(m) for m in self.macs)

    @property
    def max_frame(self) -> int:
        return self.max_mtu + ETH_HEADER


class Policy:
    """Resolved rules per VM name (defaults, then the VM's own table)."""

    def __init__(self, defaults: dict | None = None, vms: dict[str, dict] | None = None,
                 source: str = "built-in defaults", text: str = ""):
        self.defaults, self.source, self.text = dict(defaults or {}), source, text
        if {"mac", "macs"} & self.defaults.keys():
            raise PolicyError(f"{source}:{_line_of(text, 'defaults', 'mac') or '?'}: [defaults]: "
                              "a MAC belongs to one VM, not to all")
        self._default = _rules(source, text, "defaults", self.defaults)
        self.rules = {name: _rules(source, text, f"vm.{name}", {**self.defaults, **table})
                      for name, table in (vms or {}).items()}
        owner: dict[int, str] = {}
        for name, rules in self.rules.items():  # a MAC belongs to one VM: two would lose frames
            for mac in rules.mac_ints:
                if mac in owner:
                    raise PolicyError(f"{source}:{_line_of(text, f'vm.{name}', 'mac') or '?'}: "
                                      f"[vm.{name}] field 'mac': {format_mac(mac)} is vm.{owner[mac]}'s too")
                owner[mac] = name

    def for_vm(self, name: str) -> Rules:
        return self.rules.get(name, self._default)

    def check_vms(self, count: int) -> None:
        """Every [vm.NAME] table names one of the host's VMs, vm0..vm{count-1}: a typo would
        otherwise leave a VM on the defaults, silently."""
        known = {f"vm{i}" for i in range(count)}
        for name in self.rules:
            if name not in known:
                raise PolicyError(f"{self.source}:{_line_of(self.text, f'vm.{name}', '') or '?'}: "
                                  f"[vm.{name}]: no such VM (this host has vm0..vm{count - 1})")

    @classmethod
    def load(cls, path: str | Path) -> "Policy":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise PolicyError(f"{path}: {e.strerror}") from None
        except UnicodeDecodeError as e:
            raise PolicyError(f"{path}: not UTF-8 text (byte {e.start})") from None
        try:
            raw = tomllib.loads(text)
        except tomllib.TOMLDecodeError as e:
            raise PolicyError(f"{path}: {e}") from None
        if unknown := sorted(set(raw) - {"defaults", "vm"}):
            raise PolicyError(f"{path}:{_line_of(text, unknown[0], '') or _line_of(text, '', unknown[0]) or '?'}: "
                              f"'{unknown[0]}': a policy has [defaults] and [vm.NAME] tables only")
        for table in ("defaults", "vm"):
            if not isinstance(raw.get(table, {}), dict):
                raise PolicyError(f"{path}:{_line_of(text, '', table) or '?'}: '{table}' must be a "
                                  f"table ([{table}]{'' if table == 'defaults' else ' or [vm.NAME]'})")
        vms = raw.get("vm", {})
        if bad := [n for n, t in vms.items() if not isinstance(t, dict)]:
            raise PolicyError(f"{path}: 'vm.{bad[0]}' must be a table ([vm.{bad[0]}])")
        return cls(raw.get("defaults", {}), vms, str(path), text)


def _rules(source: str, text: str, table: str, data: dict) -> Rules:
    try:
        return Rules(**data)
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        if field == "macs" and "mac" in data:
            field = "mac"
        line = _line_of(text, table, field)
        what = f"field '{field}'" if field else "table"
        msg = err["msg"].removeprefix("Value error, ")
        raise PolicyError(f"{source}:{line or '?'}: [{table}] {what}: {msg}") from None
    except TypeError as e:  # not a table at all
        raise PolicyError(f"{source}: [{table}]: {e}") from None


def _line_of(text: str, table: str, field: str) -> int | None:
    lines = text.splitlines()
    start = 0
    if table:
        pat = re.compile(r"^\s*\[\s*" + r"\s*\.\s*".join(
            rf'(?:"{re.escape(p)}"|{re.escape(p)})' for p in table.split(".")) + r"\s*\]")
        hits = [i for i, ln in enumerate(lines) if pat.match(ln)]
        if not hits:
            return None
        start = hits[0]
        if not field:
            return start + 1
    key = field.split(".")[0] if field else ""
    for i in range(start + (1 if table else 0), len(lines)):
        if table and re.match(r"^\s*\[", lines[i]):
            break
        if key and re.match(rf"^\s*{re.escape(key)}\s*=", lines[i]):
            return i + 1
    return start + 1 if table else None
