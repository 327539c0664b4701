"""The plugin manifest: its schema, its source form (`plugin.toml`) and its msgpack codec.

The manifest travels inside the image as the custom section `npa.manifest`, so a loader or a
hypervisor can read it without instantiating anything.
"""
from __future__ import annotations

import tomllib
from pathlib import Path

import msgpack
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .features import Feature
from .limits import LIMIT

MANIFEST_SECTION = "npa.manifest"
NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
VERSION_PATTERN = r"^\d+\.\d+\.\d+([-+][0-9A-Za-z.-]+)?$"


class ManifestError(ValueError):
    """A manifest that cannot be read or does not fit the schema; the message names the field."""


_MANIFEST_KEYS = ("abi", "name", "version", "vendor", "devices", "features")
MANIFEST_LIMIT = LIMIT["manifest_bytes"]


def _unique_keys(pairs: list) -> dict:
    """A msgpack map whose keys are all strings, none twice (a later copy must not win)."""
    out: dict = {}
    for k, v in pairs:
        if not isinstance(k, str):
            raise ManifestError(f"{MANIFEST_SECTION}: a map key is {type(k).__name__}, not a string")
        if k in out:
            raise ManifestError(f"{MANIFEST_SECTION}: field {k!r} appears twice")
        out[k] = v
    return out


def _first_error(where: str, err: ValidationError) -> ManifestError:
    e = err.errors()[0]
    loc = ".".join(str(p) for p in e["loc"]) or "(root)"
    return ManifestError(f"{where}: field '{loc}': {e['msg']}")


class PciId(BaseModel):
    model_config = ConfigDict(frozen=True)
    vendor: int = Field(ge=0, le=0xFFFF)
    device: int = Field(ge=0, le=0xFFFF)

    def __str__(self) -> str:
        return f"{self.vendor:04x}:{self.device:04x}"

    @classmethod
    def parse(cls, text: str) -> "PciId":
        try:
            v, d = text.split(":")
            return cls(vendor=int(v, 16), device=int(d, 16))
        except (ValueError, ValidationError):
            raise ValueError(f"{text!r} is not a PCI id 'vvvv:dddd' in hex") from None


class Manifest(BaseModel):
    """What an image says of itself, as the loader and hypervisor read it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    abi_major: int = Field(ge=0, le=0xFFFF)
    abi_minor: int = Field(ge=0, le=0xFFFF)
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    vendor: str = Field(default="", max_length=128)
    devices: tuple[PciId, ...] = Field(min_length=1)
    features: int = Field(default=0, ge=0, le=0xFFFFFFFF)

    def encode(self) -> bytes:
        return msgpack.packb({
            "abi": [self.abi_major, self.abi_minor], "name": self.name,
            "version": self.version, "vendor": self.vendor,
            "devices": [[d.vendor, d.device] for d in self.devices], "features": self.features,
        })

    @classmethod
    def decode(cls, payload: bytes) -> "Manifest":
        """The manifest in an image; ManifestError naming the field for anything else."""
        if len(payload) > MANIFEST_LIMIT:
            raise ManifestError(f"{MANIFEST_SECTION}: {len(payload)} bytes; the limit is {MANIFEST_LIMIT}")
        try:
            raw = msgpack.unpackb(payload, raw=False, strict_map_key=True,
                                  object_pairs_hook=_unique_keys)
        except ManifestError:
            raise
        except Exception as e:  # msgpack raises several unrelated types on garbage
            raise ManifestError(f"{MANIFEST_SECTION}: not msgpack ({e})") from None
        if not isinstance(raw, dict):
            raise ManifestError(f"{MANIFEST_SECTION}: expected a map, got {type(raw).__name__}")
        unknown = [k for k in raw if k not in _MANIFEST_KEYS]
        if unknown:
            raise ManifestError(f"{MANIFEST_SECTION}: field {unknown[0]!r}: not a manifest field "
                                f"(expected {', '.join(_MANIFEST_KEYS)})")
        abi = raw.pop("abi", None)
        if not (isinstance(abi, list) and len(abi) == 2):
            raise ManifestError(f"{MANIFEST_SECTION}: field 'abi': expected [major, minor]")
        devices = raw.pop("devices", None)
        if not isinstance(devices, list) or not all(isinstance(d, list) and len(d) == 2 for d in devices):
            raise ManifestError(f"{MANIFEST_SECTION}: field 'devices': expected [[vendor, device], ...]")
        try:
            return cls(abi_major=abi[0], abi_minor=abi[1],
                       devices=[PciId(vendor=v, device=d) for v, d in devices], **raw)
        except ValidationError as e:
            raise _first_error(MANIFEST_SECTION, e) from None

    def feature_names(self) -> list[str]:
        return Feature(self.features & sum(Feature)).names()


class PluginToml(BaseModel):
    """The source form a vendor writes as `plugins-src/<name>/plugin.toml`."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=NAME_PATTERN)
    version: str = Field(pattern=VERSION_PATTERN)
    vendor: str = Field(default="", max_length=128)
    abi: str  # required: the Shell API major.minor the plugin was written for
    devices: list[str] = Field(min_length=1)
    features: list[str] = []
    cflags: list[str] = []

    @field_validator("abi")
    @classmethod
    def _abi(cls, v: str) -> str:
        major, _, minor = v.partition(".")
        if not (major.isdigit() and minor.isdigit()):
            raise ValueError("expected 'MAJOR.MINOR', e.g. '1.0'")
        return v

    @field_validator("devices")
    @classmethod
    def _devices(cls, v: list[str]) -> list[str]:
        for d in v:
            PciId.parse(d)
        return v

    @field_validator("features")
    @classmethod
    def _features(cls, v: list[str]) -> list[str]:
        Feature.from_names(v)
        return v

    @classmethod
    def load(cls, path: Path) -> "PluginToml":
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ManifestError(f"{path}: no such file") from None
        except UnicodeDecodeError as e:
            raise ManifestError(f"{path}: not UTF-8 text (byte {e.start}), as TOML must be") from None
        except OSError as e:
            raise ManifestError(f"{path}: {e.strerror}") from None
        except tomllib.TOMLDecodeError as e:
            raise ManifestError(f"{path}: {e}") from None
        try:
            return cls(**data)
        except ValidationError as e:
            raise _first_error(str(path), e) from None

    def to_manifest(self) -> Manifest:
        major, minor = (int(x) for x in self.abi.split("."))
        return Manifest(abi_major=major, abi_minor=minor, name=self.name, version=self.version,
                        vendor=self.vendor, devices=[PciId.parse(d) for d in self.devices],
                        features=int(Feature.from_names(self.features)))
