# The compiled MurmurHash3 of fleet/_features.pyx, for other compiled modules to cimport
# (learner/_ftrl.pyx hashes whole batches of feature rows with it).
from libc.stdint cimport uint32_t, uint8_t

cdef uint32_t murmur3_32(const uint8_t* data, Py_ssize_t length, uint32_t seed) nogil
