"""The loader on a real compiled plugin, and every bad input the issue lists."""
import pytest

from helpers import NULLVF, manifest, npa, wat_plugin
from npa.nic_model.null import NullVf
from npa.runtime.sandbox import Budgets, LoadError, PluginFault, RegionPlan, Sandbox, analyse
from npa.runtime.shell import datapath
from npa.shell_api import Status


def run_lifecycle(base: int) -> dict:
    box = Sandbox(RegionPlan(), bar=NullVf())
    plugin = box.load(NULLVF.read_bytes(), base=base)
    dp = datapath.setup(box, plugin.manifest, ring_size=64)
    statuses = [plugin.npa_init(dp.cfg_addr)]
    dp.rings["tx"].produce([(dp.pool_base + i * dp.frame_size, 60, 0, 0) for i in range(10)])
    dp.rings["fill"].produce([(dp.pool_base + (20 + i) * dp.frame_size, 2048, 0, 0) for i in range(8)])
    statuses.append(plugin.npa_poll(0, 64))
    sent = box.bar.frames_sent
    box.bar.raise_interrupt()
    statuses.append(plugin.npa_intr(0))
    statuses += [plugin.npa_quiesce(), plugin.npa_reset()]
    return {"base": plugin.base, "statuses": statuses, "calls": dict(box.host.calls),
            "txc": dp.rings["txc"].consume(), "rx": dp.rings["rx"].consume(),
            "sent": sent, "logs": list(box.host.logs)}


def test_nullvf_runs_every_export_and_import_at_two_bases_alike():
    a, b = run_lifecycle(0x10000), run_lifecycle(0x80000)
    assert (a["base"], b["base"]) == (0x10000, 0x80000)
    assert a["statuses"] == [Status.OK, 10, 1, Status.OK, Status.OK]
    assert set(a["calls"]) == {"mmio_read32", "mmio_write32", "dma_alloc", "dma_free", "udelay", "log"}
    assert len(a["txc"]) == 10 and a["sent"] == 10
    assert [d[2] for d in a["rx"]] == [4] * 8  # all posted RX buffers came back EMPTY
    assert a["logs"] == [("info", "nullvf: data path up"), ("info", "nullvf: data path down")]
    for key in ("statuses", "calls", "txc", "rx", "sent", "logs"):
        assert a[key] == b[key], key


def test_init_rejects_a_bad_config_block():
    box = Sandbox(bar=NullVf())
    plugin = box.load(NULLVF.read_bytes())
    cfg = box.heap.alloc(128, 64)  # all zero: wrong magic
    assert plugin.npa_init(cfg) == Status.CONFIG


def test_second_load_comes_from_the_cache():
    image = NULLVF.read_bytes()
    analyse(image)
    assert analyse(image).cached


# -- bad input: (image, check that fails, words the one line must hold) ------------------------
BAD = {
    "malformed": (lambda: b"\0asm\x01\0\0\0\x01\xff\xff", "wasm", "invalid wasm"),
    "not wasm": (lambda: b"MZ\x90\x00 this is a PE file", "wasm", "not a wasm module"),
    "truncated": (lambda: NULLVF.read_bytes()[:700], "wasm", "invalid wasm"),
    "no manifest": (lambda: wat_plugin(with_manifest=False), "manifest", "no npa.manifest"),
    "abi major 2": (lambda: wat_plugin(man=manifest(abi_major=2)), "abi", "ABI 2.0"),
    "abi minor newer": (lambda: wat_plugin(man=manifest(abi_minor=9)), "abi", "minor at most"),
    "forbidden import": (lambda: wat_plugin(imports=[
        '(import "env" "memory" (memory 1))',
        '(import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))']),
        "imports", "wasi_snapshot_preview1.fd_write"),
    "control import": (lambda: wat_plugin(imports=[
        '(import "shell" "set_mac" (func (param i32 i32)))']), "imports", "shell.set_mac"),
    "wrong signature": (lambda: wat_plugin(imports=[
        '(import "shell" "mmio_read32" (func (param i64) (result i32)))']),
        "imports", "shell.mmio_read32"),
    "missing export": (lambda: wat_plugin(exports={"npa_reset": None}), "exports",
                       "missing export npa_reset"),
    "export wrong signature": (lambda: wat_plugin(exports={"npa_poll": "(param i32) (result i32) i32.const 0"}),
                               "exports", "export npa_poll"),
    "non-PIC": (lambda: wat_plugin(pic=False), "pic", "not position-independent"),
    "own memory": (lambda: wat_plugin(imports=[], extra="(memory 1)"), "pic", "own memory"),
    "too large": (lambda: wat_plugin(memory_size=2 << 20), "fit", "plugin slot"),
}


