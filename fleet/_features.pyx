# cython: language_level=3, boundscheck=False, wraparound=False
"""MurmurHash3 (x86, 32-bit) feature hashing, compiled.

The reference is fleet/features.py (mmh3); tests/fleet/test_features.py checks that both give
the same indices for the same strings, so the bidder and the learner always agree.
"""
from libc.stdint cimport uint32_t, uint8_t
import numpy as np
cimport numpy as cnp

cnp.import_array()


cdef inline uint32_t _rotl32(uint32_t x, int r) nogil:
    return (x << r) | (x >> (32 - r))


cdef uint32_t murmur3_32(const uint8_t* data, Py_ssize_t length, uint32_t seed) nogil:
    cdef uint32_t c1 = <uint32_t>0xcc9e2d51
    cdef uint32_t c2 = <uint32_t>0x1b873593
    cdef uint32_t h1 = seed
    cdef uint32_t k1
    cdef Py_ssize_t nblocks = length // 4
    cdef Py_ssize_t i
    cdef const uint8_t* tail
    for i in range(nblocks):
        k1 = (<uint32_t>data[4 * i]) | (<uint32_t>data[4 * i + 1] << 8) \
            | (<uint32_t>data[4 * i + 2] << 16) | (<uint32_t>data[4 * i + 3] << 24)
        k1 = k1 * c1
        k1 = _rotl32(k1, 15)
        k1 = k1 * c2
        h1 ^= k1
        h1 = _rotl32(h1, 13)
        h1 = h1 * 5 + <uint32_t>0xe6546b64
    tail = data + nblocks * 4
    k1 = 0
    cdef int rem = length & 3
    if rem == 3:
        k1 ^= <uint32_t>tail[2] << 16
    if rem >= 2:
        k1 ^= <uint32_t>tail[1] << 8
    if rem >= 1:
        k1 ^= <uint32_t>tail[0]
        k1 = k1 * c1
        k1 = _rotl32(k1, 15)
        k1 = k1 * c2
        h1 ^= k1
    h1 ^= <uint32_t>length
    h1 ^= h1 >> 16
    h1 = h1 * <uint32_t>0x85ebca6b
    h1 ^= h1 >> 13
    h1 = h1 * <uint32_t>0xc2b2ae35
    h1 ^= h1 >> 16
    return h1


def hash_one(str feature, uint32_t seed=0):
    cdef bytes b = feature.encode("utf-8")
    return murmur3_32(<const uint8_t*><char*>b, len(b), seed)


def hash_features(list features, int bits, uint32_t seed=0):
    """Indices in [0, 2**bits) for each feature string, as a uint32 array."""
    cdef Py_ssize_t n = len(features)
    cdef cnp.ndarray[cnp.uint32_t, ndim=1] out = np.empty(n, dtype=np.uint32)
    cdef uint32_t mask = <uint32_t>0xffffffff
    if bits < 32:
        mask = <uint32_t>((<unsigned long long>1 << bits) - 1)
    cdef Py_ssize_t i
    cdef bytes b
    for i in range(n):
        b = (<str>features[i]).encode("utf-8")
        out[i] = murmur3_32(<const uint8_t*><char*>b, len(b), seed) & mask
    return out
