"""`npa`: build, inspect, run, certify and benchmark NPA plugins.

Only typer and the ABI's version are imported here: each command imports what it uses when it
runs, so `npa --version` and `--help` answer at once."""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Optional

import typer

from npa.shell_api.abi import ABI_MAJOR, ABI_MINOR

from . import bench
from .console import out
from .errors import VERDICT, check_input, check_output, check_output_dir, check_socket_path, fail
from .jsonout import check_dest
from .jsonout import option as json_option
from .jsonout import write as write_json
from .resources import bundled

app = typer.Typer(
    help=f"NPA: sandboxed WebAssembly vNIC plugins (Shell API v{ABI_MAJOR}.{ABI_MINOR}).",
    no_args_is_help=True, pretty_exceptions_enable=False, add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]})
app.add_typer(bench.app, name="bench")

INTERRUPTED = 130  # 128 + SIGINT, as shells report a command Ctrl-C ended
MAX_VMS = 64  # a PF has 1 to 64 VFs, one VM each
MAX_PACKETS = 10**9


def _model(nic: str, option: str = "--nic"):
    """The NIC model named by an option, or a usage error listing the known ones."""
    from npa.nic_model.sriov import MODELS

    if nic not in MODELS:
        fail(f"{option} {nic}: unknown NIC model (known: {', '.join(MODELS)})")
    return MODELS[nic]


def _int(text: str) -> int:
    """An address or size from the command line: decimal or 0x-hex, 0 to 2^32-1."""
    try:
        value = int(text, 0)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an integer (decimal or 0x-hex)") from None
    if not 0 <= value < 1 << 32:
        raise typer.BadParameter(f"{text} is outside 0..0xffffffff")
    return value


@app.command()
def build(
    plugins: list[str] = typer.Argument(None, help="Plugin directories or names under --src "
                                        "(default: every plugin in --src)."),
    src: Path = typer.Option(Path("plugins-src"), help="Where plugin sources live."),
    out_dir: Path = typer.Option(Path("plugins-wasm"), "--out", help="Where images are written "
                                 "(created if missing; its parent must exist)."),
) -> None:
    """Compile plugin sources (C or Zig, and plugin.toml) to position-independent wasm images,
    with the compilers of the pinned ziglang package. C: clang -O2, wasm32-freestanding,
    -nostdlib (no libc: the Shell API header is all there is). Zig: zig build-obj -O
    ReleaseFast (safety checks off), -fsingle-threaded, wasm32-freestanding, the Shell API as
    module `npa`; the standard library's freestanding parts work (no OS, no files, allocate
    from your own buffers or dma_alloc). A Zig panic or `unreachable` is a wasm trap: the
    shell takes it as the plugin's fault and the VM goes on on the emulated path."""
    from npa.runtime.sandbox import NpaError
    from npa.shell_api import ManifestError

    from . import toolchain

    check_output_dir(out_dir, "--out")
    try:
        dirs = [toolchain.resolve(p, src) for p in plugins] if plugins else toolchain.plugin_dirs(src)
    except NpaError as e:
        fail(str(e))
    if not dirs:
        fail(f"no plugins under {src} (each is a directory with a {toolchain.MANIFEST_FILE})")
    usage = verdict = 0
    for d in dirs:
        try:
            b = toolchain.build(d, out_dir)
        except toolchain.BuildError as e:  # the compiler or the loader said no: a verdict
            if e.diagnostics:
                print(e.diagnostics, file=sys.stderr)
            print(f"npa: error: {e}", file=sys.stderr)
            verdict += 1
        except (ManifestError, NpaError) as e:  # plugin.toml is wrong: the input
            print(f"npa: error: {e}", file=sys.stderr)
            usage += 1
        except OSError as e:
            print(f"npa: error: {e.filename or d}: {e.strerror}", file=sys.stderr)
            usage += 1
        else:
            out.print(f"built {b.path} ({b.size} bytes, {b.manifest.name} {b.manifest.version})")
    if usage or verdict:
        raise typer.Exit(2 if usage else VERDICT)


