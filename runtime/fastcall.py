"""Calls across the sandbox boundary without wasmtime-py's per-call type machinery.

`Func.__call__` looks the function type up, builds `Val`s and converts results on every call
(about 25 us). Here the signature is checked once, at load, against the Shell API; a call then
writes i32s into one preallocated `wasmtime_val_raw_t` array and goes through
`wasmtime_func_call_unchecked`. Host imports use `wasmtime_func_new_unchecked` the same way.
Every export call sets the store's fuel and epoch deadline first.
"""
from __future__ import annotations

import ctypes
from ctypes import POINTER, byref, c_uint64, c_void_p, cast
from typing import Callable

import wasmtime
from wasmtime import _ffi as ffi

from shell_api.abi import FuncSpec

from .errors import PluginFault

_call_unchecked = ffi.dll.wasmtime_func_call_unchecked
_set_fuel = ffi.dll.wasmtime_context_set_fuel
_get_fuel = ffi.dll.wasmtime_context_get_fuel
_set_deadline = ffi.dll.wasmtime_context_set_epoch_deadline
_U32 = 0xFFFFFFFF


class HostTrap(Exception):
    """Raised by a host import to trap the calling plugin (e.g. a pointer outside memory)."""


def trap_fault(where: str, trap: wasmtime.Trap) -> PluginFault:
    """A PluginFault naming `where` and why, from a wasmtime trap."""
    code = trap.trap_code
    if code == wasmtime.TrapCode.OUT_OF_FUEL:
        return PluginFault(where, "out of fuel", code)
    if code == wasmtime.TrapCode.INTERRUPT:
        return PluginFault(where, "deadline exceeded", code)
    if code is not None:
        return PluginFault(where, "trap: " + code.name.lower().replace("_", " "), code)
    lines = trap.message.strip().splitlines()
    return PluginFault(where, lines[0] if lines else "trap")


def signature_of(func_type: wasmtime.FuncType) -> tuple[tuple[str, ...], tuple[str, ...]]:
    return tuple(str(p) for p in func_type.params), tuple(str(r) for r in func_type.results)


class ExportCall:
    """One export, callable as `call(*u32_args) -> int`, under a fuel budget and a deadline."""

    __slots__ = ("spec", "fuel", "ticks", "_ctx", "_fref", "_buf", "_n", "_trap", "_host",
                 "_unsigned")

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func, spec: FuncSpec, fuel: int,
                 ticks: int, host: "HostFuncs | None" = None):
        self.spec, self.fuel, self.ticks, self._host = spec, fuel, ticks, host
        self._ctx = store._context()
        self._fref = byref(func._func)
        self._n = max(len(spec.params), len(spec.results), 1)
        self._buf = (ffi.wasmtime_val_raw_t * self._n)()
        self._trap = POINTER(ffi.wasm_trap_t)()
        self._unsigned = bool(spec.results) and spec.results[0].startswith("u")

    def __call__(self, *args: int) -> int | None:
        buf = self._buf
        for i, a in enumerate(args):
            buf[i].i32 = a
        ctx = self._ctx
        _set_fuel(ctx, self.fuel)
        _set_deadline(ctx, self.ticks)
        err = _call_unchecked(ctx, self._fref, buf, self._n, byref(self._trap))
        if err or self._trap:
            self._raise(err)
        if self._host is not None and self._host.pending:
            self._host.reraise()
        if not self.spec.results:
            return None
        return buf[0].i32 & _U32 if self._unsigned else buf[0].i32

    def fuel_used(self) -> int:
        """Fuel the last call consumed (valid until the next call on this store)."""
        left = c_uint64()
        _get_fuel(self._ctx, byref(left))
        return self.fuel - left.value

    def _raise(self, err) -> None:
        if self._host is not None and self._host.pending:
            self._trap = POINTER(ffi.wasm_trap_t)()
            self._host.reraise()
        if err:
            raise PluginFault(self.spec.name, f"error: {wasmtime.WasmtimeError._from_ptr(err)}")
        trap, self._trap = self._trap, POINTER(ffi.wasm_trap_t)()
        raise trap_fault(self.spec.name, wasmtime.Trap._from_ptr(trap))


class HostFuncs:
    """The host side of the imports of one instance: unchecked trampolines into Python."""

    def __init__(self, store: wasmtime.Store):
        self._store = store
        self._keep: list = []  # ctypes callbacks must outlive the instance
        self.pending: BaseException | None = None  # a host bug, re-raised after the call

    def define(self, spec: FuncSpec, fn: Callable[..., int | None]) -> wasmtime.Func:
        nparams, has_result = len(spec.params), bool(spec.results)
        host = self

        def trampoline(_env, _caller, args, _nargs):
            try:
                params = [args[i].i32 & _U32 for i in range(nparams)]
                result = fn(*params)
                if has_result:
                    args[0].i32 = result
                return 0
            except HostTrap as e:
                return _new_trap(f"{spec.name}: {e}")
            except BaseException as e:  # noqa: BLE001 - a runtime bug, not the plugin's fault
                host.pending = e
                return _new_trap(f"{spec.name}: host error")

        cb = ffi.wasmtime_func_unchecked_callback_t(trampoline)
        self._keep.append(cb)
        ty = wasmtime.FuncType([wasmtime.ValType.i32()] * nparams,
                               [wasmtime.ValType.i32()] * len(spec.results))
        raw = ffi.wasmtime_func_t()
        ffi.wasmtime_func_new_unchecked(self._store._context(), ty.ptr(), cb, None,
                                        ctypes.CFUNCTYPE(None, c_void_p)(), byref(raw))
        return wasmtime.Func._from_raw(raw)

    def reraise(self) -> None:
        exc, self.pending = self.pending, None
        raise exc


def _new_trap(message: str) -> int:
    data = message.encode()
    trap = ffi.wasmtime_trap_new(ctypes.create_string_buffer(data), len(data))
    return cast(trap, c_void_p).value
