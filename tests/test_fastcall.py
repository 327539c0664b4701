"""The fast export path against wasmtime-py's generic call, on the same instance."""
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import NULLVF, wat_plugin
from npa.nic_model.null import NullVf
from npa.runtime.sandbox import Sandbox
from npa.runtime.shell import datapath

ECHO = wat_plugin(exports={
    "npa_poll": "(param i32 i32) (result i32) local.get 0 local.get 1 i32.sub",
    "npa_intr": "(param i32) (result i32) local.get 0 i32.const 3 i32.mul",
})
BOX = Sandbox()
PLUGIN = BOX.load(ECHO)
GENERIC = PLUGIN.instance.exports(BOX.store)


def generic(name, *args):
    BOX.store.set_fuel(1_000_000)
    BOX.store.set_epoch_deadline(100)
    return GENERIC[name](BOX.store, *args)


u32 = st.integers(0, 2**32 - 1)


@settings(max_examples=300, deadline=None)
@given(u32, u32)
def test_fast_and_generic_agree_on_signed_results(a, b):
    def signed(x):
        return x - 2**32 if x >= 2**31 else x
    assert PLUGIN.npa_poll(a, b) == generic("npa_poll", signed(a), signed(b))


@settings(max_examples=300, deadline=None)
@given(u32)
def test_fast_path_returns_u32_results_unsigned(a):
    expect = (a * 3) & 0xFFFFFFFF
    assert PLUGIN.npa_intr(a) == expect
    assert generic("npa_intr", a - 2**32 if a >= 2**31 else a) & 0xFFFFFFFF == expect


def test_fast_and_generic_paths_do_the_same_work_on_a_real_plugin():
    results = []
    for use_fast in (True, False):
        box = Sandbox(bar=NullVf())
        plugin = box.load(NULLVF.read_bytes())
        dp = datapath.setup(box, plugin.manifest, ring_size=64)
        exports = plugin.instance.exports(box.store)

        def call(name, *args):
            if use_fast:
                return getattr(plugin, name)(*args)
            box.store.set_fuel(1_000_000)
            box.store.set_epoch_deadline(100)
            return exports[name](box.store, *args)

        out = [call("npa_init", dp.cfg_addr)]
        dp.rings["tx"].produce([(dp.pool_base + i * 2048, 64, 0, 0) for i in range(40)])
        out += [call("npa_poll", 0, 16), call("npa_poll", 0, 64), call("npa_quiesce")]
        results.append((out, dp.rings["txc"].consume(), box.bar.frames_sent))
    assert results[0] == results[1]
    assert results[0][0] == [0, 16, 24, 0]


def test_fuel_used_is_reported_per_call():
    PLUGIN.npa_poll(1, 2)
    small = PLUGIN.npa_poll.fuel_used()
    assert 0 < small < 100


class InterruptingBar:
    """A BAR whose first read is where Ctrl-C lands: SIGINT arrives inside the host call."""

    def __init__(self):
        self.reads = 0

    def read32(self, off):
        import os
        import signal
        self.reads += 1
        if self.reads == 1:
            os.kill(os.getpid(), signal.SIGINT)  # Python runs its handler at the next bytecode
        return 5

    def write32(self, off, val):
        pass


def test_ctrl_c_inside_a_host_call_waits_for_the_plugin_call_to_end():
    """The interrupt is raised once npa_poll has returned, never inside the host function's
    callback (where ctypes would drop it, or the plugin would see a trap for a host call that
    half happened): both of the plugin's reads are done, the call completes, then Ctrl-C."""
    import pytest
    reads = wat_plugin(
        imports=['(import "env" "memory" (memory 1))', '(import "env" "__memory_base" (global i32))',
                 '(import "shell" "mmio_read32" (func $rd (param i32) (result i32)))'],
        exports={"npa_poll": "(param i32 i32) (result i32) i32.const 0 call $rd i32.const 4 call $rd i32.add"})
    bar = InterruptingBar()
    box = Sandbox(bar=bar)
    plugin = box.load(reads)
    with pytest.raises(KeyboardInterrupt):
        plugin.npa_poll(0, 0)
    assert bar.reads == 2  # the call ran to its end before the interrupt was raised
    bar.reads = 1
    assert plugin.npa_poll(0, 0) == 10  # and the plugin is fine for the next call
