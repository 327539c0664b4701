"""Containment I: hostile plugins beside a well-behaved VM (tests/hostile/hostile.c).

Each attack breaks one rule; each is asserted contained: no exception out of the host loop, no
byte of either guest's memory changed outside what the NIC legitimately wrote, no frame
corrupted, the misbehaviour counted, every pool frame back with its shell, owned once.
"""
from __future__ import annotations

import re
import numpy as np
import pytest

from helpers import ROOT, build_variants
from npa.nic_model.sriov import SriovNic
from npa.runtime.guest import size_schedule
from npa.runtime.host import Host
from npa.runtime.hypervisor import EMULATED, PLUGIN, Policy
from npa.runtime.sandbox import analyse

HOSTILE = ROOT / "tests" / "hostile" / "hostile.c"
GOOD = (ROOT / "plugins-wasm" / "ixgbevf.wasm").read_bytes()
CANARY = 0xA5
# Containment II: lies about what the device did, and a plugin that does nothing. Each is either
# faulted (the reason holds the first words) or its lies are refused and counted (the refusal
# holds the second) and the VM stays on its plugin.
LIES = {"BOGUS_TXC_THEN_TRAP": ("trap", None), "TXC_PRODUCER_JUMPS": ("npa_quiesce kept", None),
        "RX_PRODUCER_JUMPS": (None, "rx: frame not held"), "SMASHES_ITS_STACK": ("trap", None),
        "TX_CONSUMER_BACK_ONE": ("DMA faults", "completion for a frame the device never read"),
        "RX_REPLAY": (None, "rx: frame not held"),
        "RX_NEVER_FILLED": (None, "rx: data in a buffer the device never wrote"),
        "DOES_NOTHING": ("watchdog", None), "RX_BUFFER_ZERO": ("npa_poll returned DEVICE", None)}
ATTACKS = ("RX_ADDR_WRAPS", "TX_ADDR_WRAPS", "TX_OVERSIZE", "FREES_SHELL_MEMORY",
           "REWRITES_FRAMES", "FILL_CONSUMER_AHEAD", "TX_CONSUMER_BACK", "RX_BUFFER_HUGE", *LIES,
           "GREEDY", "RX_RING_IN_GUEST", "TX_RING_IN_GUEST", "FILL_BACK_UNTAKEN", "TX_BACK_UNTAKEN",
           "RX_BUFFER_TWICE", "MMIO_HOG", "INIT_SPINS")


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return build_variants(tmp_path_factory.mktemp("hostile"), HOSTILE, "ATTACK", ATTACKS)


def tails(vm) -> np.ndarray:
    """The bytes past the MTU in every frame buffer of a VM's pool: no legitimate write of a
    frame (at most MTU bytes) ever reaches them."""
    shell = vm.shell
    return shell.pool.mem.reshape(shell.nframes, shell.frame_size)[:, shell.mtu:]


def canaried(packets: int, sizes: str = "mixed", policy: Policy | None = None) -> Host:
    """Two VMs on the real ixgbevf plugin, every byte past the MTU of their pools a canary."""
    host = Host(SriovNic("ixgbevf", 2), GOOD, 2, packets=packets, sizes=size_schedule(sizes),
                policy=policy)
    for vm in host.vms:
        tails(vm)[:] = CANARY
    host.boot()
    return host


def run_beside(image, packets: int = 3000, policy: Policy | None = None) -> Host:
    """vm0 runs `image`, vm1 the real ixgbevf plugin; both send `mixed` sizes to each other."""
    host = canaried(packets, policy=policy)
    host.revoke(0)
    host.offer(0, analyse(image.read_bytes()))
    host.run()
    return host


def assert_contained(host: Host) -> None:
    for vm in host.vms:
        assert (tails(vm) == CANARY).all(), f"{vm.name}: bytes past the MTU were written"
        assert vm.sink.unexpected == 0, f"{vm.name} received frames of no flow"
        for fid, check in vm.sink.check.items():
            assert check.corrupted == 0, f"{vm.name} flow {fid}: {check.corrupted} corrupted"
        assert vm.shell.held_by_plugin() == 0, f"{vm.name}: frames still with a plugin"
        vm.shell.pool.check()
    peer = host.vms[1]  # its own data path never missed a beat (its flow to vm0 may wait on vm0)
    assert host.hv.mode(peer) == PLUGIN and not peer.shell.refused
    assert peer.shell.stats["tx_done"] > 0
    assert not [e for e in peer.shell.events if e.kind == "fault"]


@pytest.mark.parametrize("attack", ["RX_ADDR_WRAPS", "TX_ADDR_WRAPS"])
def test_a_buffer_address_that_wraps_is_a_dma_fault(hostile, attack):
    host = run_beside(hostile[attack])
    assert_contained(host)
    assert host.vms[0].vf.stats.dma_faults > 0  # refused by the IOMMU, counted, nothing moved


