"""Status codes returned by the `npa_*` exports: small non-negative integers, 0 = OK."""
from enum import IntEnum


class Status(IntEnum):
    OK = 0
    NOMEM = 1
    DEVICE = 2
    CONFIG = 3
    UNSUPPORTED = 4
    STATE = 5
    NOT_IMPLEMENTED = 6
    TIMEOUT = 7

    @property
    def message(self) -> str:
        return _MESSAGES[self]

    @classmethod
    def describe(cls, code: int) -> str:
        """`NAME (message)` for a known code, or a line naming the unknown one."""
        try:
            s = cls(code)
        except ValueError:
            return f"unknown status {code}"
        return f"{s.name} ({s.message})"


_MESSAGES = {
    Status.OK: "success",
    Status.NOMEM: "dma_alloc failed: out of DMA memory",
    Status.DEVICE: "the device did not respond or reported an error",
    Status.CONFIG: "the init config block is invalid or inconsistent",
    Status.UNSUPPORTED: "a requested queue, size or feature is not supported",
    Status.STATE: "called in the wrong state (e.g. poll before init)",
    Status.NOT_IMPLEMENTED: "this entry point is not implemented yet",
    Status.TIMEOUT: "the device did not finish in time",
}
