"""Vendor independence: three NIC designs behind one Shell API, plugin selection by PCI ids,
C and Zig plugins, and `npa new` scaffolds that build and load at once."""
import shutil

import pytest

from npa.cli import toolchain
from helpers import ROOT, npa
from npa.nic_model.sriov import MODELS, SriovNic
from npa.nic_model.vf import pci_id
from npa.runtime.guest import size_schedule
from npa.runtime.host import Host
from npa.runtime.hypervisor import Repository, image_for
from npa.runtime.sandbox import LoadError, NpaError, Sandbox, analyse
from npa.shell_api import Status

WASM = ROOT / "plugins-wasm"


@pytest.mark.parametrize("model", MODELS)
def test_repository_picks_the_plugin_whose_manifest_lists_the_vf(model):
    path = image_for(WASM, MODELS[model])
    assert path.name == f"{model}.wasm"
    assert pci_id(MODELS[model]) in {str(d) for d in analyse(path.read_bytes()).manifest.devices}


def test_repository_names_the_images_when_none_or_two_match(tmp_path):
    shutil.copy(WASM / "ixgbevf.wasm", tmp_path / "a.wasm")
    (tmp_path / "junk.wasm").write_bytes(b"not wasm")
    repo = Repository(tmp_path)
    assert list(repo.unreadable) == [tmp_path / "junk.wasm"]
    with pytest.raises(NpaError, match=r"no plugin in .* drives 15b3:1018 \(mlx5\); it holds a.wasm \(8086:10ed\)"):
        repo.select("15b3:1018", "mlx5")
    shutil.copy(WASM / "ixgbevf.wasm", tmp_path / "b.wasm")
    with pytest.raises(NpaError, match="2 plugins in .* drive 8086:10ed: a.wasm, b.wasm"):
        Repository(tmp_path).select("8086:10ed")


@pytest.mark.parametrize("image", ["ixgbevf", "vmxnet3", "mlx5"])
def test_each_plugin_refuses_to_load_on_a_nic_it_does_not_list(image):
    data = (WASM / f"{image}.wasm").read_bytes()
    for model in MODELS:
        host = Host(SriovNic(model, 2), data, 2, packets=10, sizes=size_schedule(60))
        if model == image:
            host.boot()
            assert all(vm.shell.active for vm in host.vms)
            continue
        with pytest.raises(LoadError, match=f"drives {pci_id(MODELS[image])}, not this NIC's VFs") as e:
            host.boot()
        assert e.value.check == "device" and not any(vm.shell.active for vm in host.vms)


@pytest.mark.parametrize("model", MODELS)
def test_npa_run_drives_every_nic_with_the_plugin_the_repository_holds(model):
    r = npa("run", "--nic", model, "--packets", "3000", "--size", "mixed", "-q")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "clean: 6000 frames delivered" in r.stdout


def test_npa_run_with_no_plugin_for_the_nic_is_one_line(tmp_path):
    r = npa("run", "--nic", "mlx5", "--plugins", str(tmp_path), "-q")
    assert r.returncode == 2
    assert r.stderr.strip() == f"npa: error: no plugin in {tmp_path} drives 15b3:1018 (mlx5); it holds no image"


@pytest.mark.parametrize("lang, nic", [("c", "ixgbevf"), ("zig", "mlx5")])
def test_scaffolded_plugin_builds_and_loads_at_once(tmp_path, lang, nic):
    r = npa("new", "acme", "--lang", lang, "--nic", nic, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    src = tmp_path / "plugins-src" / "acme"
    assert sorted(p.name for p in src.iterdir()) == ["ABI.md", "README.md", f"acme.{lang}", "plugin.toml"]
    assert (src / "ABI.md").read_text() == (ROOT / "shell_api" / "ABI.md").read_text()
    r = npa("build", "acme", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    report = analyse((tmp_path / "plugins-wasm" / "acme.wasm").read_bytes())
    assert report.ok and [str(d) for d in report.manifest.devices] == [pci_id(MODELS[nic])]
    box = Sandbox()
    plugin = box.load(report)
    from npa.runtime.shell import datapath
    cfg = datapath.setup(box, report.manifest).cfg_addr
    assert plugin.npa_init(cfg) == Status.NOT_IMPLEMENTED
    assert plugin.npa_poll(0, 64) == -Status.NOT_IMPLEMENTED
    assert plugin.npa_quiesce() == plugin.npa_reset() == Status.NOT_IMPLEMENTED


def test_npa_new_refuses_bad_names_languages_and_existing_plugins(tmp_path):
    assert npa("new", "acme", cwd=tmp_path).returncode == 0
    for args, msg in ((["acme"], "already exists"), (["Acme"], "a plugin name is"),
                      (["other", "--lang", "rust"], "--lang rust: use c or zig"),
                      (["other", "--nic", "e1000"], "--nic e1000: unknown NIC model")):
        r = npa("new", *args, cwd=tmp_path)
        assert r.returncode == 2 and msg in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_zig_plugin_builds_identically_from_different_places(tmp_path):
    a, b = tmp_path / "a" / "mlx5", tmp_path / "deeper" / "b" / "mlx5"
    shutil.copytree(ROOT / "plugins-src" / "mlx5", a)
    shutil.copytree(ROOT / "plugins-src" / "mlx5", b)
    first = toolchain.build(a, tmp_path / "out1").path.read_bytes()
    assert first == toolchain.build(b, tmp_path / "out2").path.read_bytes()
    assert first == (WASM / "mlx5.wasm").read_bytes()


def test_zig_compile_errors_reach_the_user(tmp_path):
    d = tmp_path / "plugins-src" / "broken"
    d.mkdir(parents=True)
    (d / "plugin.toml").write_text('name = "broken"\nversion = "1.0.0"\nabi = "1.0"\ndevices = ["abcd:0001"]\n')
    (d / "broken.zig").write_text("export fn npa_init(cfg: u32) i32 { return undefined_name; }\n")
    r = npa("build", "broken", cwd=tmp_path)
    assert r.returncode == 1
    assert "undefined_name" in r.stderr and "zig compilation failed" in r.stderr