@app.command()
def new(
    name: str = typer.Argument(..., help="Plugin name (a directory under --src)."),
    lang: str = typer.Option("c", "--lang", help="Source language: c or zig."),
    nic: str = typer.Option("ixgbevf", "--nic", help="NIC model the plugin drives (its PCI ids "
                            "go in the manifest)."),
    src: Path = typer.Option(Path("plugins-src"), help="Where plugin sources live (created if "
                             "missing; its parent must exist)."),
) -> None:
    """Scaffold plugins-src/NAME/: a manifest, a skeleton that builds and loads (each entry point
    returning NOT_IMPLEMENTED until filled in) and a README for the vendor."""
    from npa.runtime.sandbox import NpaError

    from .scaffold import scaffold

    model = _model(nic)
    check_output_dir(src, "--src")
    try:
        d = scaffold(name, lang, model, src)
    except NpaError as e:
        fail(str(e))
    except OSError as e:
        fail(f"--src {src}: {e.strerror}")
    out.print(f"created {d}/ ({', '.join(sorted(p.name for p in d.iterdir()))}); next: npa build {name}")


@app.command()
def datasheet(
    nic: str = typer.Argument(..., help="NIC model: ixgbevf, vmxnet3 or mlx5."),
) -> None:
    """A NIC model's documentation, whole: its registers, descriptor formats, errors and reset as
    npa models them, then every in-memory layout the device reads or writes, field by field with
    offsets and byte order. What a vendor writes a plugin from, with the ABI reference."""
    from .datasheet import show

    show(_model(nic, "NIC"))


def _trial(report, base: int | None) -> tuple[str | None, dict | None]:
    """Instantiate at `base` in a fresh sandbox: (error line or None, placement)."""
    from npa.runtime.sandbox import LoadError, PluginFault, RegionPlan, Sandbox

    try:
        plugin = Sandbox(RegionPlan()).load(report, base=base)
    except (LoadError, PluginFault) as e:
        return str(e), None
    p = plugin.placement
    return None, {"memory_base": p.memory_base, "table_base": p.table_base,
                  "stack": [p.stack_low, p.stack_top]}


def _report_json(path: Path, rep, error: str | None, placement: dict | None) -> dict:
    from npa.runtime.sandbox import measures
    from npa.shell_api import LIMIT

    m = rep.manifest
    return {
        "schema": "npa.inspect/1",
        "file": str(path), "size": rep.size, "verdict": "refused" if error else "loadable",
        "error": error, "check": rep.error.check if rep.error else ("load" if error else None),
        "manifest": None if m is None else {
            "name": m.name, "version": m.version, "vendor": m.vendor,
            "abi": f"{m.abi_major}.{m.abi_minor}", "devices": [str(d) for d in m.devices],
            "features": m.feature_names()},
        "imports": [vars(i) for i in rep.imports],
        "exports": [vars(e) for e in rep.exports],
        "dylink": None if rep.dylink is None else vars(rep.dylink) | {"needed": list(rep.dylink.needed)},
        "limits": {name: {"image": value, "limit": LIMIT[name]} for name, value in measures(rep).items()},
        "placement": placement,
    }


@app.command()
def inspect(
    image: Path = typer.Argument(..., help="A plugin image (.wasm)."),
    as_json: Optional[str] = json_option("npa.inspect/1", "the report", "the tables"),
    base: Optional[str] = typer.Option(None, help="Trial base address (default: the default "
                                       "region plan's plugin base)."),
) -> None:
    """Show an image's manifest, imports, exports and memory needs, and the loader's verdict
    (exit 1 when the loader refuses the image)."""
    from npa.runtime.sandbox import analyse

    check_dest(as_json)
    trial_base = _int(base) if base else None
    data = check_input(image).read_bytes()
    rep = analyse(data)
    error = str(rep.error) if rep.error else None
    placement = None
    if error is None:
        error, placement = _trial(rep, trial_base)
    if as_json:
        write_json(as_json, _report_json(image, rep, error, placement))
    if as_json != "-":
        _print_report(image, rep, placement)
    if error:
        fail(f"{image}: {error}", VERDICT)
    if as_json != "-":
        out.print(f"[green]verdict: loadable[/] at base 0x{placement['memory_base']:x}")


