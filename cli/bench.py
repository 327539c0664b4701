"""`npa bench`: speed figures, each next to a baseline measured in the same run."""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import typer
from rich.table import Table

from runtime.errors import NpaError

from .run import out

app = typer.Typer(help="Benchmarks (ratios against a same-run baseline).", no_args_is_help=True)
DEFAULT_IMAGE = Path(__file__).resolve().parent.parent / "plugins-wasm" / "nullvf.wasm"


def _per_call(fn, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


@app.command()
def calls(
    image: Path = typer.Option(DEFAULT_IMAGE, help="Plugin image to call into."),
    n: int = typer.Option(50_000, "--calls", min=100, help="Calls per path."),
    loads: int = typer.Option(5, min=1, help="Loads per cold/warm measurement."),
) -> None:
    """Per-call cost of the fast export path vs wasmtime-py's generic call; cold vs warm load."""
    from nic_model.null import NullVf
    from runtime import datapath
    from runtime.loader import analyse
    from runtime.sandbox import Sandbox

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
        from shell_api import Status
        raise NpaError(f"{image}: npa_init returned {Status.describe(status)}")
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
    out.print(t)


def _mpps(model: str, image: bytes, packets: int, driver=None):
    """End-to-end Mpps of 64-byte frames, 2 VMs on `model`, both ways: (Mpps, the host)."""
    from nic_model.sriov import SriovNic
    from runtime.guest import size_schedule
    from runtime.host import Host

    host = Host(SriovNic(model, 2), image, 2, packets=packets, sizes=size_schedule(64))
    host.boot(driver)
    t0 = time.perf_counter()
    host.run()
    dt = time.perf_counter() - t0
    if not host.clean():
        raise NpaError(f"the benchmark run on {model} was not clean "
                       f"({'plugin' if driver is None else 'python driver'})")
    return host.total_frames() / dt / 1e6, host


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
def datapath(
    image: Path = typer.Option(DEFAULT_IMAGE.parent / "ixgbevf.wasm", help="Plugin image."),
    packets: int = typer.Option(200_000, min=1000, help="64-byte frames per direction."),
    rss_vms: int = typer.Option(8, help="VMs in the peak-RSS measurement (0: skip it)."),
) -> None:
    """64-byte frames VM to VM through the plugin vs a pure-Python driver of the same NIC,
    same host, same run; then the peak RSS of a host with `rss_vms` VMs."""
    import resource
    import subprocess
    import sys

    from .pydriver import PyIxgbeVf

    data = image.read_bytes()
    py, _ = _mpps("ixgbevf", data, packets, lambda vm: PyIxgbeVf(vm.box.host))
    wasm, host = _mpps("ixgbevf", data, packets)
    t = Table("measure", "baseline", "npa", "ratio", title="npa bench datapath (64-byte frames, "
              "2 VMs, both ways, one core)", title_justify="left")
    t.add_row("end-to-end Mpps", f"{py:.3f} pure-Python driver", f"{wasm:.3f} wasm plugin",
              f"{wasm / py:.2f}x")
    calls, frames = _per_poll(host)
    t.add_row("host calls per poll (interrupts incl.)", "-", f"{calls:.2f} ({frames:.0f} frames "
              "per poll)", "")
    if rss_vms:
        cmd = [sys.executable, "-m", "cli.main", "run", "--vms", str(rss_vms), "--packets", "20000",
               "--size", "64", "-q", str(image)]
        proc = subprocess.run(cmd, capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parent.parent)
        if proc.returncode:
            raise NpaError(f"the {rss_vms}-VM run failed: {proc.stderr.strip().splitlines()[-1:]}")
        rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        t.add_row(f"peak RSS, {rss_vms} VMs (MiB)", "target < 400", f"{rss:.0f}",
                  f"{rss / 400:.2f} of target")
    out.print(t)


@app.command()
def nics(
    packets: int = typer.Option(200_000, min=1000, help="64-byte frames per direction."),
    plugins: Path = typer.Option(DEFAULT_IMAGE.parent, "--plugins", help="Plugin repository."),
) -> None:
    """End-to-end Mpps of every NIC model, each with the plugin the repository holds for it:
    64-byte frames, 2 VMs, both ways, one core, the same run; ratios to the fastest."""
    from nic_model.sriov import MODELS
    from runtime.repository import image_for

    rows = []
    for name, model in MODELS.items():
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
    out.print(t)
