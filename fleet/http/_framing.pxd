# The compiled framer's declarations, for fleet/http/_connection.pyx to reach its fields in C.

cdef class Request:
    cdef public str method
    cdef public str target
    cdef public str version
    cdef public list raw_headers
    cdef public bytes body
    cdef public bint keep_alive
    cdef public double received_at
    cdef public bint chunked
    cdef public bint close
    cdef public str remote_ip
    cdef object _headers


cdef class Framer:
    cdef readonly object limits
    cdef public object requests
    cdef public object error
    cdef public int phase
    cdef public double since
    cdef public bint continue_due
    cdef public bint upgrade_refused
    cdef object _parser
    cdef object _feed_data, _get_method, _get_http_version, _should_keep_alive, _should_upgrade
    cdef double _now
    cdef Py_ssize_t _stray, _feed_done, _feed_body, _feed_len
    cdef bint _begun
    cdef Py_ssize_t _max_header, _max_message, _max_body, _max_chunks
    # the message in progress
    cdef bytes _url
    cdef list _raw
    cdef bytes _host, _expect, _length, _te  # the headers the framing reads (framing._WATCHED)
    cdef bytes _body
    cdef list _parts
    cdef Py_ssize_t _size, _chunks, _wire
    cdef bint _chunked
    cdef str _version
    cdef double _received_at
    cdef object _pending

    cpdef feed(self, bytes data, double now)
    cdef _reset_message(self)
    cdef _stray_tail(self, bytes data)
    cdef _fail(self, error)
    cdef _upgraded(self)
    cdef _watch(self, int which, bytes value)
    cdef Py_ssize_t _head_size(self)
    cdef _refuse(self, error)
