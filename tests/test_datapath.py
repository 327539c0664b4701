"""End to end: guests, shells, the ixgbevf plugin (real wasm), the NIC model and its switch."""
import json

import dpkt
import numpy as np

from helpers import ROOT, npa
from npa.nic_model.sriov import MODELS, SriovNic
from npa.runtime.guest import build, size_schedule
from npa.runtime.host import Host
from npa.runtime.hypervisor import image_for
from npa.shell_api import Status

IMAGE = (ROOT / "plugins-wasm" / "ixgbevf.wasm").read_bytes()


def test_100k_mixed_frames_between_two_vms_byte_exact_in_order_and_conserved():
    nic = SriovNic("ixgbevf", 4)
    host = Host(nic, IMAGE, 2, packets=50_000, sizes=size_schedule("mixed"))
    host.boot()
    host.run()
    for vm in host.vms:
        (check,) = vm.sink.check.values()
        assert check.received == 50_000 and check.expected_next == 50_000
        assert (check.duplicates, check.reordered, check.corrupted, vm.sink.unexpected) == (0, 0, 0, 0)
        assert vm.shell.refused == {} and not [e for e in vm.shell.events if e.kind == "fault"]
        assert vm.shell.holdings() == {"free": vm.shell.nframes, "tx": 0, "fill": 0, "resend": 0}
        assert vm.vf.stats.tx_frames == vm.vf.stats.rx_frames == 50_000
        assert vm.vf.stats.dma_faults == 0
    sizes = size_schedule("mixed")
    assert host.vms[0].vf.stats.tx_bytes == int(sizes[np.arange(50_000) % len(sizes)].sum())
    assert host.clean()


def test_a_receiver_whose_nic_ran_out_of_buffers_is_polled_to_post_more():
    """A small pool, flows wider than it: TX frames leave the receiver no buffer to post, its
    NIC has none and raises no RX interrupt. The shell polls once more to post buffers as they
    free up, instead of waiting for an interrupt that cannot come (it used to stall here)."""
    for nic in MODELS:
        host = Host(SriovNic(nic, 4), image_for(ROOT / "plugins-wasm", MODELS[nic]).read_bytes(), 2,
                    packets=40_000, sizes=size_schedule("imix"), pool_frames=256)
        host.boot()
        host.run()
        assert host.delivered() and host.clean(), nic


def test_no_host_call_per_packet():
    host = Host(SriovNic("ixgbevf", 2), IMAGE, 2, packets=20_000, sizes=size_schedule(60))
    host.boot()
    host.run()
    shell, calls = host.vms[0].shell, host.vms[0].box.host.calls
    per_poll = (calls["mmio_write32"] + calls["mmio_read32"]) / shell.stats["polls"]
    assert per_poll <= 6  # two doorbells per poll + the interrupt's ack and re-arm, never per frame
    assert shell.stats["tx_frames"] / shell.stats["polls"] > 50


def test_quiesce_mid_traffic_hands_back_unsent_frames_which_are_resent_after_reinjection():
    nic = SriovNic("ixgbevf", 2)
    host = Host(nic, IMAGE, 2, packets=5_000, sizes=size_schedule("imix"))
    host.boot()
    for _ in range(3):
        host.step()
    vm = host.vms[0]
    flow = vm.gen.flows[0]
    _, frames = vm.gen.next_burst(vm.shell.tx_room())
    flow.sent += vm.shell.transmit(frames)
    vm.sink.receive(vm.shell.poll())  # now on the hardware TX ring, the NIC has not run
    vm.sink.receive(vm.shell.quiesce())
    assert vm.shell.held_by_plugin() == 0 and vm.shell.stats["tx_unsent"] > 0
    assert vm.shell.holdings()["resend"] >= vm.shell.stats["tx_unsent"]  # + any still on tx
    assert vm.shell.attach(vm.box.load(host.report), host.report.manifest.features)  # re-injection
    host.run()
    assert host.clean() and vm.shell.stats["tx_resent"] >= vm.shell.stats["tx_unsent"]


def test_init_fails_cleanly_when_dma_alloc_fails():
    host = Host(SriovNic("ixgbevf", 2), IMAGE, 2, packets=10, sizes=size_schedule(60))
    vm = host.vms[0]
    vm.box.host.fail_dma_alloc = True
    assert not vm.shell.attach(vm.box.load(host.report), 0)
    assert f"{Status.describe(Status.NOMEM)}" in vm.shell.events[-1].reason


def test_pcap_of_a_run_holds_exactly_the_frames_sent(tmp_path):
    cap = tmp_path / "run.pcap"
    r = npa("run", "--packets", "700", "--size", "mixed", "--pcap", str(cap), "-q")
    assert r.returncode == 0, r.stderr
    with open(cap, "rb") as f:
        captured = [bytes(buf) for _, buf in dpkt.pcap.Reader(f)]
    by_flow: dict[int, list[bytes]] = {}
    for frame in captured:  # each dissects as IPv4/UDP, its header checksum right
        ip = dpkt.ethernet.Ethernet(frame).data
        assert isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.udp.UDP)
        assert dpkt.in_cksum(bytes(ip)[:20]) == 0 and ip.data.dport == 9
        assert ip.len == len(frame) - 14 and ip.data.ulen == len(frame) - 34
        by_flow.setdefault(int.from_bytes(frame[42:44], "big"), []).append(frame)
    host = Host(SriovNic("ixgbevf", 4), IMAGE, 2, packets=700, sizes=size_schedule("mixed"))
    assert sorted(by_flow) == [f.id for f in host.flows]
    for flow in host.flows:
        assert by_flow[flow.id] == build(flow, 0, 700).to_bytes()


