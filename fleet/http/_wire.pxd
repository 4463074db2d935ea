# The compiled response's declarations, for fleet/http/_connection.pyx to build its bytes in C.

cdef class Response:
    cdef public int status
    cdef public object body
    cdef public object headers
    cdef public object content_type
    cdef public bint close

    cdef bytes answer(self, bint close, bint keep_alive_10, bint head)
