"""`npa build`: reproducible images, compiler diagnostics, manifest errors."""
import json
import shutil

import pytest

from npa.cli import toolchain
from helpers import ROOT, npa


def test_checked_in_images_equal_a_fresh_build(tmp_path):
    for src in toolchain.plugin_dirs(ROOT / "plugins-src"):
        built = toolchain.build(src, tmp_path)
        checked_in = ROOT / "plugins-wasm" / built.path.name
        assert built.path.read_bytes() == checked_in.read_bytes(), f"rebuild {checked_in}: npa build"


def test_building_twice_from_different_places_gives_identical_bytes(tmp_path):
    a, b = tmp_path / "a" / "nullvf", tmp_path / "deeper" / "b" / "nullvf"
    shutil.copytree(ROOT / "plugins-src" / "nullvf", a)
    shutil.copytree(ROOT / "plugins-src" / "nullvf", b)
    first = toolchain.build(a, tmp_path / "out1").path.read_bytes()
    second = toolchain.build(b, tmp_path / "out2").path.read_bytes()
    assert first == second


def _vendor_tree(tmp_path, source: str, toml: str | None = None):
    d = tmp_path / "plugins-src" / "acme"
    d.mkdir(parents=True)
    (d / "plugin.toml").write_text(toml or 'name = "acme"\nversion = "1.0.0"\nabi = "1.0"\ndevices = ["abcd:0001"]\n')
    (d / "acme.c").write_text(source)
    return d


GOOD_C = (ROOT / "plugins-src" / "nullvf" / "nullvf.c").read_text()


def test_build_in_a_vendor_tree_writes_plugins_wasm_there(tmp_path):
    _vendor_tree(tmp_path, GOOD_C)
    r = npa("build", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "plugins-wasm" / "acme.wasm").is_file()
    r = npa("inspect", "plugins-wasm/acme.wasm", cwd=tmp_path)
    assert r.returncode == 0 and "abcd:0001" in r.stdout


def test_compile_error_shows_the_compilers_diagnostics_and_exits_1(tmp_path):
    _vendor_tree(tmp_path, GOOD_C.replace("return NPA_OK;\n}", "return NPA_OK\n}", 1))
    r = npa("build", "acme", cwd=tmp_path)
    assert r.returncode == 1
    assert "acme.c:" in r.stderr and "error:" in r.stderr  # clang's own diagnostic
    assert r.stderr.strip().splitlines()[-1] == "npa: error: plugins-src/acme: compilation failed"
    assert "Traceback" not in r.stderr


def test_bad_manifest_names_the_field(tmp_path):
    _vendor_tree(tmp_path, GOOD_C, 'name = "acme"\nversion = "1.0.0"\nabi = "1.0"\ndevices = ["zz:01"]\n')
    r = npa("build", cwd=tmp_path)
    assert r.returncode == 2  # the manifest is the input: a usage error, not a verdict
    assert "field 'devices'" in r.stderr and "Traceback" not in r.stderr


def test_plugin_calling_libc_fails_to_link_naming_the_symbol(tmp_path):
    # -nostdlib: there is no libc to call, and the linker says which symbol is missing
    _vendor_tree(tmp_path, GOOD_C.replace("#include \"npa_shell.h\"",
                                          "#include \"npa_shell.h\"\nextern int puts(const char *);")
                 .replace("shell_udelay(10);", "shell_udelay(10); puts(\"x\");"))
    r = npa("build", cwd=tmp_path)
    assert r.returncode == 1
    assert "undefined symbol: puts" in r.stderr
    assert r.stderr.strip().splitlines()[-1].endswith("plugins-src/acme: compilation failed")


def test_unknown_plugin_name(tmp_path):
    r = npa("build", "nosuch", cwd=tmp_path)
    assert r.returncode == 2 and "nosuch: no plugin.toml" in r.stderr


