"""Calls across the sandbox boundary without wasmtime-py's per-call type machinery.

`Func.__call__` looks the function type up, builds `Val`s and converts results on every call
(about 25 us). Here the signature is checked once, at load, against the Shell API; a call then
writes i32s into one preallocated `wasmtime_val_raw_t` array and goes through
`wasmtime_func_call_unchecked`. Host imports use `wasmtime_func_new_unchecked` the same way.
Every export call sets the store's fuel and epoch deadline first.
"""
from __future__ import annotations

import ctypes
import signal
import threading
from ctypes import POINTER, byref, c_uint64, c_void_p, cast
from typing import Callable

import wasmtime
from wasmtime import _ffi as ffi

from npa.shell_api.abi import FuncSpec

from .engine import EPOCH
from .errors import PluginFault, cause

# Our own handles on three C functions, typed with plain pointers: passing ints is cheaper than
# ctypes' checked POINTER arguments, and the arguments are built once per export, not per call.
_lib = ctypes.CDLL(ffi.dll._name)
_call_unchecked = _lib.wasmtime_func_call_unchecked
_call_unchecked.argtypes = [c_void_p, c_void_p, c_void_p, ctypes.c_size_t, c_void_p]
_call_unchecked.restype = c_void_p
_set_fuel = _lib.wasmtime_context_set_fuel
_set_fuel.argtypes = [c_void_p, c_uint64]
_set_fuel.restype = c_void_p
_set_deadline = _lib.wasmtime_context_set_epoch_deadline
_set_deadline.argtypes = [c_void_p, c_uint64]
_set_deadline.restype = None
_get_fuel = _lib.wasmtime_context_get_fuel
_get_fuel.argtypes = [c_void_p, c_void_p]
_get_fuel.restype = c_void_p
_U32 = 0xFFFFFFFF
_VAL_I32S = ctypes.sizeof(ffi.wasmtime_val_raw_t) // 4  # i32 slots per wasmtime_val_raw_t


# Ctrl-C during a plugin call: Python runs its SIGINT handler at the next bytecode, which may be
# inside a host function's ctypes callback, where a KeyboardInterrupt raised outside the
# callback's own try (as it starts or returns) is printed and dropped by ctypes, and the plugin
# goes on with a host call that never happened. So while a call runs, the interrupt waits, and
# is raised once the call has returned.
_IN_CALL = [0]
_INTERRUPTED = [False]


def _on_sigint(signum, frame) -> None:
    if _IN_CALL[0]:
        _INTERRUPTED[0] = True
        return
    raise KeyboardInterrupt


def _defer_interrupts() -> None:
    """Put `_on_sigint` in place of Python's default SIGINT handler (never of a program's own)."""
    if threading.current_thread() is threading.main_thread() \
            and signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        signal.signal(signal.SIGINT, _on_sigint)


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
    return PluginFault(where, cause(trap))


class StoreClock:
    """A deadline of `ticks` epoch ticks on one store, re-armed at most once per epoch tick.

    Arming costs a C call; re-arming only when the epoch has moved since the last arm gives
    every call at least `ticks - 1` ticks, and saves that call on all the others. The clocks of
    one store (set-up calls and data-path calls have different deadlines) share what was armed
    last (`armed`: epoch and ticks), so a call never runs under another clock's deadline.
    """

    __slots__ = ("ctx", "ticks", "armed")

    def __init__(self, store: wasmtime.Store, ticks: int, other: "StoreClock | None" = None):
        self.ctx = cast(store._context(), c_void_p).value
        self.ticks = ticks
        self.armed = other.armed if other is not None else [-1, 0]


class ExportCall:
    """One export, callable as `call(*u32_args) -> int`, under a fuel budget and a deadline."""

    __slots__ = ("spec", "fuel", "ticks", "_ctx", "_func", "_fptr", "_buf", "_i32", "_bufptr",
                 "_n", "_trap", "_trapptr", "_host", "_unsigned", "_clock", "_epoch", "_left", "_leftptr")

    def __init__(self, store: wasmtime.Store, func: wasmtime.Func, spec: FuncSpec, fuel: int,
                 clock: StoreClock, host: "HostFuncs | None" = None):
        self.spec, self.fuel, self.ticks, self._host = spec, fuel, clock.ticks, host
        self._clock, self._epoch = clock, EPOCH
        self._ctx = clock.ctx
        self._func = func  # keeps the wasmtime_func_t alive
        self._fptr = ctypes.addressof(func._func)
        self._n = max(len(spec.params), len(spec.results), 1)
        self._buf = (ffi.wasmtime_val_raw_t * self._n)()
        self._i32 = (ctypes.c_int32 * (self._n * _VAL_I32S)).from_buffer(self._buf)
        self._bufptr = ctypes.addressof(self._buf)
        self._trap = c_void_p()
        self._trapptr = ctypes.addressof(self._trap)
        self._left = c_uint64()  # fuel left after a call
        self._leftptr = ctypes.addressof(self._left)
        _defer_interrupts()
        self._unsigned = bool(spec.results) and spec.results[0].startswith("u")

    def __call__(self, *args: int) -> int | None:
        i32 = self._i32
        for i, a in enumerate(args):
            i32[i * _VAL_I32S] = a
        ctx, clock = self._ctx, self._clock
        _set_fuel(ctx, self.fuel)
        now, armed = self._epoch[0], clock.armed
        if armed[0] != now or armed[1] != clock.ticks:
            _set_deadline(ctx, clock.ticks)
            armed[0], armed[1] = now, clock.ticks
        _IN_CALL[0] += 1
        try:
            err = _call_unchecked(ctx, self._fptr, self._bufptr, self._n, self._trapptr)
        finally:
            _IN_CALL[0] -= 1
        if _INTERRUPTED[0]:
            _INTERRUPTED[0] = False
            raise KeyboardInterrupt
        if err or self._trap.value:
            self._raise(err)
        if self._host is not None and self._host.pending:
            self._host.reraise()
        if not self.spec.results:
            return None
        return i32[0] & _U32 if self._unsigned else i32[0]

    def fuel_used(self) -> int:
        """Fuel the last call consumed (valid until the next call on this store)."""
        left = self._left
        if (err := _get_fuel(self._ctx, self._leftptr)):  # fuel is always on in our stores
            self._raise(err)
        return self.fuel - left.value

    def _raise(self, err: int | None) -> None:
        trap, self._trap.value = self._trap.value, None
        if self._host is not None and self._host.pending:
            self._host.reraise()
        if err:
            e = wasmtime.WasmtimeError._from_ptr(cast(err, POINTER(ffi.wasmtime_error_t)))
            raise PluginFault(self.spec.name, cause(e))
        raise trap_fault(self.spec.name, wasmtime.Trap._from_ptr(cast(trap, POINTER(ffi.wasm_trap_t))))


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
