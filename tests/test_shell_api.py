import pytest

from npa.shell_api import (
    ABI_MAJOR,
    ABI_MINOR,
    EXPORTS,
    IMPORTS,
    INIT_CFG,
    RING_DESC,
    RING_HDR,
    Manifest,
    ManifestError,
    PluginToml,
    Status,
    abi_compatible,
    gen,
)
from npa.shell_api.manifest import PciId


def test_generated_header_and_reference_are_up_to_date():
    assert gen.HEADER.read_text() == gen.header(), "run: python -m npa.shell_api.gen"
    assert gen.ZIG_BINDING.read_text() == gen.zig_binding(), "run: python -m npa.shell_api.gen"
    assert gen.REFERENCE.read_text() == gen.reference(), "run: python -m npa.shell_api.gen"


def test_gen_check_reports_drift(tmp_path, monkeypatch):
    stale = tmp_path / "npa_shell.h"
    stale.write_text("/* old */")
    monkeypatch.setattr(gen, "HEADER", stale)
    assert gen.main(["--check"]) == 1


def test_reference_names_every_import_export_status_and_layout_field():
    ref = gen.reference()
    for f in (*IMPORTS, *EXPORTS):
        assert f"`{f.name}`" in ref and f.wasm_signature() in ref
    for s in Status:
        assert f"NPA_{s.name}" in ref
    for layout in (INIT_CFG, RING_HDR, RING_DESC):
        for field in layout.fields:
            assert f"`{field.name}`" in ref


def test_layout_sizes_and_offsets():
    assert RING_DESC.size == 16 and RING_HDR.size == 128 and INIT_CFG.size == 128
    assert RING_HDR.offsets["consumer"] == 64  # its own cache line
    packed = RING_DESC.pack(addr=0x123456789, len=60, flags=3, vlan=100)
    assert RING_DESC.unpack(packed) == {"addr": 0x123456789, "len": 60, "flags": 3, "vlan": 100}


def test_versioning_rule():
    assert abi_compatible(ABI_MAJOR, ABI_MINOR)
    assert abi_compatible(ABI_MAJOR, 0)
    assert not abi_compatible(ABI_MAJOR, ABI_MINOR + 1)
    assert not abi_compatible(ABI_MAJOR + 1, 0)


def test_status_messages():
    assert Status.describe(1) == "NOMEM (dma_alloc failed: out of DMA memory)"
    assert Status.describe(99) == "unknown status 99"


def test_manifest_roundtrip():
    m = Manifest(abi_major=1, abi_minor=0, name="x", version="1.2.3", vendor="v",
                 devices=[PciId.parse("8086:10ed")], features=5)
    assert Manifest.decode(m.encode()) == m


@pytest.mark.parametrize("payload, field", [
    (b"\xc1", "not msgpack"),
    (b"\x01", "expected a map"),
])
def test_manifest_decode_garbage(payload, field):
    with pytest.raises(ManifestError, match=field):
        Manifest.decode(payload)


def test_manifest_decode_names_the_field():
    good = Manifest(abi_major=1, abi_minor=0, name="x", version="1.2.3",
                    devices=[PciId.parse("8086:10ed")])
    import msgpack
    raw = msgpack.unpackb(good.encode())
    raw["version"] = "one"
    with pytest.raises(ManifestError, match="field 'version'"):
        Manifest.decode(msgpack.packb(raw))


@pytest.mark.parametrize("toml, field", [
    ('name = "Bad Name"\nversion = "0.1.0"\nabi = "1.0"\ndevices = ["8086:10ed"]', "name"),
    ('name = "ok"\nversion = "0.1.0"\nabi = "1.0"\ndevices = ["8086"]', "devices"),
    ('name = "ok"\nversion = "0.1.0"\nabi = "1.0"\ndevices = ["8086:10ed"]\nfeatures = ["warp"]', "features"),
    ('name = "ok"\nversion = "0.1.0"\ndevices = ["8086:10ed"]\nabi = "one"', "abi"),
    ('name = "ok"\nversion = "0.1.0"\ndevices = ["8086:10ed"]', "abi"),  # abi is required
    ('name = "ok"\nversion = "0.1.0"\nabi = "1.0"\ndevices = []', "devices"),
    ('name = "ok"\nversion = "0.1.0"\nabi = "1.0"\ndevices = ["8086:10ed"]\ncolour = 1', "colour"),
])
def test_plugin_toml_errors_name_the_field(tmp_path, toml, field):
    p = tmp_path / "plugin.toml"
    p.write_text(toml)
    with pytest.raises(ManifestError, match=f"field '{field}"):
        PluginToml.load(p)


def test_plugin_toml_syntax_error_names_the_file(tmp_path):
    p = tmp_path / "plugin.toml"
    p.write_text("name = ")
    with pytest.raises(ManifestError, match="plugin.toml"):
        PluginToml.load(p)