def _print_report(path: Path, rep, placement: dict | None) -> None:
    from rich.table import Table

    from npa.runtime.sandbox import measures
    from npa.shell_api import LIMIT

    m = rep.manifest
    t = Table(title=f"{path} ({rep.size} bytes)", show_header=False, title_justify="left")
    if m:
        t.add_row("plugin", f"{m.name} {m.version}" + (f" ({m.vendor})" if m.vendor else ""))
        t.add_row("ABI", f"{m.abi_major}.{m.abi_minor} (runtime {ABI_MAJOR}.{ABI_MINOR})")
        t.add_row("devices", ", ".join(str(d) for d in m.devices))
        t.add_row("features", ", ".join(m.feature_names()) or "-")
    if rep.dylink:
        d = rep.dylink
        t.add_row("memory", f"{d.memory_size} bytes, align 2^{d.memory_align}; table {d.table_size}")
    if placement:
        lo, hi = placement["stack"]
        t.add_row("trial load", f"base 0x{placement['memory_base']:x}, stack 0x{lo:x}-0x{hi:x}")
    out.print(t)
    if rep.imports:
        it = Table("import", "kind", "verdict", title="imports", title_justify="left")
        for i in rep.imports:
            it.add_row(f"{i.module}.{i.name}", i.kind,
                       "[green]allowed[/]" if i.allowed else f"[red]refused[/]: {i.note}")
        out.print(it)
    if rep.exports:
        et = Table("export", "kind", "role", title="exports", title_justify="left")
        for e in rep.exports:
            role = f"[red]refused[/]: {e.note}" if e.role == "refused" else e.role
            et.add_row(e.name, e.kind, role)
        out.print(et)
    lt = Table("measure", "image", "limit", title="loader limits (shell_api/limits.py)", title_justify="left")
    for name, value in measures(rep).items():
        lt.add_row(name, f"{value:,}" if value <= LIMIT[name] else f"[red]{value:,}[/]", f"{LIMIT[name]:,}")
    out.print(lt)


BUNDLED = bundled("plugins-wasm")