def test_exit_status_tells_usage_errors_from_verdicts():
    for args in (["run", "--packets", "0"], ["run", "--vms", "1"], ["no-such-command"],
                 ["inspect", "plugins-wasm/nullvf.wasm", "--base", "-1"]):
        r = npa(*args)
        assert r.returncode == 2 and r.stderr.startswith("npa: error: "), (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
    r = npa("--version")
    assert r.returncode == 0 and "Shell API 1.1" in r.stdout


def test_json_output_of_run_and_policy_check(tmp_path):
    import json
    r = npa("run", "--packets", "300", "-q", "--json", "-")
    doc = json.loads(r.stdout)
    assert r.returncode == 0 and doc["schema"] == "npa.run/1" and doc["clean"] is True
    assert doc["frames"] == 600 and [v["lost"] for v in doc["vms"]] == [0, 0]
    pol = tmp_path / "p.toml"
    pol.write_text("[vm.vm0]\nvlan = 5\n")
    r = npa("policy", "check", str(pol), "--vms", "2", "--json", str(tmp_path / "p.json"))
    doc = json.loads((tmp_path / "p.json").read_text())
    assert r.returncode == 0 and doc["schema"] == "npa.policy/1" and doc["vms"]["vm0"]["vlan"] == 5
    r = npa("run", "--json", str(tmp_path / "no" / "such" / "dir.json"))
    assert r.returncode == 2 and r.stderr.startswith("npa: error: --json") and "Traceback" not in r.stderr


def test_every_bench_writes_its_json_schema_and_takes_a_relative_image(tmp_path):
    """`--json -` prints one document with its schema instead of the table; `--image` relative to
    where npa was started, from a directory outside the checkout."""
    import json
    import shutil

    shutil.copy(ROOT / "plugins-wasm" / "nullvf.wasm", tmp_path / "mine.wasm")
    shutil.copy(ROOT / "plugins-wasm" / "mlx5.wasm", tmp_path / "nic.wasm")
    for args, schema in [
        (["calls", "--calls", "200", "--loads", "1", "--image", "mine.wasm"], "npa.bench.calls/1"),
        (["datapath", "--nic", "mlx5", "--image", "nic.wasm", "--packets", "2000", "--rss-vms", "0",
          "--repeat", "1"],
         "npa.bench.datapath/1"),
        (["steps", "--size", "imix", "--packets", "1000", "--repeat", "1"], "npa.bench.steps/1"),
        (["kernels", "--calls", "20", "--burst", "64"], "npa.bench.kernels/1"),
        (["switch", "--nic", "vmxnet3", "--rounds", "2", "--packets", "2000"], "npa.bench.switch/1"),
    ]:
        r = npa("bench", *args, "--json", "-", cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        doc = json.loads(r.stdout)
        assert doc["schema"] == schema, doc
    assert doc["nic"] == "vmxnet3" and doc["revoke"]["median_ms"] > 0
    r = npa("bench", "calls", "--image", "missing.wasm", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "missing.wasm" in r.stderr
    r = npa("bench", "steps", "--size", "9999", cwd=tmp_path)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "--size" in r.stderr, r.stderr
    r = npa("bench", "nics", "--packets", "2000", "--plot", "nics.png", cwd=tmp_path)
    assert r.returncode == 0 and (tmp_path / "nics.png").read_bytes()[:4] == b"\x89PNG", r.stderr
    r = npa("inspect", str(ROOT / "plugins-wasm" / "nullvf.wasm"), "--json", str(tmp_path / "i.json"))
    assert r.returncode == 0 and json.loads((tmp_path / "i.json").read_text())["schema"] == "npa.inspect/1"


def test_bench_scale_reports_each_counts_median_run_and_every_run(tmp_path):
    import json

    r = npa("bench", "scale", "--vms", "2,4", "--frames", "10000", "--repeat", "3", "--json", "-")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["schema"] == "npa.bench.scale/1" and [c["vms"] for c in doc["counts"]] == [2, 4]
    for c in doc["counts"]:
        runs = c["runs_us_per_frame"]
        assert len(runs) == 3 and c["us_per_frame"] == sorted(runs)[1] and c["rss_mib"] > 0
    r = npa("bench", "scale", "--vms", "2,99")
    assert r.returncode == 2 and "each count is 2 to 64" in r.stderr


def test_a_fit_that_cannot_be_measured_says_so_and_is_never_negative():
    from npa.cli.bench import _fit, _shown

    assert _fit((32, 100e-6), (512, 200e-6)) == pytest.approx((93.33, 208.33), rel=1e-3)
    assert _fit((512, 200e-6), (32, 100e-6)) == _fit((32, 100e-6), (512, 200e-6))
    assert _fit((32, 300e-6), (512, 200e-6)) == (None, None)  # a negative cost per frame
    assert _fit((400, 100e-6), (512, 200e-6)) == (None, None)  # steps of too similar sizes
    fixed, per_frame = _fit((32, 1e-6), (512, 200e-6))  # a negative fixed cost: only that goes
    assert fixed is None and per_frame > 0
    assert _shown(None, "µs") == "not measurable at this size"


def test_bench_steps_at_a_small_size_prints_no_negative_cost(tmp_path):
    r = npa("bench", "steps", "--packets", "1000", "--repeat", "1", "--json", "-", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    for row in doc["layers"]:
        for key in ("fixed_us", "ns_per_frame"):
            assert row[key] is None or row[key] >= 0, row


def test_datasheet_prints_every_layout_whole():
    """`npa datasheet MODEL`: the model's text and each in-memory layout field by field, with
    offsets and byte order (pydoc abbreviates them); an unknown model is one line, exit 2."""
    r = npa("datasheet", "mlx5")
    assert r.returncode == 0, r.stderr
    for line in ("SEND_WQE (64 bytes)", "0x04    qpn_ds", "0x24    lkey", "u64 be", "CQE (64 bytes)",
                 "0x3f    op_own", "reads neither qpn_ds"):
        assert line in r.stdout, line
    for nic, layout in (("ixgbevf", "TX_DESC (16 bytes)"), ("vmxnet3", "bytes)")):
        r = npa("datasheet", nic)
        assert r.returncode == 0 and layout in r.stdout, r.stdout[-500:]
    r = npa("datasheet", "e1000")
    assert r.returncode == 2 and r.stderr.strip() == \
        "npa: error: NIC e1000: unknown NIC model (known: ixgbevf, vmxnet3, mlx5)"