def test_a_tx_read_longer_than_its_frame_is_refused_and_the_frame_sent_once(hostile):
    host = run_beside(hostile["TX_OVERSIZE"])
    assert_contained(host)
    assert host.vms[0].vf.stats.dma_faults > 0  # no read passes the end of its frame
    check = host.vms[1].sink.check[0]  # vm0's frames reached vm1 intact, each once, in order
    assert check.received == 3000 and check.duplicates == check.reordered == 0


def test_dma_free_refuses_what_the_plugin_never_allocated(hostile):
    host = run_beside(hostile["FREES_SHELL_MEMORY"])
    assert_contained(host)
    vm = host.vms[0]
    # the pool, two shell rings, the init block, the guard page, the middle of a block and a
    # double free: seven refusals; traffic went on through the plugin, nothing lost
    assert vm.box.host.refused["dma_free"] == 7
    assert host.hv.mode(vm) == PLUGIN and host.clean()


def test_a_plugin_cannot_reach_the_frames_it_moves(hostile):
    host = run_beside(hostile["REWRITES_FRAMES"])
    assert_contained(host)  # every frame it "rewrote" arrived byte for byte
    assert host.vms[1].sink.check[0].received > 0


def test_a_fill_consumer_past_the_producer_is_a_fault_not_a_crash(hostile):
    host = run_beside(hostile["FILL_CONSUMER_AHEAD"])
    assert_contained(host)
    vm = host.vms[0]
    assert host.hv.mode(vm) == EMULATED and "consumer index" in host.hv.modes(vm)[-1].reason
    assert host.clean() is False or host.hv.modes(vm)[-1].reason.startswith("fault")


def test_a_tx_consumer_moved_back_releases_no_frame_twice(hostile):
    host = run_beside(hostile["TX_CONSUMER_BACK"])
    assert_contained(host)  # pool.check(): no frame on the free stack twice
    host.offer(0)  # and the VM takes its plugin again afterwards
    host.revoke(0)
    assert_contained(host)
    assert any("moved backwards" in why for why in host.vms[0].shell.refused)


def test_a_plugin_programming_huge_rx_buffers_cannot_overflow_them(hostile):
    host = run_beside(hostile["RX_BUFFER_HUGE"])
    assert_contained(host)  # the VF port never passes more than the guest's buffers hold
    assert host.vms[0].sink.check[1].received > 0


# -- Containment II: exactly once, whatever the plugin does ----------------------------------------
def assert_exactly_once(host: Host) -> None:
    assert_contained(host)
    for vm in host.vms:
        for fid, c in vm.sink.check.items():
            assert (vm.sink.lost(fid), c.duplicates, c.reordered, c.corrupted) == (0, 0, 0, 0), \
                f"{vm.name} flow {fid}: lost {vm.sink.lost(fid)}, {c}"
    assert all(f.sent == f.count for f in host.flows) and host.conserved()


@pytest.mark.parametrize("attack", LIES)
def test_whatever_the_plugin_does_every_frame_arrives_once_in_order(hostile, attack):
    host = run_beside(hostile[attack], packets=6000)
    assert_exactly_once(host)
    vm, (fault, refusal) = host.vms[0], LIES[attack]
    faults = [c.reason for c in host.hv.modes(vm) if c.reason.startswith("fault")]
    if fault:
        assert any(fault in r for r in faults), host.hv.modes(vm)
    else:
        assert not faults and host.hv.mode(vm) == PLUGIN
    if refusal:
        assert any(refusal in why for why in vm.shell.refused), vm.shell.refused


def test_a_vf_reset_under_the_plugin_in_a_loop_loses_nothing():
    host = canaried(30_000, "imix")
    while not host.delivered() and host.steps < 20_000:
        host.step()
        if host.steps % 7 == 0 and host.hv.mode(host.vms[0]) == PLUGIN:
            host.vms[0].vf.reset()
        if host.steps % 11 == 0 and host.hv.mode(host.vms[0]) == EMULATED:
            host.offer(0)
    host.finish()
    assert host.vms[0].vf.stats.resets > 10
    assert_exactly_once(host)


def test_a_plugin_over_its_share_of_the_host_is_polled_less_then_faulted(hostile):
    """It burns about five million instructions a poll (the share: one million a step)."""
    host = run_beside(hostile["GREEDY"], packets=20_000, policy=Policy({"fair_window_polls": 4}))
    assert_exactly_once(host)
    vm = host.vms[0]
    faults = [c.reason for c in host.hv.modes(vm) if c.reason.startswith("fault")]
    assert faults and "fairness" in faults[0] and "the share is 1,000,000" in faults[0]
    every = re.search(r"polled every (\d+) steps", faults[0])
    assert every and int(every.group(1)) > 1  # it was polled less before it was faulted
    assert host.hv.mode(host.vms[1]) == PLUGIN  # the peer kept its plugin


