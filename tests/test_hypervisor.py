"""The hypervisor: the control path under policy, enforcement in the switch, the emulated data
path, and lossless switching between the emulated and the plugin paths."""
import numpy as np
import pytest

from helpers import ROOT, build_broken, npa, wat_plugin
from npa.nic_model.frames import Frames, push_vlan
from npa.nic_model.sriov import SriovNic
from npa.runtime.guest import Flow, build, size_schedule
from npa.runtime.host import Host
from npa.runtime.hypervisor import EMULATED, PLUGIN, Policy, PolicyError
from npa.runtime.hypervisor.control import (
    AddVlan,
    ChannelError,
    LinkState,
    Reply,
    SetMac,
    SetMtu,
    SetMulticast,
    SetRxMode,
    channel,
    decode,
    encode,
)
from npa.runtime.sandbox import analyse

IXGBEVF = (ROOT / "plugins-wasm" / "ixgbevf.wasm").read_bytes()
A, B, C = 0x020000000001, 0x020000000002, 0x020000000003


def host(vms=2, packets=2000, policy=None, image=IXGBEVF, size=60, **kw) -> Host:
    h = Host(SriovNic("ixgbevf", max(vms, 4)), image, vms, packets=packets,
             sizes=size_schedule(size), policy=policy, **kw)
    h.boot()
    return h


def policy(text: str, tmp_path) -> Policy:
    f = tmp_path / "policy.toml"
    f.write_text(text)
    return Policy.load(f)


def ask(h: Host, i: int, msg) -> Reply:
    p = h.hv.ports[h.vms[i].index]
    msg_id = p.guest.send(msg)
    h.hv.serve(h.vms[i])
    while (got := p.guest.recv()) is not None:  # VF offers and revokes come this way too
        if isinstance(got[1], Reply):
            assert got[0] == msg_id
            return got[1]
    raise AssertionError("no reply")


def send_raw(h: Host, i: int, frames: Frames, steps: int = 6) -> None:
    """Frames straight from VM i's shell, whatever their headers say."""
    assert h.vms[i].shell.transmit(frames) == len(frames)
    for _ in range(steps):
        h.step()


# -- layer 1: the ABI has no control import --------------------------------------------------
def test_a_plugin_importing_a_control_function_is_refused_at_load():
    image = wat_plugin(imports=['(import "env" "memory" (memory 1))',
                                '(import "shell" "set_mac" (func (param i32 i32)))'])
    err = analyse(image).error
    assert err.check == "imports" and "shell.set_mac" in str(err) and "not in the Shell API" in str(err)


def test_vf_register_writes_outside_the_data_path_are_ignored_and_counted():
    nic = SriovNic("ixgbevf", 2)
    nic.set_vf_mac(nic.vfs[0], A)
    fdb = dict(nic.switch.fdb)
    vf = nic.vfs[0]
    before = vf.ignored_writes
    vf.write32(0x5400, 0xDEADBEEF)  # RAL0 of the PF: a MAC filter, not the VF's to write
    vf.write32(0x5404, 0x8000BEEF)  # RAH0 (address valid)
    assert vf.ignored_writes == before + 2 and vf.read32(0x5400) == 0
    assert nic.switch.fdb == fdb


# -- layer 2: the switch enforces what the PF programmed ----------------------------------------
def test_forged_source_mac_is_dropped_and_counted_and_the_peer_gets_none():
    h = host()
    forged = build(Flow(99, C, B, 10, np.array([60])), 0, 10)  # to vm1, "from" C: not vm0's MAC
    send_raw(h, 0, forged)
    assert h.vms[0].vf.port.stats.spoofed == 10
    assert h.vms[1].sink.unexpected == 0  # flow 99 never reached vm1


