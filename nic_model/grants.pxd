# Cython's types for grants.py (an augmenting .pxd: the .py stays plain Python). Bounds checks
# stay on (setup.py); every index below is checked against its array.
cimport cython

cdef signed char C_READ, C_HOLD

cdef class Grants:
    cdef signed char[:] grant
    cdef long long[:] order
    cdef long long[:] mark
    cdef long long[:] scratch
    cdef unsigned long long base
    cdef unsigned long long frame_size
    cdef unsigned long long frames

    @cython.locals(n=Py_ssize_t, i=Py_ssize_t, a=cython.ulonglong, off=cython.ulonglong,
                   k=cython.ulonglong, count=Py_ssize_t)
    cpdef Py_ssize_t allowed(self, const unsigned long long[:] addr, const long long[:] lens,
                             long long[:] idx, unsigned char[:] ok, signed char kind)

    @cython.locals(i=Py_ssize_t, f=Py_ssize_t, last=cython.longlong, v=cython.longlong,
                   older=Py_ssize_t, g=cython.schar)
    cdef bint _ascending_and_oldest(self, long long[:] idx, unsigned char[:] ok, Py_ssize_t n,
                                    Py_ssize_t count)

    @cython.locals(i=Py_ssize_t, f=Py_ssize_t, m=Py_ssize_t, kept=Py_ssize_t, g=cython.schar,
                   stop=cython.bint, oldest="long long[:]")
    cdef Py_ssize_t _keep_oldest_first(self, long long[:] idx, unsigned char[:] ok, Py_ssize_t n,
                                       Py_ssize_t count)
