"""Containment I, the loader: images that lie about their size or are malformed are refused with
one line naming the field, in bounded time and memory, before any compiler runs, and nothing of
them is cached. `npa inspect` prints one `npa: error:` line and exits non-zero, no traceback."""
from __future__ import annotations

from pathlib import Path

import msgpack
import pytest

from helpers import manifest, npa, wat_plugin
from npa.runtime.sandbox import analyse
from npa.runtime.sandbox.wasm import DYLINK, _encode_leb, dylink_section, with_custom_section
from npa.shell_api import LIMIT, MANIFEST_SECTION

MB = "(import \"env\" \"__memory_base\" (global $mb i32))"
IMPORTS = ['(import "env" "memory" (memory 1))', MB,
           '(import "shell" "mmio_write32" (func (param i32 i32)))']


def nested(depth: int) -> str:
    return "(func " + "(block " * depth + "nop" + ")" * depth + ")"


def with_dylink(payload: bytes, man=None) -> bytes:
    """The do-nothing plugin with a hand-made `dylink.0` payload."""
    image = wat_plugin(imports=IMPORTS, pic=False, with_manifest=False)
    image = with_custom_section(image, DYLINK, payload, first=True)
    return with_custom_section(image, MANIFEST_SECTION, (man or manifest()).encode())


def with_manifest_payload(payload: bytes) -> bytes:
    return with_custom_section(wat_plugin(with_manifest=False), MANIFEST_SECTION, payload)


NEEDED_TRUNCATED = dylink_section(64) + bytes([2]) + _encode_leb(4) + b"\x01\x40lib"
LEB_TOO_LONG = bytes([1, 9]) + b"\x80\x80\x80\x80\x80\x80\x80\x80\x01"

CASES = {
    # what it lies about or breaks: (image, check, words the one line must hold)
    "data segment at an absolute offset": (
        lambda: wat_plugin(imports=IMPORTS, extra='(data (i32.const 0xff0000) "overwrite")'),
        "pic", "absolute offset"),
    "3.5 MB data segment, 64 bytes declared": (
        lambda: wat_plugin(imports=IMPORTS, extra=f'(data (global.get $mb) "{"a" * 3_500_000}")'),
        "pic", "outside the 64 bytes"),
    "data segment past the declared memory": (
        lambda: wat_plugin(imports=IMPORTS, extra='(data (offset global.get $mb i32.const 60 i32.add) "12345")'),
        "pic", "outside the 64 bytes"),
    "huge table": (lambda: wat_plugin(extra="(table 100000 funcref)"), "wasm", "table entries"),
    "too many functions": (lambda: wat_plugin(extra="\n".join(f"(func $f{i})" for i in range(LIMIT["functions"] + 1))),
                           "wasm", "functions"),
    "nesting too deep": (lambda: wat_plugin(extra=nested(LIMIT["nesting"] + 5)), "wasm", "nesting"),
    "too many locals": (lambda: wat_plugin(extra=f"(func (local {' '.join(['i32'] * (LIMIT['locals'] + 1))}))"),
                        "wasm", "locals"),
    "a function body too big": (lambda: wat_plugin(extra="(func " + "nop " * (LIMIT["body_bytes"] + 1) + ")"),
                                "wasm", "body bytes"),
    "SIMD": (lambda: wat_plugin(extra="(func v128.const i32x4 0 0 0 0 drop)"), "wasm", "0xfd"),
    "dylink.0 alignment 2^40": (lambda: with_dylink(dylink_section(64, memory_align=40)), "pic", "memory align 40"),
    "dylink.0 table of 0xF0000000": (lambda: with_dylink(dylink_section(64, table_size=0xF0000000)),
                                     "pic", "table entries"),
    "dylink.0 needed name truncated": (lambda: with_dylink(NEEDED_TRUNCATED), "pic", "dylink.0"),
    "dylink.0 LEB128 too long": (lambda: with_dylink(LEB_TOO_LONG), "pic", "LEB128 too long"),
    "manifest key twice": (lambda: with_manifest_payload(b"\x82\xa4name\xa1a\xa4name\xa1b"),
                           "manifest", "appears twice"),
    "manifest key not a string": (lambda: with_manifest_payload(msgpack.packb({b"name": "x"})),
                                  "manifest", "not a string"),
    "manifest key unknown": (lambda: with_manifest_payload(msgpack.packb({"abi_major": 1, "abi": [1, 0]})),
                             "manifest", "not a manifest field"),
    "manifest too big": (lambda: with_manifest_payload(msgpack.packb({"vendor": "v" * LIMIT["manifest_bytes"]})),
                         "manifest", "the limit is"),
}


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("hostile-images")
    out = {}
    for i, (name, (make, _, _)) in enumerate(CASES.items()):
        out[name] = d / f"case{i}.wasm"
        out[name].write_bytes(make())
    return out


@pytest.mark.parametrize("case", CASES)
def test_refused_with_the_field_named_and_nothing_cached(case, images, tmp_path, monkeypatch):
    monkeypatch.setenv("NPA_CACHE_DIR", str(tmp_path / "cache"))
    _, check, words = CASES[case]
    rep = analyse(images[case].read_bytes())
    assert rep.error is not None and rep.error.check == check, rep.error
    assert words in str(rep.error)
    assert rep.module is None and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("case", CASES)
def test_inspect_says_one_line(case, images):
    r = npa("inspect", str(images[case]))
    assert r.returncode != 0 and "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("npa: error: "), r.stderr


def test_the_bundled_plugins_are_within_every_limit():
    for path in sorted((Path(__file__).parent.parent / "plugins-wasm").glob("*.wasm")):
        assert analyse(path.read_bytes()).error is None, path.name


GOLDEN = sorted((Path(__file__).parent / "golden" / "v1.0").glob("*.wasm"))


@pytest.mark.parametrize("image", GOLDEN, ids=[p.stem for p in GOLDEN])
def test_v1_0_images_load_and_pass_the_suite_forever(image):
    """Images as built for ABI 1.0, before frames moved out of the plugin's memory: they carry
    frame addresses as u64 and run unchanged."""
    from npa.runtime.conformance import Target, run
    assert analyse(image.read_bytes()).error is None
    result = run(Target.open(image))
    assert result.ok, [(c.check, c.reason) for c in result.checks if c.outcome == "failed"]
    assert result.count("passed") >= 18