@app.command()
def run(
    image: Optional[Path] = typer.Argument(None, help="Plugin image (default: the one in "
                                           "--plugins whose manifest lists the VFs' PCI ids)."),
    vms: int = typer.Option(2, "--vms", min=2, max=MAX_VMS, help="VMs, one VF each; traffic "
                            "flows both ways between pairs (0<->1, 2<->3, ...; an odd last VM "
                            "pairs with vm0)."),
    packets: int = typer.Option(100_000, "--packets", min=1, max=MAX_PACKETS, help="Frames per "
                                "direction."),
    size: str = typer.Option("imix", "--size", help="Frame size in bytes (60-1514, without "
                             "FCS), 'imix' (7:4:1 of 60/590/1514) or 'mixed' (60..1514)."),
    pcap: Optional[Path] = typer.Option(None, "--pcap", help="Capture frames to this file (pcapng "
                                        "when it ends in .pcapng: one interface per port). "
                                        "Alone, it implies --switch vepa and watches the uplink."),
    pcap_port: list[str] = typer.Option([], "--pcap-port", help="A switch port to capture at: "
                                        "uplink, pf, vf0, vf1, ... or all (repeatable; default "
                                        "uplink, or all with --switch veb)."),
    nic: str = typer.Option("ixgbevf", "--nic", help="NIC model: ixgbevf (Intel 82599 VF), "
                            "vmxnet3 (VMware, completion rings) or mlx5 (Mellanox, owner-bit CQs)."),
    plugins: Path = typer.Option(BUNDLED, "--plugins", help="Plugin repository the hypervisor "
                                 "picks the image from."),
    vfs: int = typer.Option(0, "--vfs", min=0, max=MAX_VMS, help="VFs on the NIC (default: "
                            "max(4, VMs))."),
    switch: Optional[str] = typer.Option(None, "--switch", help="Embedded switch mode: veb "
                                         "(VM to VM inside the NIC) or vepa (through the uplink)."),
    uplink: Optional[str] = typer.Option(None, "--uplink", help="What is behind the uplink: null "
                                         "or loopback (default: loopback with vepa, else null)."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Policy file (TOML) the "
                                          "hypervisor enforces; see `npa policy check`."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
    as_json: Optional[str] = json_option("npa.run/1", "the result", "the tables"),
    migrate_to: Optional[str] = typer.Option(None, "--migrate-to", help="A second host with this "
                                             "NIC model on the uplink's cable: vm0 live-migrates "
                                             "there mid-run (its plugin from --plugins)."),
    migrate_at: int = typer.Option(0, "--migrate-at", min=0, max=MAX_PACKETS * MAX_VMS, help="Start the migration once this "
                                   "many frames were received (default: a quarter of them)."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw per-VM throughput over device "
                                        "time, with mode changes, faults and migration phases "
                                        "marked, to this PNG file."),
) -> None:
    """Run VM-to-VM traffic through the plugin, the NIC model and its switch; exit 0 only if
    nothing was lost, duplicated, reordered or corrupted and every frame is back with its shell.
    VMs boot on the emulated path and switch to the plugin when the hypervisor offers the VF.
    With --migrate-to, vm0 moves mid-run to a host with another NIC (deterministic, in process)."""
    from npa.runtime.guest import size_schedule
    from npa.runtime.hypervisor import Policy, image_for
    from npa.runtime.sandbox import LoadError, NpaError, PluginFault

    from . import run as runner

    model = _model(nic)
    try:
        sizes = size_schedule(size)
    except ValueError as e:
        fail(f"--size: {e}")
    ports = tuple(pcap_port) or (("all",) if switch == "veb" else ("uplink",))
    if pcap_port and pcap is None:
        fail("--pcap-port needs --pcap FILE")
    known = ["uplink", "pf", "all", *(f"vf{i}" for i in range(vfs or max(4, vms)))]
    if bad := [p for p in ports if p not in known]:
        fail(f"--pcap-port {bad[0]}: use uplink, pf, vf0..vf{len(known) - 4} or all")
    switch = switch or ("vepa" if pcap and not pcap_port else "veb")
    uplink = uplink or ("loopback" if switch == "vepa" else "null")
    if switch not in ("veb", "vepa"):
        fail(f"--switch {switch}: use veb or vepa")
    if uplink not in ("null", "loopback"):
        fail(f"--uplink {uplink}: use null or loopback")
    if migrate_to is not None:
        _model(migrate_to, "--migrate-to")
        if switch == "vepa" or uplink != "null":
            fail("--migrate-to cables the uplink to the second host: no --switch vepa or --uplink")
    vfs = vfs or max(4, vms)
    if vms > vfs:
        fail(f"--vms {vms} needs as many VFs; the NIC has {vfs} (--vfs)")
    check_dest(as_json)
    check_output(plot, "--plot")
    check_output(pcap, "--pcap")
    if image is not None:
        check_input(image)
    elif not plugins.is_dir():
        fail(f"--plugins {plugins}: no such directory")
    try:
        path = image or image_for(plugins, model)
        data = path.read_bytes()
    except NpaError as e:
        fail(str(e))
    except OSError as e:
        fail(f"{e.filename}: {e.strerror}")
    try:
        rules = Policy.load(check_input(policy, "--policy")) if policy else None
        if rules is not None:
            rules.check_vms(vms)
    except NpaError as e:
        fail(str(e))
    other = b""
    if migrate_to is not None:
        try:
            other = image_for(plugins, _model(migrate_to, "--migrate-to")).read_bytes()
        except (NpaError, OSError) as e:
            fail(f"--migrate-to {migrate_to}: {e}")
    from npa.runtime.host.timeline import Timeline, marks
    timeline = Timeline() if plot else None
    try:
        host, seconds = runner.run(data, vms=vms, vfs=vfs, packets=packets, sizes=sizes, model=nic,
                                   pcap=pcap, pcap_ports=ports, switch=switch, uplink=uplink, quiet=quiet, policy=rules,
                                   migrate_to=migrate_to, migrate_at=migrate_at or vms * packets // 4,
                                   other_image=other, plugins=plugins, timeline=timeline)
    except (LoadError, PluginFault) as e:
        fail(f"{path}: {e}", VERDICT)
    except OSError as e:
        fail(f"{e.filename}: {e.strerror}")
    if plot is not None:
        from .plot import timeline as draw
        hosts = runner.hosts_of(host)
        draw(plot, timeline, marks(hosts, getattr(host, "moves", [])),
             f"npa run: {vms} VMs, {size} frames, {nic}" + (f" -> {migrate_to} (vm0)" if migrate_to else ""))
        print(f"npa: timeline written to {plot}", file=sys.stderr)
    if as_json == "-":
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):
            problems = runner.report(host, seconds, modes=policy is not None)
        code = 0 if not problems and host.clean() else 1
    else:
        problems = runner.report(host, seconds, modes=policy is not None)
        code = runner.verdict(host, problems)
    if as_json:
        write_json(as_json, runner.summary(host, seconds, problems))
    raise typer.Exit(code)


