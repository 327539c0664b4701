"""Feature bits: what a plugin can do (manifest) and what the shell offers (init config)."""
from enum import IntFlag


class Feature(IntFlag):
    INTR = 1 << 0          # interrupt-driven operation through npa_intr
    TX_CSUM = 1 << 1       # transmit checksum offload
    RX_CSUM = 1 << 2       # receive checksum validation
    VLAN_INSERT = 1 << 3   # insert the entry's VLAN tag on transmit
    VLAN_STRIP = 1 << 4    # strip the VLAN tag on receive into the entry
    JUMBO = 1 << 5         # frames above 1518 bytes

    @classmethod
    def from_names(cls, names: list[str]) -> "Feature":
        value = cls(0)
        for n in names:
            try:
                value |= cls[n.upper()]
            except KeyError:
                known = ", ".join(f.name.lower() for f in cls)
                raise ValueError(f"unknown feature {n!r} (known: {known})") from None
        return value

    def names(self) -> list[str]:
        return [f.name.lower() for f in type(self) if f in self]

    @staticmethod
    def doc(f: "Feature") -> str:
        return _DOCS[f]


_DOCS = {
    Feature.INTR: "interrupt-driven operation through `npa_intr`",
    Feature.TX_CSUM: "transmit checksum offload",
    Feature.RX_CSUM: "receive checksum validation",
    Feature.VLAN_INSERT: "insert the entry's VLAN tag on transmit",
    Feature.VLAN_STRIP: "strip the VLAN tag on receive into the entry",
    Feature.JUMBO: "frames above 1518 bytes",
}
