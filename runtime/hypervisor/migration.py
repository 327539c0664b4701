"""The hypervisor's side of live migration: what it does to a VM's data path and VF on the way
out and on the way in. The host strings these steps together over a migration stream
(`runtime.host.migrate`); here is only what touches the policy, the PF and the plugins.

Out: `depart` revokes the VF (the plugin is quiesced and its frames settled exactly once; the VM
goes on on the emulated path) and starts the guest memory's dirty log; `pause` quiesces the
emulated path too and takes the frames waiting at the VM's port; then either `release` (the VM
runs elsewhere: the port's frames are forwarded, the VF is reset and freed) or `stay` (the
migration failed: the port's frames are put back, the VF and its plugin are offered again).

In: `rules_for` decides the arriving VM's rules under this host's own policy, `arrive` admits it
on the emulated path with its port held (frames for it wait there, in order), `pass_through`
gives it what the source forwards at once, ahead of them, `announce` tells the fabric where its
MAC now lives (a RARP broadcast, as QEMU's announce sends), and `open_port` lets the held frames
follow once the source is done.
"""
from __future__ import annotations

from npa.nic_model.frames import BROADCAST, Frames
from npa.runtime.sandbox import ImageReport, NpaError

from .hypervisor import Hypervisor
from .policy import Rules, format_mac
from .vm import Vm

ETH_RARP = 0x8035


def depart(hv: Hypervisor, vm: Vm) -> Frames:
    """The VM leaves its plugin for the emulated path; its memory's dirty log starts (every page
    dirty). Returns frames received on the way."""
    got = hv.revoke(vm, "migration")
    if vm.shell.record is None and vm.shell.dp.record is not None:
        vm.shell.dp.record.clear()  # no grant left: the VF's DMA engine reaches no frame now
    vm.shell.dp.guest.log_dirty()
    return got


def pause(hv: Hypervisor, vm: Vm) -> tuple[Frames, Frames]:
    """Stop the VM's data path: (frames received on the way, frames waiting at its port)."""
    got = vm.shell.quiesce()
    port = vm.vf.port
    return got, port.receive(port.pending())


def stay(hv: Hypervisor, vm: Vm, queued: Frames) -> Frames:
    """The migration failed: the VM goes on here, on its plugin again. Returns frames received."""
    vm.vf.port.unreceive(queued)
    vm.shell.dp.guest.stop_log()
    return hv.offer(vm)  # from the emulated path, running or quiesced


def release(hv: Hypervisor, vm: Vm) -> Frames:
    """The VM runs elsewhere: take what still waits at its port (to forward), free the VF."""
    port = vm.vf.port
    frames = port.receive(port.pending())
    hv.nic.release_vf(vm.vf)
    hv.ports.pop(vm.index, None)
    vm.shell.dp.guest.stop_log()
    return frames


def rules_for(hv: Hypervisor, name: str, mac: int, theirs: dict) -> Rules:
    """The arriving VM's rules: this host's policy when it names the VM (and then the VM's MAC
    must be among those it allows), else the source's rules, validated as a policy table.
    NpaError says why the VM is refused."""
    own = hv.policy.rules.get(name)
    if own is not None:
        if own.mac_ints and mac not in own.mac_ints:
            raise NpaError(f"policy {hv.policy.source}: [vm.{name}] allows "
                           f"{', '.join(own.macs)}, not {format_mac(mac)}")
        return own
    try:
        return Rules.model_validate(theirs)
    except ValueError as e:
        raise NpaError(f"the source's rules for {name} are not valid here: {str(e).splitlines()[-1].strip()}") from None


def arrive(hv: Hypervisor, vm: Vm, rules: Rules, image: ImageReport, plugin=None) -> None:
    """Admit the VM on the emulated path with the given rules and this NIC's image; its port
    holds frames until `open_port` (forwarded frames pass). `plugin`: the image's instance,
    loaded ahead (the next `offer` injects it)."""
    vm.vf.port.held = True
    hv.admit(vm, rules, image)
    hv.ports[vm.index].plugin = plugin


def pass_through(vm: Vm, forwarded: Frames) -> int:
    """Frames the old host forwarded (or had queued for the VM) reach the VM now, ahead of those
    that came here directly and wait behind the hold. The source is not trusted with this
    port: a frame longer than the port passes (its max frame, never more than the guest's
    buffers) is dropped, as the switch would. Returns how many were."""
    port = vm.vf.port
    fits = forwarded.lens <= port.policy.max_frame
    port.pass_through(forwarded if fits.all() else forwarded.take(fits))
    port.stats.oversize += int((~fits).sum())
    return int((~fits).sum())


def open_port(vm: Vm) -> None:
    """The old host forwards no more: frames that came here directly follow."""
    vm.vf.port.release_hold()


def announce(hv: Hypervisor, vm: Vm) -> None:
    """A RARP broadcast from the VM's MAC out of the uplink: bridges on the fabric learn that the
    MAC is behind this host now (the guest's own stack need not know it moved)."""
    mac = vm.mac.to_bytes(6, "big")
    rarp = (BROADCAST.to_bytes(6, "big") + mac + ETH_RARP.to_bytes(2, "big")
            + bytes.fromhex("0001080006040003") + mac + bytes(4) + mac + bytes(4))
    hv.nic.uplink.port.deliver(Frames.from_bytes([rarp.ljust(60, b"\0")]))