# -- Containment III: descriptors never in guest memory, a frame never twice, wall time -----------
@pytest.mark.parametrize("attack", ["RX_RING_IN_GUEST", "TX_RING_IN_GUEST"])
def test_a_ring_placed_over_guest_memory_is_a_dma_fault_and_nothing_is_written(hostile, attack):
    """Descriptor memory is not frame memory: the window maps the frame pool, but a ring there
    is refused (it used to take 16-byte write-backs into frames that held no grant)."""
    host = run_beside(hostile[attack], packets=3000)
    assert_exactly_once(host)  # nothing lost, nothing corrupted: no write-back landed in a frame
    vf = host.vms[0].vf
    rec = vf.iommu.record
    assert vf.stats.dma_faults > 0
    addr, _ = vf.iommu.last_fault
    assert rec.base <= addr < rec.base + rec.frame_size * rec.frames or addr >= 1 << 32


@pytest.mark.parametrize("attack,ring", [("FILL_BACK_UNTAKEN", "fill"), ("TX_BACK_UNTAKEN", "tx")])
def test_a_frame_handed_back_that_the_plugin_never_took_is_refused(hostile, attack, ring):
    """rx EMPTY and txc UNSENT only for frames the plugin took off fill/tx: one still on the
    ring is the shell's (it used to be posted twice, or re-sent twice)."""
    host = run_beside(hostile[attack], packets=6000)
    assert_exactly_once(host)
    refused = host.vms[0].shell.refused
    assert refused[f"{'rx' if ring == 'fill' else 'txc'}: frame never taken off {ring}"] > 0, refused


def test_a_buffer_posted_twice_loses_no_frame(hostile):
    """The device refuses the second write into one buffer (a one-use grant): the frame stays in
    the port and the queue stops; the plugin is faulted (the watchdog, or the DMA fault limit)
    and everything is settled by the record: nothing lost, nothing twice."""
    host = run_beside(hostile["RX_BUFFER_TWICE"], packets=6000)
    assert_exactly_once(host)
    assert host.vms[0].vf.stats.dma_faults > 0


def test_dma_faults_over_the_policy_limit_fault_the_plugin(hostile):
    host = run_beside(hostile["RX_RING_IN_GUEST"], packets=3000, policy=Policy({"dma_fault_limit": 0}))
    assert_exactly_once(host)
    faults = [c.reason for c in host.hv.modes(host.vms[0]) if c.reason.startswith("fault")]
    assert faults and "DMA faults" in faults[0] and "the limit is 0" in faults[0]


def test_a_wall_time_hog_is_stopped_by_its_deadline_and_the_neighbour_keeps_its_plugin(hostile):
    """20,000 mmio_read32 calls a poll: cheap in fuel, some 20 ms of host time; the data-path
    call's deadline (policy call_budget_ms, 10 ms) ends the call and faults the plugin."""
    host = run_beside(hostile["MMIO_HOG"], packets=6000)
    assert_exactly_once(host)
    vm = host.vms[0]
    faults = [c.reason for c in host.hv.modes(vm) if c.reason.startswith("fault")]
    assert faults and ("deadline" in faults[0] or "fairness" in faults[0]), faults


def test_an_npa_init_that_spins_is_refused_within_its_init_budget(hostile):
    """npa_init spinning ~0.4 s (the old per-call deadline was 0.5 s) is stopped by the init
    budget (policy init_budget_ms, 50 ms): the offer fails, the VM stays emulated."""
    host = canaried(2000)
    host.revoke(0)
    host.offer(0, analyse(hostile["INIT_SPINS"].read_bytes()))
    vm = host.vms[0]
    assert host.hv.mode(vm) == EMULATED
    assert "deadline" in host.hv.modes(vm)[-1].reason, host.hv.modes(vm)[-1]
    host.run()
    assert_exactly_once(host)


def test_npa_run_with_a_plugin_refused_at_offer_is_a_negative_verdict(hostile):
    """Every VM ran emulated and delivered everything, but the plugin under test never ran: the
    run is not "clean" (it used to exit 0), and each VM's line says why."""
    from helpers import npa

    r = npa("run", str(hostile["INIT_SPINS"]), "--packets", "2000", "-q")
    assert r.returncode == 1, r.stdout + r.stderr
    for vm in ("vm0", "vm1"):
        assert f"npa: {vm}: plugin init failed: npa_init" in r.stderr and "deadline" in r.stderr
    assert "clean:" not in r.stdout