def _listen_address(text: str) -> str:
    """--listen HOST:PORT, an IPv4 address and a port 0-65535, checked before the host boots."""
    import ipaddress

    host, sep, port = text.rpartition(":")
    try:
        ipaddress.IPv4Address(host)
        ok = sep == ":" and port.isdigit() and int(port) <= 65535
    except ValueError:
        ok = False
    if not ok:
        fail(f"--listen {text}: use IPV4:PORT (port 0: any free port)")
    return text


@app.command()
def host(
    nic: str = typer.Option("ixgbevf", "--nic", help="NIC model: ixgbevf, vmxnet3 or mlx5."),
    uplink: str = typer.Option(..., "--uplink", help="tap:NAME (a Linux TAP device, created if "
                               "absent and set up; root) or udp:BIND=PEER (datagrams to a peer "
                               "host)."),
    vms: int = typer.Option(1, "--vms", min=0, max=MAX_VMS, help="VMs to boot (0: a host "
                            "waiting for VMs)."),
    ip: str = typer.Option("10.0.0.2/24", "--ip", help="vm0's address ADDR/PREFIX; vm1 gets the "
                           "next one, and so on."),
    policy: Optional[Path] = typer.Option(None, "--policy", help="Policy file (TOML)."),
    plugins: Path = typer.Option(BUNDLED, "--plugins", help="Plugin repository."),
    control: Optional[str] = typer.Option(None, "--control", help="Unix socket path for "
                                          "management requests (`npa stat`, `npa migrate`)."),
    vfs: int = typer.Option(0, "--vfs", min=0, max=MAX_VMS, help="VFs on the NIC (default: "
                            "max(4, VMs))."),
    listen: str = typer.Option("127.0.0.1:0", "--listen", help="IPV4:PORT where this host "
                               "accepts incoming migration streams (port 0: any free port)."),
    pcap: Optional[Path] = typer.Option(None, "--pcap", help="Capture every switch port's "
                                        "frames to this file, stamped with wall-clock time "
                                        "(pcapng when it ends in .pcapng: one interface per "
                                        "port)."),
    guest: str = typer.Option("stack", "--guest", help="What answers inside each VM: stack (npa's "
                              "own: ARP, ping, UDP echo), tap (a Linux TAP device per VM, "
                              "NAME-vmN, for you to configure) or netns (that TAP as eth0 in a "
                              "network namespace npa-NAME-vmN, addressed and routed: run any "
                              "program there with `ip netns exec`). root."),
    name: Optional[str] = typer.Option(None, "--name", help="This host's name in its guests' "
                                       "device and namespace names (default: the uplink TAP's "
                                       "name, or h<PID>)."),
    as_json: Optional[str] = json_option("npa.host/1", "the summary", lead="At exit, also write"),
) -> None:
    """A host process on a real network: boots the NIC and its VMs (emulated, then each on its
    plugin), answers ARP, ping and UDP echo (port 7) at the VMs' addresses, sleeps when idle,
    and on SIGINT or SIGTERM quiesces every plugin, prints a summary and exits (0: no fault).
    Once up it prints a `ready` line on stderr (`npa stat --wait` waits for it). With
    --control, `npa stat` and `npa migrate` reach it."""
    import ipaddress

    from npa.nic_model.sriov import SriovNic
    from npa.runtime.host import RealtimeHost
    from npa.runtime.hypervisor import Policy, image_for
    from npa.runtime.sandbox import NpaError, analyse

    from .host import serve

    from npa.runtime.guest.linux import GUESTS

    model = _model(nic)
    try:
        ipaddress.IPv4Interface(ip)
    except ValueError:
        fail(f"--ip {ip}: not an IPv4 ADDR/PREFIX")
    if guest not in GUESTS:
        fail(f"--guest {guest}: use one of {', '.join(GUESTS)}")
    name = name or (uplink[4:] if uplink.startswith("tap:") else f"h{os.getpid() % 10**7}")
    if guest != "stack" and not re.fullmatch(r"[A-Za-z0-9_-]{1,8}", name):
        fail(f"--name {name}: 1 to 8 letters, digits, '-' or '_' (it names the guests' devices "
             "and namespaces, NAME-vmN)")
    vfs = vfs or max(4, vms)
    if vms > vfs:
        fail(f"--vms {vms} needs as many VFs; the NIC has {vfs} (--vfs)")
    _listen_address(listen)
    check_socket_path(control, "--control")
    check_dest(as_json)
    check_output(pcap, "--pcap")
    if not plugins.is_dir():
        fail(f"--plugins {plugins}: no such directory")
    try:
        path = image_for(plugins, model)
        rules = Policy.load(check_input(policy, "--policy")) if policy else None
        if rules is not None:
            rules.check_vms(vms)
        report = analyse(path.read_bytes())
        capture = {} if pcap is None else {
            "pcap": pcap, "pcap_ports": ("all",),
            "pcap_format": "pcapng" if pcap.suffix == ".pcapng" else "pcap"}
        box = SriovNic(nic, vfs, uplink=uplink, **capture)
        rt = RealtimeHost(box, report, vms, ip, policy=rules, repository=plugins, guest=guest,
                          name=name)
        rt.migration_address = listen
    except (NpaError, ValueError, OSError) as e:
        fail(str(e))
    raise typer.Exit(serve(rt, control, live=sys.stdout.isatty() and as_json != "-", as_json=as_json))


