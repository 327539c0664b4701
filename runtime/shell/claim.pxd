# Cython's types for claim.py (an augmenting .pxd: the .py stays plain Python). Bounds checks
# stay on (setup.py); every index below is checked against its array.
cimport cython

cdef long long U32
cdef Py_ssize_t OUTSIDE, NOT_HELD, UNTAKEN, TWICE

cdef class Claim:
    cdef signed char[:] state
    cdef long long[:] slot
    cdef long long[:] mark
    cdef unsigned long long base
    cdef unsigned long long frame_size
    cdef unsigned long long nframes

    @cython.locals(n=Py_ssize_t, i=Py_ssize_t, a=cython.ulonglong, off=cython.ulonglong,
                   k=cython.ulonglong, kept=Py_ssize_t)
    cpdef Py_ssize_t run(self, const unsigned long long[:] addr, long long[:] idx,
                         unsigned char[:] held, signed char want, long long cons,
                         long long outstanding, long long[:] counts)
