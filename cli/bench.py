"""`npa bench`: speed figures, each next to a baseline measured in the same run."""
from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import typer

from .errors import VERDICT, check_output, fail
from .jsonout import check_dest
from .jsonout import option as json_option
from .jsonout import write as write_json
from .resources import bundled
from .console import out, progress

def Table(*columns, **options):
    """A report table (rich is imported when a bench prints, so `npa --help` need not load it)."""
    from .console import table
    return table(*columns, **options)


app = typer.Typer(help="Benchmarks (ratios against a same-run baseline).", no_args_is_help=True)
DEFAULT_IMAGE = bundled("plugins-wasm") / "nullvf.wasm"


def _json(schema: str):
    return json_option(schema, "the figures")


def _plot_option():
    return typer.Option(None, "--plot", help="Also draw the figures as a bar chart to this PNG.")


def _emit(as_json: str | None, tables: list, doc: dict, plot: Path | None = None,
          bars: tuple | None = None) -> None:
    """The tables (unless --json -), the JSON document, and with --plot a bar chart of `bars`
    (title, labels, values, y label, baseline)."""
    if as_json != "-":
        for t in tables:
            out.print(t)
    if as_json:
        write_json(as_json, doc)
    if plot is not None and bars is not None:
        from .plot import bars as draw
        draw(plot, *bars)
        print(f"npa: chart written to {plot}", file=sys.stderr)


def _check_plot(plot: Path | None) -> None:
    check_output(plot, "--plot")


def _image(image: Path | None, nic: str) -> Path:
    """The image a bench runs: --image (relative to where npa was started), else the bundled
    repository's image for the NIC."""
    from npa.nic_model.sriov import MODELS
    from npa.runtime.hypervisor import image_for

    if nic not in MODELS:
        raise typer.BadParameter(f"unknown NIC model {nic!r} (known: {', '.join(MODELS)})", param_hint="--nic")
    path = (image or image_for(DEFAULT_IMAGE.parent, MODELS[nic])).resolve()
    if not path.is_file():
        raise typer.BadParameter(f"{image}: no such file", param_hint="--image")
    return path