@app.command()
def migrate(
    vm: str = typer.Argument(..., help="The VM to move, by its name on the source (vm0, ...)."),
    source: str = typer.Option(..., "--from", help="Control socket of the source `npa host`."),
    dest: str = typer.Option(..., "--to", help="Control socket of the destination `npa host`."),
    timeout: float = typer.Option(30.0, "--timeout", min=1.0, max=3600.0, help="Give up following the "
                                  "migration after this many seconds."),
    as_json: Optional[str] = json_option("npa.migrate/1", "the report"),
) -> None:
    """Live-migrate a running VM between two `npa host` processes, whose NICs may differ: pre-copy
    of its memory while it runs on the emulated path, a short stop-and-copy, the destination's
    plugin for its own NIC injected, the MAC announced, frames reaching the source forwarded.
    Exit 0: the VM runs on the destination; 1: it did not move (it runs on the source, and the
    line says why); 2: the request was wrong (no such VM, a control socket that does not answer)."""
    from .migrate import MigrateError, print_report
    from .migrate import migrate as move

    check_dest(as_json)
    try:
        doc = move(vm, source, dest, timeout)
    except MigrateError as e:
        fail(str(e), e.code)
    if as_json == "-":
        print(json.dumps(doc, indent=2))
    else:
        print_report(doc)
        if as_json:
            write_json(as_json, doc)
    if doc["outcome"] != "moved":
        fail(doc["reason"], VERDICT)


