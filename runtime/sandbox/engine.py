"""The process-wide wasmtime engine: sandbox configuration, compiled-module cache, epoch ticker.

Plugins run with fuel metering (a deterministic instruction budget) and epoch interruption (a
wall-clock deadline). The engine enables only the wasm features a data-path plugin needs.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
from functools import lru_cache
from pathlib import Path

import wasmtime

EPOCH_TICK_S = 0.005  # deadline granularity
EPOCH = [0]  # the engine's epoch as Python sees it: read per call without a C call


def _config() -> wasmtime.Config:
    c = wasmtime.Config()
    c.consume_fuel = True
    c.epoch_interruption = True
    c.memory_may_move = False
    c.wasm_threads = False
    c.wasm_memory64 = False
    c.wasm_multi_memory = False
    c.wasm_gc = False
    c.wasm_exceptions = False
    c.wasm_component_model = False
    # Off as well: what the loader's code scan (wasm.shape) does not decode is not compiled.
    c.wasm_relaxed_simd = False
    c.wasm_simd = False
    c.wasm_tail_call = False
    c.wasm_function_references = False
    c.wasm_stack_switching = False
    c.wasm_custom_page_sizes = False
    c.wasm_wide_arithmetic = False
    c.cranelift_opt_level = "speed"
    return c


# Part of the cache key: a different engine setup must not reuse an artifact.
CONFIG_FINGERPRINT = "fuel,epoch,nomove,nothreads,nomem64,nomultimem,nogc,noexn,nosimd,notail,speed"


@lru_cache(maxsize=1)
def engine() -> wasmtime.Engine:
    eng = wasmtime.Engine(_config())
    threading.Thread(target=_tick, args=(eng,), name="npa-epoch", daemon=True).start()
    return eng


def _tick(eng: wasmtime.Engine) -> None:
    while True:
        time.sleep(EPOCH_TICK_S)
        eng.increment_epoch()
        EPOCH[0] += 1


def deadline_ticks(seconds: float) -> int:
    return max(1, int(seconds / EPOCH_TICK_S + 0.999))


def cache_dir() -> Path:
    if env := os.environ.get("NPA_CACHE_DIR"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "npa" / "modules"


def _cache_key(image: bytes) -> str:
    h = hashlib.sha256(image)
    h.update(f"|wasmtime-{_wasmtime_version()}|{CONFIG_FINGERPRINT}".encode())
    return h.hexdigest()


@lru_cache(maxsize=1)
def _wasmtime_version() -> str:
    from importlib.metadata import version
    return version("wasmtime")


def compile_module(image: bytes, use_cache: bool = True) -> tuple[wasmtime.Module, bool]:
    """Compile `image` (already validated), from the cache when possible: (module, was cached)."""
    eng = engine()
    path = cache_dir() / f"{_cache_key(image)}.cwasm"
    if use_cache and path.exists():
        try:
            return wasmtime.Module.deserialize_file(eng, str(path)), True
        except wasmtime.WasmtimeError:
            pass  # stale or damaged artifact: compile again and replace it
    module = wasmtime.Module(eng, image)
    if use_cache:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            tmp.write_bytes(module.serialize())
            tmp.replace(path)
        except OSError:
            pass  # a read-only cache only costs speed
    return module, False