def test_a_guest_tag_under_a_port_vlan_is_dropped_and_the_port_vlan_is_invisible(tmp_path):
    pol = policy("[vm.vm0]\nvlan = 100\n[vm.vm1]\nvlan = 100\n[vm.vm2]\nvlan = 200\n", tmp_path)
    h = host(vms=3, policy=pol, packets=500)
    tagged = push_vlan(build(Flow(99, B, A, 5, np.array([60])), 0, 5), 7)
    send_raw(h, 0, tagged)
    assert h.vms[0].vf.port.stats.vlan == 5
    h.run()
    # vm0 <-> vm1 share VLAN 100: delivered untagged, byte-exact (the sink checks every byte);
    # vm2 in VLAN 200 is cut off from vm0 (its flows pair with vm0): nothing crosses.
    assert h.vms[1].sink.clean() and all(c.received == 500 for c in h.vms[1].sink.check.values())
    assert h.vms[2].sink.frames == 0 and sum(c.received for c in h.vms[0].sink.check.values()) == 500


def test_oversize_frames_are_dropped_and_counted(tmp_path):
    h = host(policy=policy("[vm.vm0]\nmax_mtu = 1000\n", tmp_path))
    big = build(Flow(98, A, B, 4, np.array([1014, 1015, 1014, 1400])), 0, 4)
    send_raw(h, 0, big)
    assert h.vms[0].vf.port.stats.oversize == 2 and h.vms[1].sink.unexpected == 2


# -- layer 3: the control path under policy ------------------------------------------------------
def test_a_mac_outside_the_policy_is_refused_by_name_inside_the_filter_follows(tmp_path):
    pol = policy('[vm.vm0]\nmacs = ["02:00:00:00:00:01", "02:00:00:00:00:0a"]\n', tmp_path)
    h = host(policy=pol)
    r = ask(h, 0, SetMac(mac="02:00:00:00:00:99"))
    assert r.status == "refused" and r.rule == "vm.vm0.mac" and "02:00:00:00:00:0a" in r.message
    assert ask(h, 0, SetMac(mac="02:00:00:00:00:0a")).status == "ok"
    new = 0x02000000000A
    assert h.nic.switch.fdb.get(new) == h.vms[0].vf.port.index and A not in h.nic.switch.fdb
    to_new = build(Flow(98, B, new, 3, np.array([60])), 0, 3)  # from vm1 to vm0's new MAC
    send_raw(h, 1, to_new)
    assert h.vms[0].sink.unexpected == 3  # reached vm0 (its sink expects no flow 98)


def test_promiscuous_mode_needs_trust(tmp_path):
    h = host(policy=policy("[vm.vm1]\ntrust = true\n", tmp_path), vms=3)
    r = ask(h, 0, SetRxMode(promisc=True))
    assert r.status == "refused" and r.rule == "vm.vm0.trust"
    assert not h.vms[0].vf.port.policy.promisc
    assert ask(h, 1, SetRxMode(promisc=True)).status == "ok"
    before = h.vms[1].sink.unexpected
    send_raw(h, 0, build(Flow(97, A, C, 2, np.array([60])), 0, 2), steps=3)  # vm0 -> vm2
    assert h.vms[1].sink.unexpected >= before + 2  # the trusted, promiscuous vm1 sees vm0 -> vm2
    assert h.vms[2].sink.unexpected == 2  # addressed to vm2
    send_raw(h, 1, build(Flow(96, B, C, 3, np.array([60])), 0, 3))  # vm1 -> vm2
    assert h.vms[0].sink.unexpected == 0  # vm0's promiscuous request was refused: it sees none


def test_vlan_multicast_and_mtu_requests_follow_the_policy(tmp_path):
    pol = policy("[vm.vm0]\nguest_vlans = [10]\nmulticast_limit = 1\nmax_mtu = 1500\n"
                 "[vm.vm1]\nvlan = 5\n", tmp_path)
    h = host(policy=pol)
    assert ask(h, 0, AddVlan(vid=10)).status == "ok" and h.vms[0].vf.port.policy.vlans == {10}
    assert ask(h, 0, AddVlan(vid=11)).rule == "vm.vm0.guest_vlans"
    assert ask(h, 1, AddVlan(vid=10)).rule == "vm.vm1.vlan"
    assert ask(h, 0, SetMulticast(groups=("01:00:5e:00:00:01", "01:00:5e:00:00:02"))).rule == "vm.vm0.multicast_limit"
    assert ask(h, 0, SetMulticast(groups=("01:00:5e:00:00:01",))).status == "ok"
    assert ask(h, 0, SetMulticast(groups=("02:00:00:00:00:05",))).status == "error"
    assert ask(h, 0, SetMtu(mtu=9000)).rule == "vm.vm0.max_mtu"
    assert ask(h, 0, SetMtu(mtu=1400)).status == "ok" and h.vms[0].vf.port.policy.max_frame == 1414