@pytest.mark.parametrize("case", BAD)
def test_loader_refuses_with_the_failing_check(case):
    make, check, words = BAD[case]
    with pytest.raises(LoadError) as info:
        Sandbox().load(make())
    assert info.value.check == check
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_start_function_that_traps_is_a_fault():
    image = wat_plugin(extra="(func $s unreachable) (start $s)")
    with pytest.raises(PluginFault, match="start function: trap: unreachable"):
        Sandbox().load(image)


def test_constructor_that_loops_forever_is_stopped_by_fuel():
    image = wat_plugin(extra='(func (export "__wasm_call_ctors") (loop (br 0)))')
    with pytest.raises(PluginFault, match="__wasm_call_ctors: out of fuel"):
        Sandbox().load(image, budgets=Budgets(fuel=1_000_000))


def test_poll_that_loops_forever_is_stopped_by_fuel_and_the_plugin_stays_callable():
    image = wat_plugin(exports={"npa_poll": "(param i32 i32) (result i32) (loop (br 0)) i32.const 0"})
    plugin = Sandbox().load(image, budgets=Budgets(fuel=2_000_000))
    with pytest.raises(PluginFault) as info:
        plugin.npa_poll(0, 64)
    assert (info.value.export, info.value.reason) == ("npa_poll", "out of fuel")
    assert plugin.npa_quiesce() == 0  # the store survives; the shell decides what happens next


def test_poll_that_loops_forever_is_stopped_by_the_deadline():
    image = wat_plugin(exports={"npa_poll": "(param i32 i32) (result i32) (loop (br 0)) i32.const 0"})
    plugin = Sandbox().load(image, budgets=Budgets(fuel=10**15, deadline_s=0.05))
    with pytest.raises(PluginFault, match="npa_poll: deadline exceeded"):
        plugin.npa_poll(0, 64)


def test_log_outside_memory_traps_the_plugin():
    image = wat_plugin(
        imports=['(import "env" "memory" (memory 1))',
                 '(import "shell" "log" (func $log (param i32 i32 i32)))'],
        exports={"npa_init": "(param i32) (result i32) (call $log (i32.const 0) (i32.const -16) "
                             "(i32.const 64)) i32.const 0"})
    plugin = Sandbox().load(image)
    with pytest.raises(PluginFault, match="npa_init: .*log: buffer .* outside memory"):
        plugin.npa_init(0)


# -- the same bad inputs through `npa inspect`: one line, exit 1, no traceback -----------------
INSPECT = [*BAD, "start traps", "ctor loops"]


@pytest.mark.parametrize("case", INSPECT)
def test_inspect_prints_one_line_and_exits_1(case, tmp_path):
    if case == "start traps":
        image, words = wat_plugin(extra="(func $s unreachable) (start $s)"), "start function"
    elif case == "ctor loops":
        image, words = wat_plugin(extra='(func (export "__wasm_call_ctors") (loop (br 0)))'), "out of fuel"
    else:
        make, _, words = BAD[case]
        image = make()
    path = tmp_path / "bad.wasm"
    path.write_bytes(image)
    r = npa("inspect", str(path))
    assert r.returncode == 1
    assert "Traceback" not in r.stderr + r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("npa: error: ") and words in lines[0], r.stderr


def test_inspect_json_on_the_bundled_plugin():
    import json
    r = npa("inspect", "--json", "-", str(NULLVF))
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    assert rep["verdict"] == "loadable" and rep["manifest"]["name"] == "nullvf"
    assert all(i["allowed"] for i in rep["imports"])
    assert {e["name"] for e in rep["exports"]} >= {"npa_init", "npa_poll", "npa_intr",
                                                  "npa_quiesce", "npa_reset"}


def test_inspect_missing_file():
    r = npa("inspect", "no/such.wasm")
    assert r.returncode == 2 and r.stderr.strip() == "npa: error: no/such.wasm: no such file"


def test_plugin_log_lines_name_their_vm_and_plugin(caplog):
    import logging
    box = Sandbox(RegionPlan(), bar=NullVf())
    box.host.tag = "vm3 nullvf"
    plugin = box.load(NULLVF.read_bytes())
    dp = datapath.setup(box, plugin.manifest, ring_size=64)
    with caplog.at_level(logging.INFO, logger="npa"):
        assert plugin.npa_init(dp.cfg_addr) == Status.OK
    assert "vm3 nullvf: nullvf: data path up" in caplog.messages
