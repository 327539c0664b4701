"""The error contract of every command, on ordinary mistakes: one `npa: error:` line naming what
and where, exit 2 for a wrong input or usage, 1 for a negative verdict, 130 for Ctrl-C; never a
traceback, never an internal error, nothing created outside what the user named, and every bad
input refused before any work (each case here ends in well under the time a run would take)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from helpers import NULLVF, ROOT

NPA = [sys.executable, "-c", "from npa.cli import main; main()"]
MISSING = "/nonexistent-npa-dir"
READ_ONLY = "/proc/npa-test"  # not writable, even by root


def _fixtures(tmp: Path) -> dict[str, str]:
    """Files the cases name: {NAME} in a case's arguments is replaced by its path."""
    (tmp / "garbage.wasm").write_bytes(b"\x00asm\x01\x00\x00\x00\xff\xff")
    (tmp / "bad.toml").write_text("[vm.vm0]\nmtu = 'large'\n")
    (tmp / "afile").write_text("not a directory\n")
    src = tmp / "src"
    for name, toml, code in (
            ("latin1", "name = 'latin1'\nvendor = 'Caf\xe9'\n".encode("latin-1"), "int x;\n"),
            ("mismatch", b"name = 'other'\nversion = '0.1.0'\nabi = '1.0'\ndevices = ['8086:10ed']\n",
             "int x;\n"),
            ("syntax", b"name = 'syntax'\nversion = '0.1.0'\nabi = '1.0'\ndevices = ['8086:10ed']\n",
             "int npa_init(void) { return }\n")):
        (src / name).mkdir(parents=True)
        (src / name / "plugin.toml").write_bytes(toml)
        (src / name / f"{name}.c").write_text(code)
    return {"TMP": str(tmp), "GARBAGE": str(tmp / "garbage.wasm"), "BADTOML": str(tmp / "bad.toml"),
            "AFILE": str(tmp / "afile"), "SRC": str(src), "NULLVF": str(NULLVF)}