def test_control_messages_round_trip_and_bad_frames_are_one_line_errors():
    shell_side, hv_side = channel()
    msg_id = shell_side.send(SetMac(mac="02:00:00:00:00:01"))
    assert hv_side.recv() == (msg_id, SetMac(mac="02:00:00:00:00:01"))
    assert decode(encode(7, Reply(id=7, status="refused", rule="vm.vm0.trust"))) == (
        7, Reply(id=7, status="refused", rule="vm.vm0.trust"))
    for frame, msg in ((b"\xc1", "not msgpack"), (encode(1, SetMac(mac="02:00:00:00:00:01"))[:-1], "not msgpack"),
                       (b"\x81\xa2id\x01", "kind"), (b"\x82\xa2id\x01\xa4kind\xa5tele?", "kind")):
        with pytest.raises(ChannelError, match=msg):
            decode(frame)


def test_policy_errors_name_the_line_and_field(tmp_path):
    cases = {
        '[vm.vm0]\nmac = "01:00:00:00:00:01"\n': ":2: [vm.vm0] field 'mac': ",
        "[vm.vm0]\ntrust = true\n\n[vm.vm1]\nvlan = 5000\n": ":5: [vm.vm1] field 'vlan': ",
        "[vm.vm0]\nvlan = 5\nguest_vlans = [6]\n": ":1: [vm.vm0] table: a port VLAN",
        "[vm.vm0]\nspoof = false\n": ":2: [vm.vm0] field 'spoof': Extra inputs",
        "[defaults]\nmax_mtu = 10\n": ":2: [defaults] field 'max_mtu': ",
        '[defaults]\nmac = "02:00:00:00:00:01"\n': "a MAC belongs to one VM",
        "[vm.vm0\n": "Expected ']'",
        "[vms.vm0]\n": "'vms': a policy has",
    }
    for text, want in cases.items():
        with pytest.raises(PolicyError) as e:
            policy(text, tmp_path)
        assert want in str(e.value) and "\n" not in str(e.value), (text, str(e.value))


def test_policy_defaults_are_safe():
    r = Policy().for_vm("vm7")
    assert (r.spoofchk, r.trust, r.vlan, r.guest_vlans, r.max_mtu) == (True, False, 0, (), 1500)


