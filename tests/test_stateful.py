"""The frame-ownership invariants, stated once and checked under random interleavings (hypothesis
stateful testing, as rust-vmm's queue verifies its own): a host with two VMs under traffic both
ways, driven by random sequences of steps and half steps (frames in flight), VF revokes and offers, plugin faults (the watchdog's
or the fairness account's way of stopping a plugin) and hypervisor resets.

After every rule: each pool frame belongs to exactly one owner (the free stack and re-send queue
hold exactly the FREE and RESEND frames, each once) and the owners' counts add up to the pool.
At the end, after the host winds down: nothing was lost, duplicated, reordered or corrupted, and
every frame is back with its shell.
"""
from __future__ import annotations

import os

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from helpers import ROOT
from npa.nic_model.sriov import SriovNic
from npa.runtime.guest import size_schedule
from npa.runtime.host import Host
from npa.runtime.hypervisor import EMULATED, PLUGIN

IMAGE = (ROOT / "plugins-wasm" / "ixgbevf.wasm").read_bytes()
EXAMPLES = int(os.environ.get("NPA_FUZZ_EXAMPLES", "40")) // 4 or 1


class HostMachine(RuleBasedStateMachine):
    def __init__(self):
        super().__init__()
        self.host = Host(SriovNic("ixgbevf", 2), IMAGE, 2, packets=3000, sizes=size_schedule("imix"),
                         pool_frames=256, ring_size=128, budget=64)
        self.host.boot()

    @rule(n=st.integers(1, 20))
    def steps(self, n):
        for _ in range(n):
            self.host.step()

    @rule()
    def guests_and_shells_only(self):
        """Half a step: frames handed to the plugins and their NIC rings, the NIC not run yet,
        so a revoke or a fault next finds frames in flight."""
        self.host.run_shells()

    @rule(vm=st.integers(0, 1))
    def revoke(self, vm):
        self.host.revoke(vm)
        assert self.host.hv.mode(self.host.vms[vm]) == EMULATED

    @rule(vm=st.integers(0, 1))
    def offer(self, vm):
        self.host.offer(vm)

    @precondition(lambda self: any(self.host.hv.mode(v) == PLUGIN for v in self.host.vms))
    @rule(vm=st.integers(0, 1))
    def fault(self, vm):
        v = self.host.vms[vm]
        if self.host.hv.mode(v) == PLUGIN:
            v.shell.fault("test: the hypervisor stops the plugin")
            self.host.hv.check_faults(v)  # falls back to the emulated path, frames settled
            assert self.host.hv.mode(v) == EMULATED

    @invariant()
    def every_frame_has_one_owner(self):
        for vm in self.host.vms:
            vm.shell.pool.check()
            assert sum(vm.shell.holdings().values()) == vm.shell.nframes

    def teardown(self):
        h = self.host
        for vm in h.vms:  # faulted instances are gone: offer fresh ones to finish the traffic
            if h.hv.mode(vm) == EMULATED and not vm.shell.active:
                h.offer(vm.index)
        h.run()
        for vm in h.vms:
            for fid, c in vm.sink.check.items():
                assert (vm.sink.lost(fid), c.duplicates, c.reordered, c.corrupted) == (0, 0, 0, 0), vars(c)
        assert h.delivered() and h.conserved()
        h.close()


HostMachine.TestCase.settings = settings(max_examples=EXAMPLES, stateful_step_count=12, deadline=None,
                                         database=None, suppress_health_check=[HealthCheck.too_slow])
test_frame_ownership_under_random_mode_changes = HostMachine.TestCase