@app.command()
def stat(
    control: str = typer.Option(..., "--control", help="Control socket of the running `npa host`."),
    as_json: Optional[str] = json_option("npa.stat/1", "the host's state", "the tables"),
    watch: Optional[float] = typer.Option(None, "--watch", min=0.1, max=3600.0, help="Refresh "
                                          "the tables every this many seconds until Ctrl-C."),
    wait: float = typer.Option(0.0, "--wait", min=0.0, max=600.0, help="Wait up to this many "
                               "seconds for the host to answer (it answers once its NIC and VMs "
                               "are up): a script's way to wait until `npa host` is ready."),
) -> None:
    """A running host's VMs (data path, IP, MAC, VF), each VF's and switch port's counters, drops
    by reason, faults, data-path mode changes with their reasons, and migrations: what `ip -s
    link` and `ethtool -S` show for a real NIC. Exit 2 when the host does not answer."""
    from npa.runtime.host.control import ControlError

    from . import stat as status

    if watch is not None and as_json is not None:
        fail("--watch draws tables; --json writes one document: give one of them")
    check_dest(as_json)
    try:
        if watch is not None:
            status.watch(control, watch, wait)
            return
        doc = status.fetch(control, wait)
        if as_json:
            write_json(as_json, doc)
        if as_json != "-":
            out.print(status.render(doc))
    except ControlError as e:
        fail(str(e))


policy_app = typer.Typer(help="The hypervisor's policy file.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("check")
def policy_check(
    file: Path = typer.Argument(..., help="Policy file (TOML)."),
    vms: int = typer.Option(0, "--vms", min=0, max=MAX_VMS, help="Also show the rules of "
                            "vm0..vmN-1 not listed in the file (they get the defaults)."),
    as_json: Optional[str] = json_option("npa.policy/1", "the resolved rules", None, "Write"),
) -> None:
    """Validate a policy file and print it resolved, VM by VM (defaults applied)."""
    from npa.runtime.hypervisor import Policy
    from npa.runtime.sandbox import NpaError

    from .console import table

    check_dest(as_json)
    try:
        pol = Policy.load(check_input(file))
        if vms:
            pol.check_vms(vms)
    except NpaError as e:
        fail(str(e))
    names = list(pol.rules) + [f"vm{i}" for i in range(vms) if f"vm{i}" not in pol.rules]
    t = table("vm", "MAC", "trust", "spoof check", "port VLAN", "guest VLANs", "max MTU",
              "multicast", "state", title=f"{file}: valid")
    for name in names:
        r = pol.for_vm(name)
        t.add_row(name, ", ".join(r.macs) or "(assigned)", "on" if r.trust else "off",
                  "on" if r.spoofchk else "off", str(r.vlan or "-"),
                  ", ".join(map(str, r.guest_vlans)) or "-", str(r.max_mtu),
                  str(r.multicast_limit), r.state)
    if as_json:
        write_json(as_json, {"schema": "npa.policy/1", "file": str(file),
                              "vms": {n: pol.for_vm(n).model_dump(mode="json") for n in names}})
    if as_json != "-":
        out.print(t)


@app.command()
def conformance(
    image: Path = typer.Argument(..., help="The plugin image (.wasm) to certify."),
    nic: Optional[str] = typer.Option(None, "--nic", help="NIC model to run it on (default: the "
                                      "one whose PCI ids the manifest lists)."),
    junit: Optional[Path] = typer.Option(None, "--junit", help="Write pytest's JUnit XML report here."),
    json_out: Optional[str] = json_option("npa.conformance/1", "the results"),
    select: Optional[str] = typer.Option(None, "-k", help="Only checks matching this pytest -k "
                                         "expression (e.g. 'datapath or budget')."),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bar."),
) -> None:
    """Certify a plugin against the Shell API: static, lifecycle, data path, frame ownership,
    interrupt, fault and budget checks on the NIC model its manifest names. Exit 0 only when
    no check fails."""
    from . import conformance as suite

    if nic is not None:
        _model(nic)
    check_input(image)
    check_dest(json_out)
    check_output(junit, "--junit")
    if select is not None and (error := suite.selection_error(select)):
        fail(f"-k {select!r}: {error}")
    try:
        result = suite.certify(image, nic, junit, json_out, select, quiet)
    except OSError as e:
        fail(f"{e.filename}: {e.strerror}")
    if not result.checks:
        fail(f"-k {select!r}: no check matches" if select else "no check ran")
    raise typer.Exit(0 if result.ok else 1)


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version
        try:
            npa = version("npa")
        except PackageNotFoundError:
            npa = "(not installed)"
        from npa.runtime.kernels import summary
        print(f"npa {npa}, Shell API {ABI_MAJOR}.{ABI_MINOR}; data path {summary()}")
        raise typer.Exit(0)


@app.callback()
def _root(_version_: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                         help="Print npa's and the Shell API's versions."),
          verbose: bool = typer.Option(False, "--verbose", "-v", help="Log at info level."),
          log_level: str = typer.Option("warning", "--log-level", help="error, warning, info or "
                                        "debug: plugin log lines (tagged with their VM and plugin) "
                                        "and the runtime's refusals, on stderr."),
          log_file: Optional[Path] = typer.Option(None, "--log", help="Also append log lines to "
                                                  "this file.")) -> None:
    """NPA: sandboxed WebAssembly vNIC plugins."""
    import logging
    levels = {"error": logging.ERROR, "warning": logging.WARNING, "info": logging.INFO,
              "debug": logging.DEBUG}
    if log_level not in levels:
        raise typer.BadParameter(f"{log_level!r}: use {', '.join(levels)}", param_hint="--log-level")
    logger = logging.getLogger("npa")
    logger.setLevel(logging.INFO if verbose and log_level == "warning" else levels[log_level])
    handlers = [logging.StreamHandler(sys.stderr)]
    if log_file is not None:
        check_output(log_file, "--log")
        try:
            handlers.append(logging.FileHandler(log_file))
        except OSError as e:
            fail(f"--log {log_file}: {e.strerror}")
    for h in handlers:
        h.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(h)