# (arguments, exit status, a phrase the error line must hold)
CASES = [
    # run
    ("run --vfs 100000", 2, "--vfs"),
    ("run --vms 100000", 2, "--vms"),
    ("run --vms 1", 2, "--vms"),
    ("run --packets 0", 2, "--packets"),
    ("run --packets 10000000000", 2, "--packets"),
    ("run --plot /nonexistent-npa-dir/t.png", 2, "no directory /nonexistent-npa-dir"),
    ("run --plot /proc/npa-test.png", 2, "--plot /proc/npa-test.png"),
    ("run --plot {TMP}", 2, "a directory, not a file"),
    ("run --json /nonexistent-npa-dir/r.json", 2, "--json"),
    ("run --pcap /nonexistent-npa-dir/c.pcap", 2, "--pcap"),
    ("run --pcap-port vf0", 2, "--pcap-port needs --pcap"),
    ("run --pcap {TMP}/c.pcap --pcap-port vf99", 2, "--pcap-port vf99"),
    ("run --size 59", 2, "--size"),
    ("run --size huge", 2, "--size"),
    ("run --nic e1000", 2, "--nic e1000: unknown NIC model"),
    ("run --switch hub", 2, "--switch hub"),
    ("run --uplink wire", 2, "--uplink wire"),
    ("run --plugins /nonexistent-npa-dir", 2, "--plugins /nonexistent-npa-dir"),
    ("run --vfs 1 --vms 2", 2, "needs as many VFs"),
    ("run {TMP}/missing.wasm", 2, "no such file"),
    ("run {TMP}", 2, "a directory, not a file"),
    ("run --policy {TMP}/missing.toml", 2, "--policy"),
    ("run --policy {BADTOML}", 2, "bad.toml"),
    ("run --migrate-to e1000", 2, "--migrate-to e1000"),
    ("run --migrate-to mlx5 --switch vepa", 2, "--migrate-to"),
    ("run --migrate-at -1", 2, "--migrate-at"),
    # inspect
    ("inspect {TMP}/missing.wasm", 2, "no such file"),
    ("inspect {TMP}", 2, "a directory, not a file"),
    ("inspect {GARBAGE}", 1, "garbage.wasm"),
    ("inspect --base zz {NULLVF}", 2, "not an integer"),
    ("inspect --base 0x100000000 {NULLVF}", 2, "outside"),
    ("inspect --json /nonexistent-npa-dir/i.json {NULLVF}", 2, "--json"),
    ("inspect", 2, "Missing argument 'image'"),
    # build
    ("build --out /proc/npa-test --src {SRC} syntax", 2, "--out /proc/npa-test"),
    ("build --out {AFILE} --src {SRC} syntax", 2, "a file, not a directory"),
    ("build --out /nonexistent-npa-dir/a/b --src {SRC} syntax", 2, "no directory"),
    ("build --out {TMP}/out --src {SRC} nosuch", 2, "nosuch"),
    ("build --out {TMP}/out --src /nonexistent-npa-dir", 2, "no plugins under"),
    ("build --out {TMP}/out --src {SRC} latin1", 2, "not UTF-8"),
    ("build --out {TMP}/out --src {SRC} mismatch", 2, "must equal the directory name"),
    ("build --out {TMP}/out --src {SRC} syntax", 1, "compilation failed"),
    # new
    ("new acme --src /proc/npa-test", 2, "--src /proc/npa-test"),
    ("new acme --src {AFILE}", 2, "a file, not a directory"),
    ("new acme --src /nonexistent-npa-dir/a", 2, "no directory"),
    ("new Bad_Name --src {TMP}/new", 2, "a plugin name is"),
    ("new acme --lang rust --src {TMP}/new", 2, "--lang rust"),
    ("new acme --nic e1000 --src {TMP}/new", 2, "--nic e1000"),
    ("new syntax --src {SRC}", 2, "already exists"),
    # host
    ("host --uplink tap:npa-t0 --control /nonexistent-npa-dir/h.sock", 2, "--control"),
    ("host --uplink tap:npa-t0 --control {TMP}", 2, "a directory, not a socket path"),
    ("host --uplink tap:npa-t0 --control {AFILE}", 2, "not a socket"),
    ("host --uplink tap:npa-t0 --vfs 1 --vms 2", 2, "needs as many VFs"),
    ("host --uplink tap:npa-t0 --vms 65", 2, "--vms"),
    ("host --uplink tap:npa-t0 --nic e1000", 2, "--nic e1000"),
    ("host --uplink tap:npa-t0 --ip nonsense", 2, "--ip nonsense"),
    ("host --uplink tap:npa-t0 --listen nonsense", 2, "--listen nonsense"),
    ("host --uplink tap:npa-t0 --guest qemu", 2, "--guest qemu: use one of stack, tap, netns"),
    ("host --uplink tap:npa-t0 --guest netns --name ../x", 2, "--name ../x"),
    ("host --uplink tap:much-too-long0 --guest tap", 2, "--name much-too-long0"),
    ("host --uplink tap:npa-t0 --listen 127.0.0.1:99999", 2, "--listen"),
    ("host --uplink tap:npa-t0 --policy {TMP}/missing.toml", 2, "--policy"),
    ("host --uplink tap:npa-t0 --json /nonexistent-npa-dir/h.json", 2, "--json"),
    ("host --uplink tap:npa-t0 --pcap /nonexistent-npa-dir/h.pcap", 2, "--pcap"),
    ("host --uplink tap:npa-t0 --plugins /nonexistent-npa-dir", 2, "--plugins"),
    ("host --uplink bogus:x", 2, "bogus"),
    ("host", 2, "--uplink"),
    # conformance
    ("conformance {TMP}/missing.wasm", 2, "no such file"),
    ("conformance {TMP}", 2, "a directory, not a file"),
    ("conformance --junit /nonexistent-npa-dir/j.xml {NULLVF}", 2, "--junit"),
    ("conformance -k and_or_( {NULLVF}", 2, "not a -k expression"),
    ("conformance --nic e1000 {NULLVF}", 2, "--nic e1000"),
    ("conformance --json {TMP} {NULLVF}", 2, "a directory, not a file"),
    # policy
    ("policy check {TMP}/missing.toml", 2, "no such file"),
    ("policy check --vms 1000000 {BADTOML}", 2, "--vms"),
    ("policy check {BADTOML}", 2, "bad.toml"),
    # migrate, stat
    ("migrate vm0 --from /nonexistent-npa-dir/a --to /nonexistent-npa-dir/b", 2, "/nonexistent-npa-dir/a"),
    ("migrate vm0 --from a --to b --timeout 0", 2, "--timeout"),
    ("stat --control /nonexistent-npa-dir/h.sock", 2, "/nonexistent-npa-dir/h.sock"),
    ("stat --control {AFILE}", 2, "afile"),
    ("stat --control x --watch 1 --json -", 2, "give one of them"),
    # bench
    ("bench noisy --vms 3", 2, "--vms"),
    ("bench noisy --vms 5", 2, "even count"),
    ("bench datapath --plot /nonexistent-npa-dir/b.png", 2, "--plot"),
    ("bench nics --plot /proc/npa-test.png", 2, "--plot"),
    ("bench scale --vms 1,2", 2, "--vms"),
    ("bench scale --vms x", 2, "--vms"),
    ("bench steps --size 59", 2, "--size"),
    ("bench steps --plot {TMP}", 2, "a directory"),
    ("bench datapath --nic e1000", 2, "e1000"),
    ("bench calls --image {TMP}/missing.wasm", 2, "no such file"),
    ("bench migrate --runs 0", 2, "--runs"),
    ("bench switch --rounds 0", 2, "--rounds"),
    # global options
    ("--log /nonexistent-npa-dir/npa.log run", 2, "--log"),
    ("--log /proc/npa-test.log run", 2, "--log"),
    ("--log-level loud run", 2, "--log-level"),
    ("nosuchcommand", 2, "nosuchcommand"),
]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bad-inputs")
    names = _fixtures(tmp)

    def one(case):
        args = [a.format(**names) for a in case[0].split()]
        t0 = time.monotonic()
        r = subprocess.run([*NPA, *args], cwd=tmp, capture_output=True, text=True, timeout=120,
                           env={**os.environ, "COLUMNS": "100"})
        return r, time.monotonic() - t0

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, CASES))
    return dict(zip((c[0] for c in CASES), results)), tmp