def test_npa_policy_check_prints_the_resolved_policy_and_refuses_bad_files(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text('[defaults]\nmax_mtu = 9000\n[vm.vm0]\nmac = "02:00:00:00:00:01"\ntrust = true\n')
    r = npa("policy", "check", str(f), "--vms", "2")
    assert r.returncode == 0, r.stderr
    assert "vm0" in r.stdout and "vm1" in r.stdout and "9000" in r.stdout and "(assigned)" in r.stdout
    f.write_text("[vm.vm0]\nvlan = -1\n")
    r = npa("policy", "check", str(f))
    assert r.returncode == 2 and r.stderr.startswith(f"npa: error: {f}:2: [vm.vm0] field 'vlan'")


# -- the emulated path and switching -------------------------------------------------------------
def test_vms_boot_emulated_then_switch_to_the_plugin_on_the_vf_offer():
    h = host()
    modes = [(c.mode, c.reason) for c in h.hv.modes(h.vms[0])]
    assert modes == [(EMULATED, "boot"), (PLUGIN, "vf offer")]


def test_emulated_and_plugin_vms_talk_through_the_switch():
    h = host(vms=2, packets=20000, size="imix")
    h.revoke(0)
    assert h.hv.mode(h.vms[0]) == EMULATED and h.hv.mode(h.vms[1]) == PLUGIN
    h.run()
    assert h.clean() and h.vms[0].shell.stats["polls"] > 0


def test_100_round_trips_between_emulated_and_plugin_under_traffic_lose_nothing():
    """Both directions run the whole time; vm0 goes EMULATED -> PLUGIN -> EMULATED -> ... 200
    switches, at different points of a step (between steps, and after the shells polled but
    before the NIC sent what the plugin posted, so frames come back UNSENT)."""
    h = host(vms=2, packets=150_000, size="mixed")
    switches = 0
    while not h.delivered() and h.steps < 20_000:
        h.run_shells()
        if switches < 200 and h.steps % 2 == 0:
            (h.revoke if switches % 2 == 0 else h.offer)(0)
            switches += 1
        h.run_nic()
        h.steps += 1
    h.finish()
    assert switches == 200
    assert [c.mode for c in h.hv.modes(h.vms[0])][-2:] == [EMULATED, PLUGIN]
    assert h.vms[0].shell.stats["tx_unsent"] > 0  # the mid-step switches did hand frames back
    assert h.clean() and h.conserved()
    for vm in h.vms:
        for fid, c in vm.sink.check.items():
            assert (vm.sink.lost(fid), c.duplicates, c.reordered, c.corrupted) == (0, 0, 0, 0)


@pytest.fixture(scope="module")
def trapping(tmp_path_factory):
    return build_broken(tmp_path_factory.mktemp("trap"), ["TRAPS_MID_TRAFFIC", "TRAPS_FOR_GOOD"])


def test_a_plugin_trapping_mid_traffic_falls_back_to_emulated_losing_no_frame(trapping):
    image = trapping["TRAPS_MID_TRAFFIC"].read_bytes()
    h = host(vms=2, packets=60_000, size="imix", image=image)
    h.run()
    faulted = [vm for vm in h.vms if h.hv.mode(vm) == EMULATED]
    assert faulted, "no VM fell back"
    for vm in faulted:
        last = h.hv.modes(vm)[-1]
        assert last.mode == EMULATED and last.reason.startswith("fault: npa_poll: trap")
    assert h.conserved()
    for vm in h.vms:  # every frame any guest handed to its shell arrived, once, in order
        for fid, c in vm.sink.check.items():
            assert (vm.sink.lost(fid), c.duplicates, c.reordered, c.corrupted) == (0, 0, 0, 0)
    # what the plugin held on the TX path was re-sent on the emulated path (its quiesce after
    # the trap handed the frames back UNSENT)
    assert sum(vm.shell.stats["tx_resent"] for vm in faulted) > 0


def test_npa_run_with_a_policy_shows_mode_changes_and_drop_counters(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text("[vm.vm0]\nvlan = 10\n[vm.vm1]\nvlan = 10\n")
    r = npa("run", "--policy", str(f), "--packets", "2000", "-q")
    assert r.returncode == 0, r.stderr
    for text in ("data-path mode changes", "vf offer", "boot", "spoofed", "VLAN", "over MTU"):
        assert text in r.stdout
    f.write_text("[vm.vm0]\nvlan = x\n")
    r = npa("run", "--policy", str(f), "-q")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1


def test_link_state_disable_cuts_the_vf_off_and_tells_the_guest(tmp_path):
    h = host(policy=policy('[vm.vm1]\nstate = "disable"\n', tmp_path), packets=300)
    guest = h.hv.ports[h.vms[1].index].guest
    msgs = [guest.recv()[1] for _ in range(guest.pending())]
    assert LinkState(up=False) in msgs
    for _ in range(30):
        h.step()
    assert h.vms[1].sink.frames == 0 and h.vms[0].sink.frames == 0
    assert h.vms[1].vf.port.stats.drops > 0


def test_a_plugin_that_cannot_even_quiesce_still_loses_no_frame(trapping):
    """Its quiesce traps too: the shell takes every frame back itself and settles each with the
    device's own record: TX frames the device read are done, the rest re-sent on the emulated
    path; RX buffers the device wrote are delivered. Exactly once."""
    h = host(vms=2, packets=60_000, size="imix", image=trapping["TRAPS_FOR_GOOD"].read_bytes())
    h.run()
    assert all(h.hv.mode(vm) == EMULATED for vm in h.vms) and h.conserved()
    assert sum(vm.shell.stats["tx_settled_sent"] + vm.shell.stats["tx_resent_after_fault"]
               for vm in h.vms) > 0  # the trap left frames with the plugin: the record settled them
    for vm in h.vms:
        for fid, c in vm.sink.check.items():
            assert (vm.sink.lost(fid), c.duplicates, c.reordered, c.corrupted) == (0, 0, 0, 0)


# -- storm control ----------------------------------------------------------------------------
BROADCAST = 0xFFFFFFFFFFFF


def _storm(h: Host, frames: int, steps: int) -> int:
    """vm0 broadcasts `frames` 60-byte frames over `steps` steps; returns how many it sent."""
    storm = build(Flow(99, h.vms[0].mac, BROADCAST, frames, np.array([60])), 0, frames)
    sent, per = 0, max(frames // steps, 1)
    for _ in range(steps):
        if sent < frames:
            sent += h.vms[0].shell.transmit(storm.take(slice(sent, min(sent + per, frames))))
        h.step()
    for _ in range(10):  # the last ones on their way
        h.step()
    return sent


def test_a_broadcast_storm_reaches_the_others_only_at_the_policys_rate(tmp_path):
    h = host(vms=3, packets=10)
    t0 = h.nic.now_us
    sent = _storm(h, 4000, 400)  # 4000 frames in 4 ms of device time: 1 Mpps
    elapsed = h.nic.now_us - t0
    allowed = 100 + 1000 * elapsed // 1_000_000 + 1  # the default: a burst of 100, then 1000/s
    for vm in h.vms[1:]:
        assert 0 < vm.sink.unexpected <= allowed
    assert h.vms[0].vf.port.stats.storm == sent - h.vms[1].sink.unexpected
    # the storm's own VM and its peers lose nothing of their ordinary traffic
    h.run()
    assert all(vm.sink.clean() or vm.sink.unexpected for vm in h.vms)
    for vm in h.vms:
        for fid, c in vm.sink.check.items():
            assert (vm.sink.lost(fid), c.duplicates, c.reordered, c.corrupted) == (0, 0, 0, 0)


def test_storm_control_follows_the_policy(tmp_path):
    h = host(vms=3, packets=10, policy=policy("[vm.vm0]\nstorm_control = { broadcast_pps = 0 }\n", tmp_path))
    sent = _storm(h, 500, 50)
    assert h.vms[0].vf.port.stats.storm == 0 and h.vms[1].sink.unexpected == sent
    with pytest.raises(PolicyError, match="storm_control"):
        policy('[vm.vm0]\nstorm_control = { broadcast_pps = "many" }\n', tmp_path)


def test_policy_types_are_strict_and_a_mac_belongs_to_one_vm(tmp_path):
    for text, words in (('[vm.vm0]\ntrust = "yes"\n', "field 'trust'"),
                        ('[vm.vm0]\nspoofchk = "off"\n', "field 'spoofchk'"),
                        ('[vm.vm0]\nvlan = "100"\n', "field 'vlan'"),
                        ('[vm.vm0]\nmac = "02:00:00:00:00:09"\n[vm.vm1]\nmac = "02:00:00:00:00:09"\n',
                         "is vm.vm0's too")):
        with pytest.raises(PolicyError, match=words):
            policy(text, tmp_path)


def test_a_policy_table_for_a_vm_the_host_does_not_have_is_refused(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text("[vm.vm0]\ntrust = false\n\n[vm.vm7]\ntrust = true\n")
    for args in (["run", "--policy", str(f), "-q"], ["policy", "check", str(f), "--vms", "2"]):
        r = npa(*args)
        assert r.returncode == 2 and r.stderr.strip() == f"npa: error: {f}:4: [vm.vm7]: no such VM (this host has vm0..vm1)"