def main() -> None:
    """Exit status as grep and diff use it: 0 success, 1 a negative verdict (loss, not
    conformant, a fault, a refused image), 2 the input or the usage was wrong, 130 interrupted.
    Every error is one `npa: error:` line; the usage box only for --help."""
    try:  # typer vendors its click; older typers use click itself
        from typer._click import exceptions as cx
    except ImportError:
        from click import exceptions as cx

    try:
        code = app(standalone_mode=False, prog_name="npa")
        if code == INTERRUPTED:  # typer turns Ctrl-C inside a command into Exit(130), silently
            print("npa: error: interrupted", file=sys.stderr)
    except typer.Exit as e:
        code = e.exit_code
    except cx.NoArgsIsHelpError:
        code = 2  # the help was printed
    except cx.UsageError as e:
        where = f" ({e.ctx.command_path})" if e.ctx is not None else ""
        print(f"npa: error: {e.format_message()}{where}", file=sys.stderr)
        code = 2
    except (typer.Abort, KeyboardInterrupt):
        print("npa: error: interrupted", file=sys.stderr)
        code = INTERRUPTED
    except BrokenPipeError:  # `npa ... | head`: the reader is gone, nothing left to say
        sys.stderr.close()
        code = 141
    except Exception as e:  # a last net: every error a user sees is one line
        code = _last_net(e)
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the outcome is decided: Ctrl-C while the
    sys.exit(code if isinstance(code, int) else 0)  # interpreter shuts down changes nothing


def _last_net(e: Exception) -> int:
    """One line for an error no command caught: the runtime's own errors and the system's as
    they are, anything else as an internal error (NPA_TRACEBACK=1 shows where)."""
    import os
    import traceback

    from npa.runtime.sandbox import NpaError

    if os.environ.get("NPA_TRACEBACK"):
        traceback.print_exc()
    if isinstance(e, NpaError):
        print(f"npa: error: {e}", file=sys.stderr)
        return 1
    if isinstance(e, OSError):
        where = f"{e.filename}: " if e.filename else ""
        print(f"npa: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    print(f"npa: error: internal error: {type(e).__name__}: {e} (NPA_TRACEBACK=1 shows where; "
          "please report it)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    main()