def _pcapng_blocks(path):
    """(interface names, per-interface (timestamp µs, frame, direction) lists) of a little-endian pcapng
    file, read block by block here rather than with the writer's own library."""
    import struct

    data, off, names, packets = path.read_bytes(), 0, [], {}
    while off < len(data):
        kind, length = struct.unpack_from("<II", data, off)
        body = data[off + 8:off + length - 4]
        if kind == 1:  # interface description: link type, snaplen, options
            opt = 8
            while opt < len(body):
                code, size = struct.unpack_from("<HH", body, opt)
                if code == 2:
                    names.append(body[opt + 4:opt + 4 + size].decode())
                opt += 4 + (size + 3) // 4 * 4
                if code == 0:
                    break
        elif kind == 6:  # enhanced packet: interface, timestamp, lengths, data, options
            iface, hi, lo, caplen, _ = struct.unpack_from("<IIIII", body)
            opt, flags = 20 + (caplen + 3) // 4 * 4, None
            while opt + 4 <= len(body):
                code, size = struct.unpack_from("<HH", body, opt)
                if code == 0:
                    break
                if code == 2:  # epb_flags: bits 0-1 the direction
                    flags = struct.unpack_from("<I", body, opt + 4)[0] & 3
                opt += 4 + (size + 3) // 4 * 4
            packets.setdefault(iface, []).append(((hi << 32) | lo, body[20:20 + caplen], flags))
        off += length
    return names, packets


def test_pcapng_captures_at_the_vf_ports_of_a_veb_switch_one_interface_each(tmp_path):
    """VM-to-VM traffic inside the NIC never reaches the uplink: captured at the VF ports, each
    its own interface, dated today, every frame IPv4/UDP."""
    import time

    cap = tmp_path / "ports.pcapng"
    t0 = time.time()
    r = npa("run", "--packets", "300", "--switch", "veb", "--pcap", str(cap), "--pcap-port", "vf0",
            "--pcap-port", "vf1", "--pcap-port", "uplink", "-q")
    assert r.returncode == 0, r.stderr
    names, packets = _pcapng_blocks(cap)
    assert names == ["vf0", "vf1", "uplink"]
    assert {i: len(p) for i, p in packets.items()} == {0: 600, 1: 600}  # each VF: 300 out, 300 in
    for iface in (0, 1):  # each VF's frames: 300 into the switch (inbound), 300 out to it
        assert sorted(d for _, _, d in packets[iface]) == [1] * 300 + [2] * 300
    for ts, frame, _ in packets[0] + packets[1]:
        assert t0 - 5 < ts / 1e6 < time.time() + 5
        ip = dpkt.ethernet.Ethernet(frame).data
        assert isinstance(ip, dpkt.ip.IP) and isinstance(ip.data, dpkt.udp.UDP)


def test_npa_run_prints_tables_and_exits_0_when_clean():
    r = npa("run", "--vms", "3", "--packets", "2000", "--size", "imix", "-q")
    assert r.returncode == 0, r.stderr
    for heading in ("VMs", "VFs", "switch ports", "clean: 8000 frames"):
        assert heading in r.stdout
    assert "vm2" in r.stdout and "at 0x30000" in r.stdout


def test_npa_run_refuses_a_plugin_for_another_nic_in_one_line():
    r = npa("run", str(ROOT / "plugins-wasm" / "nullvf.wasm"), "--packets", "10")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines() == [
        f"npa: error: {ROOT / 'plugins-wasm' / 'nullvf.wasm'}: plugin nullvf drives 1b36:00f0, "
        "not this NIC's VFs (8086:10ed, ixgbevf)"]


def test_a_plugin_that_claims_no_interrupts_is_polled_and_moves_everything(tmp_path):
    """ABI.md: without `features = ["intr"]` the shell offers no interrupt and polls the plugin
    on every step it has work."""
    import shutil

    from npa.cli import toolchain

    src = tmp_path / "ixgbevf"
    shutil.copytree(ROOT / "plugins-src" / "ixgbevf", src)
    toml = src / "plugin.toml"
    toml.write_text(toml.read_text().replace('features = ["intr"]', "features = []"))
    image = toolchain.build(src, tmp_path).path.read_bytes()
    host = Host(SriovNic("ixgbevf", 2), image, 2, packets=20_000, sizes=size_schedule("imix"))
    host.boot()
    host.run()
    assert host.delivered() and host.clean()
    assert all(vm.shell.polled and vm.shell.stats["interrupts"] == 0 for vm in host.vms)


def test_pcap_timestamps_give_the_runs_own_rate(tmp_path):
    """A capture's span is the run's wall time, not device time (400k frames used to span 2 ms:
    "587 Gbit/s"); stamps never go backwards and a burst is spread, not one instant."""
    cap = tmp_path / "run.pcap"
    r = npa("run", "--packets", "20000", "--size", "64", "--pcap", str(cap), "-q", "--json", "-")
    assert r.returncode == 0, r.stderr
    seconds = json.loads(r.stdout)["seconds"]
    with open(cap, "rb") as f:
        stamps = [ts for ts, _ in dpkt.pcap.Reader(f)]
    assert len(stamps) == 40_000 and stamps == sorted(stamps)
    span = stamps[-1] - stamps[0]
    assert 0.5 * seconds <= span <= seconds + 0.05, (span, seconds)
    assert len(set(stamps)) > len(stamps) // 10  # not a handful of instants