def test_the_table_is_large():
    assert len(CASES) >= 60 and len({c[0] for c in CASES}) == len(CASES)


@pytest.mark.parametrize("args,code,phrase", CASES, ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_and_the_right_status(outcomes, args, code, phrase):
    results, tmp = outcomes
    r, seconds = results[args]
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("npa: error:")]
    assert r.returncode == code, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr + r.stdout and "internal error" not in r.stderr, r.stderr
    assert len(lines) == 1 or (args.startswith("build") and code == 1), r.stderr
    assert phrase in lines[-1], lines
    assert seconds < 60  # refused before any work (a loose bound: a busy CI machine)


def test_nothing_is_created_outside_what_the_user_named(outcomes):
    results, tmp = outcomes
    assert not Path(MISSING).exists() and not Path(READ_ONLY).exists()
    assert not (tmp / "out").exists() or not any((tmp / "out").iterdir())
    assert not (tmp / "c.pcap").exists()  # refused before the run: no empty capture left behind


def test_pytest_errors_do_not_leak_through_a_bad_selection(outcomes):
    r, _ = outcomes[0]["conformance -k and_or_( {NULLVF}"]
    assert "ERROR:" not in r.stderr and "ERROR:" not in r.stdout


@pytest.mark.parametrize("command", [["conformance", "-q", str(NULLVF)], ["build", "nullvf", "--out", "OUT"],
                                     ["run", "--packets", "10000000"]])
@pytest.mark.parametrize("delay", [0.2, 0.8, 2.0])
def test_ctrl_c_at_any_moment_is_one_line_and_130(command, delay, tmp_path):
    args = [str(tmp_path / "out") if a == "OUT" else a for a in command]
    proc = subprocess.Popen([*NPA, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise
    if proc.returncode == 0:  # it finished before the signal: nothing to see at this moment
        return
    assert proc.returncode == 130, (proc.returncode, err)
    errors = [line for line in err.splitlines() if line.startswith("npa: error:")]
    assert "Traceback" not in err and errors == ["npa: error: interrupted"], err


def test_version_and_help_load_no_runtime():
    """`npa --version` and `--help` import typer and the ABI's numbers, not wasmtime, numpy,
    pydantic or rich's tables: what keeps them well under half a second."""
    code = ("import sys; from npa.cli.main import app; "
            "print(sorted(m for m in ('wasmtime', 'numpy', 'pydantic', 'npa.runtime', 'rich.table') "
            "if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "[]", r.stdout + r.stderr
    r = subprocess.run([*NPA, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.startswith("npa ") and "Shell API" in r.stdout