def _per_call(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


@app.command()
def calls(
    image: Path = typer.Option(DEFAULT_IMAGE, help="Plugin image to call into."),
    n: int = typer.Option(50_000, "--calls", min=100, max=10**8, help="Calls per path."),
    loads: int = typer.Option(5, min=1, max=1000, help="Loads per cold/warm measurement."),
    as_json: Optional[str] = _json("npa.bench.calls/1"),
) -> None:
    """Per-call cost of the fast export path vs wasmtime-py's generic call; cold vs warm load."""
    check_dest(as_json)
    image = image.resolve()
    if not image.is_file():
        raise typer.BadParameter(f"{image}: no such file", param_hint="--image")
    from npa.nic_model.null import NullVf
    from npa.runtime.sandbox import Sandbox, analyse
    from npa.runtime.shell import datapath

    data = image.read_bytes()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["NPA_CACHE_DIR"] = cache
        cold = min(_timed(lambda: analyse(data, use_cache=False)) for _ in range(loads))
        analyse(data)  # fill the cache
        warm = min(_timed(lambda: analyse(data)) for _ in range(loads))

    box = Sandbox(bar=NullVf())
    plugin = box.load(data)
    cfg = datapath.setup(box, plugin.manifest).cfg_addr
    if (status := plugin.npa_init(cfg)) != 0:
        from npa.shell_api import Status
        fail(f"{image}: npa_init returned {Status.describe(status)}", VERDICT)
    generic = plugin.instance.exports(box.store)["npa_poll"]
    store, fuel, ticks = box.store, plugin.npa_poll.fuel, plugin.npa_poll.ticks

    def generic_call():
        store.set_fuel(fuel)
        store.set_epoch_deadline(ticks)
        return generic(store, 0, 64)

    fast = plugin.npa_poll
    for _ in range(1000):  # warm both paths up
        fast(0, 64), generic_call()
    t_generic = _per_call(generic_call, n)
    t_fast = _per_call(lambda: fast(0, 64), n)

    t = Table("measure", "baseline", "npa", "ratio", title=f"npa bench calls ({image.name})",
              title_justify="left")
    t.add_row("npa_poll call (µs)", f"{t_generic * 1e6:.2f} generic Func.__call__",
              f"{t_fast * 1e6:.2f} fast path", f"{t_generic / t_fast:.1f}x")
    t.add_row("load (ms)", f"{cold * 1e3:.2f} cold (compile)", f"{warm * 1e3:.2f} warm (cache)",
              f"{cold / warm:.1f}x")
    _emit(as_json, [t], {"schema": "npa.bench.calls/1", "image": str(image),
                         "call_us": {"generic": t_generic * 1e6, "fast": t_fast * 1e6, "ratio": t_generic / t_fast},
                         "load_ms": {"cold": cold * 1e3, "warm": warm * 1e3, "ratio": cold / warm}})


def _mpps(model: str, image: bytes, packets: int, driver=None, emulated: bool = False,
          budget: int = 512):
    """End-to-end Mpps of 64-byte frames, 2 VMs on `model`, both ways: (Mpps, the host).
    `driver`: another driver of the ABI instead of the plugin; `emulated`: the hypervisor's
    emulated vNIC instead; `budget`: frames per poll."""
    from npa.nic_model.sriov import SriovNic
    from npa.runtime.guest import size_schedule
    from npa.runtime.host import Host
    from npa.runtime.hypervisor import Policy

    # The baseline driver is trusted Python, far slower per poll than any plugin: the fairness
    # account's wall-time share (meant for plugins) must not throttle it and skew the ratio.
    policy = Policy({"wall_us_per_step": 1_000_000}) if driver is not None else None
    host = Host(SriovNic(model, 2), image, 2, packets=packets, sizes=size_schedule(64), budget=budget,
                policy=policy)
    host.boot(driver)
    if emulated:
        host.revoke(0), host.revoke(1)
    t0 = time.perf_counter()
    host.run()
    dt = time.perf_counter() - t0
    if not host.clean():
        fail(f"the benchmark run on {model} was not clean "
                       f"({'plugin' if driver is None else 'python driver'})", VERDICT)
    return host.total_frames() / dt / 1e6, host


def _fit(p1: tuple[float, float], p2: tuple[float, float]) -> tuple[float | None, float | None]:
    """The line through two (frames per step, seconds per step) points, as (fixed µs per step,
    ns per frame). Either is None where the points cannot tell it: steps of too similar sizes
    (the smaller not under half the larger), or a negative cost (the noise is larger than what is
    measured). A cost per frame that cannot be told leaves no fixed cost either."""
    (f1, s1), (f2, s2) = sorted((p1, p2))
    if f2 <= 0 or f1 > f2 / 2:
        return None, None
    per_frame = (s2 - s1) / (f2 - f1)
    if per_frame < 0:
        return None, None
    fixed = s1 - per_frame * f1
    return (fixed * 1e6 if fixed >= 0 else None), per_frame * 1e9


def _shown(value: float | None, unit: str) -> str:
    """A fitted figure, or words where it could not be measured."""
    return "not measurable at this size" if value is None else f"{value:.0f} {unit}"


def _step_costs(model: str, image: bytes, packets: int = 20_000) -> tuple[float | None, float | None]:
    """A host step's fixed cost (µs) and its cost per frame (ns), from two runs whose poll
    budgets differ (32 and 512 frames), fitted as a line through (frames/step, seconds/step)."""
    points = []
    for budget in (32, 512):
        mpps, host = _mpps(model, image, packets, budget=budget)
        points.append((host.total_frames() / host.steps, host.total_frames() / mpps / 1e6 / host.steps))
    return _fit(*points)


def _copy_floor(frames: int, burst: int) -> float:
    """Mpps of the least any data path does per frame: one gather from a frame pool and one
    scatter into another, of 64-byte frames, in bursts of `burst` (numpy, same process)."""
    import numpy as np

    from npa.nic_model.frames import gather, scatter

    pool, slot = 2048, 2048
    src, dst = np.zeros(pool * slot, np.uint8), np.zeros(pool * slot, np.uint8)
    lens = np.full(burst, 64, np.int64)
    rng = np.random.default_rng(1)
    offsets = [rng.permutation(pool)[:burst].astype(np.int64) * slot for _ in range(8)]
    t0 = time.perf_counter()
    for k in range(frames // burst):
        at = offsets[k % 8]
        scatter(dst, at, gather(src, at, lens))
    return frames // burst * burst / (time.perf_counter() - t0) / 1e6


def _per_poll(host) -> tuple[float, float]:
    """Host calls per poll (interrupt handling included) and frames moved per poll, VM 0."""
    vm = host.vms[0]
    polls = max(vm.shell.stats["polls"], 1)
    moved = vm.shell.stats["tx_frames"] + vm.shell.stats["rx_frames"]
    return sum(vm.box.host.calls.values()) / polls, moved / polls


def _timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


@app.command()
def kernels(
    burst: int = typer.Option(512, min=1, max=2048, help="Entries per call (a pool holds 2048 frames)."),
    calls: int = typer.Option(2000, min=10, max=10**7, help="Calls per measurement."),
    as_json: Optional[str] = _json("npa.bench.kernels/1"),
) -> None:
    """Each compiled kernel of the data path against its own source run as Python, on the same
    burst in the same run: per-call cost and the ratio. Says which kernels run compiled here."""
    import numpy as np

    from npa.nic_model import grants
    from npa.runtime.kernels import interpreted
    from npa.runtime.kernels import kernels as status
    from npa.runtime.shell import claim

    check_dest(as_json)
    frames, size, base = 2048, 2048, 1 << 32
    addr = (base + np.random.default_rng(1).permutation(frames)[:burst] * size).astype(np.uint64)
    lens = np.full(burst, 64, np.int64)
    idx, flags, counts = np.empty(burst, np.int64), np.empty(burst, np.uint8), np.zeros(4, np.int64)

    def claim_call(mod):  # every frame with the plugin, taken: the usual burst
        c = mod.Claim(np.ones(frames, np.int8), np.zeros(frames, np.int64), np.zeros(frames, np.int64),
                      base, size, frames)
        return lambda: c.run(addr, idx, flags, 1, 0, 0, counts)

    def grants_call(mod):  # RX buffers granted for writing, each written once: the usual burst
        g = mod.Grants(np.full(frames, 2, np.int8), np.arange(frames, dtype=np.int64),
                       np.zeros(frames, np.int64), np.zeros(frames, np.int64), base, size, frames)
        return lambda: g.allowed(addr, lens, idx, flags, 2)

    runs, rows = status(), []
    for label, mod, make in (("shell: claim (txc, rx)", claim, claim_call),
                             ("record: grants (every DMA)", grants, grants_call)):
        fast = _per_call(make(mod), calls)
        slow = _per_call(make(interpreted(mod)), max(calls // 50, 10))
        rows.append({"kernel": mod.__name__, "label": label, "runs": runs[mod.__name__],
                     "us_per_call": fast * 1e6, "interpreted_us_per_call": slow * 1e6, "ratio": slow / fast})
    t = Table("kernel", "runs", f"µs per {burst}-entry burst", "as Python (µs)", "ratio",
              title="npa bench kernels (each against its own source run as Python, same run)")
    for r in rows:
        t.add_row(r["label"], r["runs"], f"{r['us_per_call']:.2f}", f"{r['interpreted_us_per_call']:.1f}",
                  f"{r['ratio']:.1f}x")
    _emit(as_json, [t], {"schema": "npa.bench.kernels/1", "burst": burst, "kernels": rows})


@app.command()
def datapath(
    image: Optional[Path] = typer.Option(None, help="Plugin image (default: the bundled one for --nic)."),
    nic: str = typer.Option("ixgbevf", "--nic", help="NIC model: ixgbevf, vmxnet3 or mlx5."),
    packets: int = typer.Option(200_000, min=1000, max=10**9, help="64-byte frames per direction."),
    rss_vms: int = typer.Option(8, min=0, max=64, help="VMs in the peak-RSS measurement (0: skip it)."),
    repeat: int = typer.Option(3, min=1, max=100, help="Runs of the baseline and of npa, interleaved; "
                               "the medians are reported (a shared machine's noise)."),
    as_json: Optional[str] = _json("npa.bench.datapath/1"),
    plot: Optional[Path] = _plot_option(),
) -> None:
    """64-byte frames VM to VM through the plugin vs a baseline in the same run: a pure-Python
    driver of the same NIC (ixgbevf), or the hypervisor's emulated vNIC (the others), the
    median of --repeat interleaved runs of each; then the peak RSS of a host with `rss_vms`
    VMs."""
    import statistics
    import resource
    import subprocess
    import sys

    from .pydriver import PyIxgbeVf

    check_dest(as_json)
    _check_plot(plot)
    image = _image(image, nic)
    data = image.read_bytes()
    label = "pure-Python driver" if nic == "ixgbevf" else "emulated vNIC"
    bases, wasms = [], []
    for k in range(repeat):  # interleaved, so a slow spell of the machine hits both alike
        progress(f"npa bench datapath: run {k + 1} of {repeat}")
        if nic == "ixgbevf":
            bases.append(_mpps(nic, data, packets, lambda vm: PyIxgbeVf(vm.box.host))[0])
        else:
            bases.append(_mpps(nic, data, packets, emulated=True)[0])
        w, host = _mpps(nic, data, packets)
        wasms.append(w)
    base, wasm = statistics.median(bases), statistics.median(wasms)
    floor = _copy_floor(2 * packets, host.vms[0].shell.budget)
    t = Table("measure", "baseline", "npa", "ratio", title=f"npa bench datapath ({nic}, 64-byte "
              "frames, 2 VMs, both ways, one core)", title_justify="left")
    t.add_row(f"end-to-end Mpps (median of {repeat})", f"{base:.3f} {label}", f"{wasm:.3f} wasm plugin",
              f"{wasm / base:.2f}x")
    t.add_row("copy floor Mpps (gather + scatter only)", f"{floor:.3f} numpy", f"{wasm:.3f} npa",
              f"npa at {wasm / floor:.1%} of it")
    fixed_us, frame_ns = _step_costs(nic, data)
    t.add_row("cost of a host step (fit over poll budgets 32, 512)", "-",
              f"{_shown(fixed_us, 'µs')} + {_shown(frame_ns, 'ns')} per frame", "")
    calls, frames = _per_poll(host)
    t.add_row("host calls per poll (interrupts incl.)", "-", f"{calls:.2f} ({frames:.0f} frames "
              "per poll)", "")
    doc = {"schema": "npa.bench.datapath/1", "nic": nic, "image": str(image), "packets": packets,
           "baseline": label, "baseline_mpps": base, "mpps": wasm, "ratio": wasm / base,
           "baseline_runs_mpps": bases, "runs_mpps": wasms,
           "copy_floor_mpps": floor, "share_of_floor": wasm / floor,
           "step_fixed_us": fixed_us, "step_per_frame_ns": frame_ns,
           "host_calls_per_poll": calls, "frames_per_poll": frames, "rss_vms": rss_vms, "rss_mib": None}
    if rss_vms:
        cmd = [sys.executable, "-m", "npa.cli.main", "run", "--vms", str(rss_vms), "--packets", "20000",
               "--size", "64", "--nic", nic, "-q", str(image)]
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent.parent)
        if proc.returncode:
            fail(f"the {rss_vms}-VM run failed: {proc.stderr.strip().splitlines()[-1:]}", VERDICT)
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        t.add_row(f"peak RSS, {rss_vms} VMs (MiB)", "target < 400", f"{rss:.0f}",
                  f"{rss / 400:.2f} of target")
        doc["rss_mib"] = rss
    _emit(as_json, [t], doc, plot, (f"npa bench datapath ({nic}, 64-byte frames)", [label, "wasm plugin"],
                                    [base, wasm], "Mpps end to end", None))


@app.command()
def nics(
    packets: int = typer.Option(200_000, min=1000, max=10**9, help="64-byte frames per direction."),
    plugins: Path = typer.Option(DEFAULT_IMAGE.parent, "--plugins", help="Plugin repository."),
    as_json: Optional[str] = _json("npa.bench.nics/1"),
    plot: Optional[Path] = _plot_option(),
) -> None:
    """End-to-end Mpps of every NIC model, each with the plugin the repository holds for it:
    64-byte frames, 2 VMs, both ways, one core, the same run; ratios to the fastest."""
    from npa.nic_model.sriov import MODELS
    from npa.runtime.hypervisor import image_for

    check_dest(as_json)
    _check_plot(plot)
    rows = []
    for name, model in MODELS.items():
        progress(f"npa bench nics: {name}")
        path = image_for(plugins, model)
        mpps, host = _mpps(name, path.read_bytes(), packets)
        rows.append((name, model, path, mpps, *_per_poll(host), host.vms[0].shell.stats["interrupts"]))
    best = max(r[3] for r in rows)
    t = Table("NIC", "ring design", "plugin", "Mpps", "vs fastest", "host calls/poll",
              "frames/poll", "interrupts", title=f"npa bench nics (64-byte frames, 2 VMs, both "
              f"ways, {packets:,} per direction)", title_justify="left")
    for name, model, path, mpps, calls, frames, intr in rows:
        t.add_row(name, model.DESCRIPTION, path.name, f"{mpps:.3f}", f"{mpps / best:.2f}x",
                  f"{calls:.2f}", f"{frames:.0f}", str(intr))
    _emit(as_json, [t], {"schema": "npa.bench.nics/1", "packets": packets, "nics": [
        {"nic": name, "image": str(path), "mpps": mpps, "vs_fastest": mpps / best,
         "host_calls_per_poll": calls, "frames_per_poll": frames, "interrupts": intr}
        for name, _, path, mpps, calls, frames, intr in rows]}, plot,
        ("npa bench nics (64-byte frames)", [r[0] for r in rows], [r[3] for r in rows], "Mpps", None))


@app.command()
def switch(
    image: Optional[Path] = typer.Option(None, help="Plugin image (default: the bundled one for --nic)."),
    nic: str = typer.Option("ixgbevf", "--nic", help="NIC model: ixgbevf, vmxnet3 or mlx5."),
    rounds: int = typer.Option(50, min=1, max=100_000, help="Revoke/offer round trips to time."),
    packets: int = typer.Option(200_000, min=1000, max=10**9, help="64-byte frames per direction for Mpps."),
    as_json: Optional[str] = _json("npa.bench.switch/1"),
) -> None:
    """Switch-over time under load (VF revoke -> first frame on the emulated path, VF offer ->
    first frame through the plugin), and the emulated path's Mpps next to the plugin's."""
    import statistics

    from npa.nic_model.sriov import SriovNic
    from npa.runtime.guest import size_schedule
    from npa.runtime.host import Host

    check_dest(as_json)
    image = _image(image, nic)
    data = image.read_bytes()
    host = Host(SriovNic(nic, 2), data, 2, packets=10**9, sizes=size_schedule(64))
    host.boot()
    vm = host.vms[0]
    emu = host.hv.ports[vm.index].emulated
    times = {"revoke": [], "offer": []}
    calls = {"revoke": [], "offer": []}
    steps = {"revoke": [], "offer": []}

    def first_frame(kind: str, moved) -> None:
        t0, s0, before = time.perf_counter(), host.steps, moved()
        host.revoke(0) if kind == "revoke" else host.offer(0)
        calls[kind].append(time.perf_counter() - t0)
        while moved() == before:
            host.step()
        times[kind].append(time.perf_counter() - t0)
        steps[kind].append(host.steps - s0)

    for _ in range(20):  # load: both directions running
        host.step()
    progress(f"npa bench switch: {rounds} revoke/offer rounds")
    for _ in range(rounds):
        first_frame("revoke", lambda: emu.stats["tx_frames"] + emu.stats["rx_frames"])
        for _ in range(5):
            host.step()
        first_frame("offer", lambda: vm.vf.stats.tx_frames + vm.vf.stats.rx_frames)
        for _ in range(5):
            host.step()
    host.finish()
    if not host.conserved() or any(vm.sink.check[f].duplicates or vm.sink.check[f].reordered
                                   for vm in host.vms for f in vm.sink.check):
        fail("the switch-over benchmark lost its frames' order or conservation", VERDICT)

    def mpps(emulated: bool) -> float:
        h = Host(SriovNic(nic, 2), data, 2, packets=packets, sizes=size_schedule(64))
        h.boot()
        if emulated:
            h.revoke(0), h.revoke(1)
        t0 = time.perf_counter()
        h.run()
        dt = time.perf_counter() - t0
        if not h.clean():
            fail(f"the {'emulated' if emulated else 'plugin'} run was not clean", VERDICT)
        return h.total_frames() / dt / 1e6

    plugin, emulated = mpps(False), mpps(True)
    t = Table("measure", "median (ms)", "p95 (ms)", "of which the switch call (ms)",
              "device time (10 µs steps)", title=f"npa bench switch ({nic}, {rounds} round trips "
              "under 64-byte load, both ways)", title_justify="left")
    for kind, label in (("revoke", "VF revoke -> first frame emulated"),
                        ("offer", "VF offer -> first frame via plugin")):
        ts = sorted(times[kind])
        t.add_row(label, f"{statistics.median(ts) * 1e3:.2f}", f"{ts[int(0.95 * (len(ts) - 1))] * 1e3:.2f}",
                  f"{statistics.median(calls[kind]) * 1e3:.2f}",
                  f"median {statistics.median(steps[kind]):.0f}, max {max(steps[kind])}")
    m = Table("data path", "Mpps", "ratio", title="emulated vs plugin, same run", title_justify="left")
    m.add_row("plugin (wasm, VF)", f"{plugin:.3f}", "1.00x")
    m.add_row("emulated (hypervisor, PF)", f"{emulated:.3f}", f"{emulated / plugin:.2f}x")

    def figures(kind: str) -> dict:
        ts = sorted(times[kind])
        return {"median_ms": statistics.median(ts) * 1e3, "p95_ms": ts[int(0.95 * (len(ts) - 1))] * 1e3,
                "call_median_ms": statistics.median(calls[kind]) * 1e3,
                "steps_median": statistics.median(steps[kind]), "steps_max": max(steps[kind])}
    _emit(as_json, [t, m], {"schema": "npa.bench.switch/1", "nic": nic, "image": str(image),
                            "rounds": rounds, "revoke": figures("revoke"), "offer": figures("offer"),
                            "plugin_mpps": plugin, "emulated_mpps": emulated})


@app.command()
def noisy(
    vms: int = typer.Option(4, min=4, max=16, help="VMs, an even count: vm0 runs the greedy "
                            "plugin and talks to vm1; the pairs after them are its neighbours."),
    packets: int = typer.Option(100_000, min=1000, max=10**9, help="Frames per direction per pair."),
    mmio: int = typer.Option(0, min=0, max=10**6, help="mmio_read32 calls the greedy plugin makes per "
                             "poll besides (wall time, little fuel: about 1 µs each)."),
    spin: int = typer.Option(1_500_000, min=1, max=10**9, help="Loop rounds the greedy plugin burns per poll "
                             "(about 11 instructions each)."),
    src: Path = typer.Option(bundled("plugins-src"), help="Where the "
                             "ixgbevf source lives (the greedy plugin is built from it)."),
    as_json: Optional[str] = _json("npa.bench.noisy/1"),
    plot: Optional[Path] = _plot_option(),
) -> None:
    """One greedy plugin beside well-behaved VMs: their throughput with fair shares of the
    host, and without, against a run with no greedy VM, all in the same process."""
    from npa.runtime.hypervisor import Policy
    from npa.runtime.sandbox import analyse

    from .noisy import greedy_image

    if vms % 2:
        fail(f"--vms {vms}: give an even count (an odd last VM would pair with the greedy vm0, "
             "and the neighbours' figures would mix with its own)")
    check_dest(as_json)
    _check_plot(plot)
    good = (DEFAULT_IMAGE.parent / "ixgbevf.wasm").read_bytes()
    greedy = analyse(greedy_image(src, spin, mmio))
    # fair shares off: the greedy VM is never held back (its calls still end at their deadline)
    unfair = Policy({"fuel_per_step": 10**12, "wall_us_per_step": 1_000_000, "fair_strikes": 1000})
    runs = [("no greedy VM", None, None), ("greedy vm0, fair shares", greedy, None),
            ("greedy vm0, no fair shares", greedy, unfair)]
    rows = []
    for label, image, policy in runs:
        progress(f"npa bench noisy: {label}")
        rows.append((label, *_neighbours(good, vms, packets, image, policy)))
    base = rows[0][1]
    t = Table("run", "neighbours' Mpps", "vs no greedy VM", "longest step (ms)", "vm0's data path",
              title=f"npa bench noisy ({vms} VMs, 64-byte frames, vm0 burns {spin:,} loop rounds "
              f"and {mmio:,} register reads per poll)", title_justify="left")
    for label, mpps, longest, mode in rows:
        t.add_row(label, f"{mpps:.3f}", f"{mpps / base:.0%}", f"{longest * 1e3:.1f}", mode)
    _emit(as_json, [t], {"schema": "npa.bench.noisy/1", "vms": vms, "spin": spin, "mmio": mmio, "runs": [
        {"run": label, "neighbours_mpps": mpps, "vs_no_greedy": mpps / base,
         "longest_step_ms": longest * 1e3, "vm0": mode}
        for label, mpps, longest, mode in rows]}, plot,
        ("npa bench noisy: neighbours' throughput", [r[0] for r in rows], [r[1] for r in rows],
         "Mpps", base))


def _neighbours(good: bytes, vms: int, packets: int, image, policy) -> tuple[float, float, str]:
    """Mpps of the VMs other than vm0 and its peer vm1, the longest host step (s), and how vm0
    ended (its last mode)."""
    from npa.nic_model.sriov import SriovNic
    from npa.runtime.guest import size_schedule
    from npa.runtime.host import Host

    host = Host(SriovNic("ixgbevf", vms), good, vms, packets=packets, sizes=size_schedule(64),
                policy=policy)
    host.boot()
    if image is not None:
        host.revoke(0)
        host.offer(0, image)
    flows = [f for f in host.flows if f.src not in (host.vms[0].mac, host.vms[1].mac)
             and f.dst not in (host.vms[0].mac, host.vms[1].mac)]
    t0 = time.perf_counter()
    longest = 0.0
    while any(host.received(f) < f.count for f in flows):
        s0 = time.perf_counter()
        host.step()
        longest = max(longest, time.perf_counter() - s0)
    dt = time.perf_counter() - t0
    host.finish()
    last = host.hv.modes(host.vms[0])[-1]
    return sum(f.count for f in flows) / dt / 1e6, longest, f"{last.mode} ({last.reason[:60]})"


@app.command()
def migrate(
    runs: int = typer.Option(3, min=1, max=100, help="Migrations per NIC pair (each at another point of "
                             "the traffic)."),
    packets: int = typer.Option(300_000, min=20_000, max=10**9, help="imix frames per direction per run."),
    plugins: Path = typer.Option(DEFAULT_IMAGE.parent, "--plugins", help="Plugin repository."),
    as_json: Optional[str] = _json("npa.bench.migrate/1"),
    plot: Optional[Path] = _plot_option(),
) -> None:
    """Live migration of vm0 between every ordered pair of NIC models, in process, under imix
    traffic both ways: downtime (device time) median and p99 next to its floor in the same run
    (the stop-and-copy pages at the stream's pace), bytes, and the wall time of the pause."""
    import statistics

    import numpy as np

    from npa.nic_model.sriov import MODELS
    from npa.runtime.guest import size_schedule
    from npa.runtime.host import Fabric, Host
    from npa.runtime.hypervisor import image_for

    check_dest(as_json)
    _check_plot(plot)
    rows = []
    for src in MODELS:
        for dst in MODELS:
            got = []
            for k in range(runs):
                f = Fabric.build(image_for(plugins, MODELS[src]).read_bytes(), src, dst,
                                 image_for(plugins, MODELS[dst]).read_bytes(), vms=2, vfs=4,
                                 repository=plugins, packets=packets, sizes=size_schedule("imix"))
                f.boot()
                f.run(on_step=f.migrate_when("vm0", int(2 * packets * (0.05 + 0.2 * k / max(runs - 1, 1)))))
                (r,) = f.report()
                if r["outcome"] != "moved" or not f.clean():
                    fail(f"{src} -> {dst}: run {k}: {r['outcome']}: {r['reason']}"
                                   + ("" if f.clean() else "; the run was not clean"), VERDICT)
                if r["downtime_s"] is None:
                    fail(f"{src} -> {dst}: run {k}: the traffic ended before vm0 resumed; "
                                   "give more --packets", VERDICT)
                stop = sum(x["pages"] for x in r["rounds"] if x.get("stop_and_copy"))
                names = [p[0] for p in r["phases"]]
                wall = r["wall"][names.index("forwarding")] - r["wall"][names.index("paused")]
                got.append({"downtime_us": r["downtime_s"] * 1e6,
                            "floor_us": (stop / Host.PAGES_PER_STEP) * f.hosts[0].nic.tick_us,
                            "rounds": len(r["rounds"]), "bytes": sum(x["bytes"] for x in r["rounds"]),
                            "pause_wall_ms": wall * 1e3, "forwarded": r.get("forwarded", 0)})
                f.close()
            d = [g["downtime_us"] for g in got]
            rows.append({"from": src, "to": dst, "runs": runs,
                         "downtime_median_us": statistics.median(d),
                         "downtime_p99_us": float(np.percentile(d, 99)),
                         "floor_median_us": statistics.median(g["floor_us"] for g in got),
                         "bytes_median": statistics.median(g["bytes"] for g in got),
                         "rounds_median": statistics.median(g["rounds"] for g in got),
                         "pause_wall_ms_median": statistics.median(g["pause_wall_ms"] for g in got),
                         "clean": True})
            floor = rows[-1]["floor_median_us"]  # 0: no page was left for the stop-and-copy
            rows[-1]["floor_x"] = rows[-1]["downtime_median_us"] / floor if floor > 0 else None
            progress(f"npa bench migrate: {src} -> {dst}: {runs} runs done")
    t = Table("from", "to", "downtime median (µs)", "p99 (µs)", "x its floor", "rounds", "bytes",
              "pause wall (ms)", title=f"npa bench migrate: {runs} runs per pair, device time; "
              "floor = stop-and-copy pages at the stream's pace", title_justify="left")
    for r in rows:
        t.add_row(r["from"], r["to"], f"{r['downtime_median_us']:.0f}", f"{r['downtime_p99_us']:.0f}",
                  "no floor" if r["floor_x"] is None else f"{r['floor_x']:.2f}x",
                  f"{r['rounds_median']:.0f}", f"{r['bytes_median']:,.0f}", f"{r['pause_wall_ms_median']:.1f}")
    _emit(as_json, [t], {"schema": "npa.bench.migrate/1", "runs": runs, "packets": packets, "pairs": rows},
          plot, ("npa bench migrate: downtime median (device time)", [f"{r['from']}->{r['to']}" for r in rows],
                 [r["downtime_median_us"] for r in rows], "µs", None))


@app.command()
def scale(
    vms: str = typer.Option("2,8,32,64", "--vms", help="VM counts, comma-separated."),
    frames: int = typer.Option(200_000, min=10_000, max=10**9, help="64-byte frames in all, at every count."),
    image: Optional[Path] = typer.Option(None, help="Plugin image (default: the bundled ixgbevf)."),
    repeat: int = typer.Option(1, min=1, max=100, help="Rounds over all counts; each count's median is "
                               "reported (rounds interleave counts, so a slow spell hits all)."),
    as_json: Optional[str] = _json("npa.bench.scale/1"),
    plot: Optional[Path] = _plot_option(),
) -> None:
    """Per-frame cost and peak RSS of a host at several VM counts, the same frames in all, each
    count in a child process of this run; ratios to the smallest count."""
    import json
    import statistics
    import subprocess

    check_dest(as_json)
    _check_plot(plot)
    try:
        counts = [int(v) for v in vms.split(",")]
    except ValueError:
        raise typer.BadParameter(f"{vms!r}: give VM counts such as 2,8,32,64", param_hint="--vms") from None
    if any(not 2 <= n <= 64 for n in counts):
        raise typer.BadParameter("each count is 2 to 64", param_hint="--vms")
    image = _image(image, "ixgbevf")
    runs: dict[int, list[dict]] = {n: [] for n in counts}
    for r in range(repeat):
        for n in counts:
            progress(f"npa bench scale: round {r + 1} of {repeat}, {n} VMs")
            child = (f"from npa.cli.bench import _scale_child; _scale_child({n}, {max(frames // n, 1)}, {str(image)!r})")
            proc = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True,
                                  cwd=Path(__file__).resolve().parent.parent)
            if proc.returncode:
                fail(f"the {n}-VM run failed: {proc.stderr.strip().splitlines()[-1:]}", VERDICT)
            runs[n].append(json.loads(proc.stdout))
            print(f"npa bench scale: {n} VMs: {runs[n][-1]['us_per_frame']:.2f} µs per frame", file=sys.stderr)
    rows = []
    for n in counts:  # the median run of each count (by its cost per frame), all runs kept
        ordered = sorted(runs[n], key=lambda r: r["us_per_frame"])
        mid = statistics.median_low([r["us_per_frame"] for r in ordered])
        row = next(r for r in ordered if r["us_per_frame"] == mid)
        rows.append({**row, "runs_us_per_frame": [r["us_per_frame"] for r in runs[n]]})
    base = rows[0]["us_per_frame"]
    t = Table("VMs", "frames", "µs per frame", f"vs {counts[0]} VMs", "Mpps", "peak RSS (MiB)",
              title=f"npa bench scale (64-byte frames, pairs both ways, {frames:,} frames per count"
              + (f", median of {repeat} rounds)" if repeat > 1 else ")"),
              title_justify="left")
    for r in rows:
        t.add_row(str(r["vms"]), f"{r['frames']:,}", f"{r['us_per_frame']:.2f}",
                  f"{r['us_per_frame'] / base:.2f}x", f"{r['mpps']:.3f}", f"{r['rss_mib']:.0f}")
    _emit(as_json, [t], {"schema": "npa.bench.scale/1", "image": str(image), "counts": rows}, plot,
          ("npa bench scale: per-frame cost", [str(r["vms"]) for r in rows],
           [r["us_per_frame"] for r in rows], "µs per frame", base))


def _scale_child(vms: int, packets: int, image: str) -> None:
    """One count of `bench scale`, in its own process (its peak RSS is its own): prints JSON."""
    import json
    import resource

    from npa.nic_model.sriov import SriovNic
    from npa.runtime.guest import size_schedule
    from npa.runtime.host import Host

    host = Host(SriovNic("ixgbevf", vms), Path(image).read_bytes(), vms, packets=packets,
                sizes=size_schedule(64))
    host.boot()
    t0 = time.perf_counter()
    host.run()
    dt = time.perf_counter() - t0
    if not host.clean():
        raise SystemExit(f"the {vms}-VM run was not clean")
    n = host.total_frames()
    print(json.dumps({"vms": vms, "frames": n, "seconds": dt, "us_per_frame": dt / n * 1e6,
                      "mpps": n / dt / 1e6,
                      "rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


LAYERS = (("guest: build frames", "gen", "next_burst"), ("shell: transmit", "shell", "transmit"),
          ("shell: poll (plugin included)", "shell", "poll"), ("shell: interrupts", "shell", "interrupt"),
          ("NIC: TX engine and switch", "vf", "tx"), ("NIC: RX engine", "vf", "rx"),
          ("guest: check frames", "sink", "receive"))


@app.command()
def steps(
    nic: str = typer.Option("ixgbevf", "--nic", help="NIC model: ixgbevf, vmxnet3 or mlx5."),
    packets: int = typer.Option(20_000, min=1000, max=10**9, help="Frames per direction per run."),
    size: str = typer.Option("64", "--size", help="Frame size: bytes, imix or mixed."),
    repeat: int = typer.Option(5, min=1, max=100, help="Runs per budget; each layer's median is kept."),
    as_json: Optional[str] = _json("npa.bench.steps/1"),
    plot: Optional[Path] = _plot_option(),
) -> None:
    """Where a host step goes, layer by layer: each layer's time per step at poll budgets of 32
    and 512 frames (2 VMs, 64-byte frames unless --size, both ways; the median of --repeat
    runs), fitted as a fixed cost per step plus a cost per frame. The fixed part is what short
    bursts pay."""
    from collections import defaultdict

    import numpy as np

    from npa.nic_model.sriov import SriovNic
    from npa.runtime.host import Host

    check_dest(as_json)
    _check_plot(plot)
    sizes = _sizes(size)
    data = _image(None, nic).read_bytes()
    runs = []
    for budget in (32, 512):
        samples = []
        for k in range(repeat):
            progress(f"npa bench steps: poll budget {budget}, run {k + 1} of {repeat}")
            host = Host(SriovNic(nic, 2), data, 2, packets=packets, sizes=sizes, budget=budget)
            host.boot()
            spent: dict[str, float] = defaultdict(float)
            for vm in host.vms:
                for label, owner, method in LAYERS:
                    obj = vm.vf if owner == "vf" else getattr(vm, owner)
                    setattr(obj, method, _timer(spent, label, getattr(obj, method)))
            t0 = time.perf_counter()
            host.run()
            total = time.perf_counter() - t0
            spent["the rest (loop, hypervisor, uplink)"] = total - sum(spent.values())
            samples.append((host.total_frames() / host.steps, {k: v / host.steps for k, v in spent.items()}))
        runs.append((float(np.median([f for f, _ in samples])),
                     {k: float(np.median([s[k] for _, s in samples])) for k in samples[0][1]}))
    (f1, a), (f2, b) = runs
    t = Table("layer", "µs/step at 32", "µs/step at 512", "fixed µs/step", "ns/frame",
              title=f"npa bench steps ({nic}, 2 VMs, {_size_label(size)}; poll budgets 32 and 512: "
              f"{f1:.0f} and {f2:.0f} frames per step)", title_justify="left")
    rows = []
    for label in [lab for lab, _, _ in LAYERS] + ["the rest (loop, hypervisor, uplink)"]:
        fixed_us, frame_ns = _fit((f1, a[label]), (f2, b[label]))
        rows.append({"layer": label, "us_per_step": [a[label] * 1e6, b[label] * 1e6],
                     "fixed_us": fixed_us, "ns_per_frame": frame_ns})
        t.add_row(label, f"{a[label] * 1e6:.0f}", f"{b[label] * 1e6:.0f}",
                  _shown(fixed_us, ""), _shown(frame_ns, ""))
    fixed_all, frame_all = _fit((f1, sum(a.values())), (f2, sum(b.values())))
    t.add_row("all", f"{sum(a.values()) * 1e6:.0f}", f"{sum(b.values()) * 1e6:.0f}",
              _shown(fixed_all, ""), _shown(frame_all, ""))
    _emit(as_json, [t], {"schema": "npa.bench.steps/1", "nic": nic, "size": size, "frames_per_step": [f1, f2],
                         "layers": rows, "fixed_us": fixed_all, "ns_per_frame": frame_all}, plot,
          (f"npa bench steps ({nic}, {_size_label(size)}): fixed cost per step",
           [r["layer"] for r in rows], [r["fixed_us"] or 0 for r in rows], "µs per step (fit)", None))


def _sizes(spec: str) -> np.ndarray:
    """The frame size schedule of a --size option, or a usage error."""
    from npa.runtime.guest import size_schedule

    try:
        return size_schedule(spec)
    except ValueError as e:
        fail(f"--size: {e}", 2)


def _size_label(spec: str) -> str:
    return f"{spec}-byte frames" if spec.isdigit() else f"{spec} frames"


def _timer(spent: dict, label: str, fn):
    """`fn`, adding its wall time to spent[label]."""
    def timed(*args, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kw)
        finally:
            spent[label] += time.perf_counter() - t0
    return timed
