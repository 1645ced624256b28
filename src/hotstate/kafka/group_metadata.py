"""Consumer group metadata for confluent-kafka's ``send_offsets_to_transaction``, built from another member.

hotstate's group member is a kafka-python consumer (it carries the task assignor); the transactional
producer is librdkafka's. ``send_offsets_to_transaction`` takes librdkafka's serialized group metadata,
and confluent-kafka only makes that from a librdkafka consumer. librdkafka's public C API builds one from
parts (``rd_kafka_consumer_group_metadata_new_with_genid`` + ``_write``): called here through ctypes, on the
librdkafka that ships in the confluent-kafka wheel. With the member's generation in it, the broker fences a
zombie's offsets (KIP-447). docs/spikes/membership.md has the spike that proved it.
"""
from __future__ import annotations

import ctypes
import glob
import os
import threading

import confluent_kafka

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None


def _librdkafka() -> ctypes.CDLL:
    global _lib
    with _lock:
        if _lib is None:
            wheel_libs = os.path.join(os.path.dirname(os.path.dirname(confluent_kafka.__file__)), "confluent_kafka.libs")
            found = sorted(glob.glob(os.path.join(wheel_libs, "librdkafka*.so*")))
            lib = ctypes.CDLL(found[0]) if found else ctypes.CDLL("librdkafka.so.1")
            lib.rd_kafka_consumer_group_metadata_new_with_genid.restype = ctypes.c_void_p
            lib.rd_kafka_consumer_group_metadata_new_with_genid.argtypes = [
                ctypes.c_char_p, ctypes.c_int32, ctypes.c_char_p, ctypes.c_char_p]
            lib.rd_kafka_consumer_group_metadata_write.restype = ctypes.c_void_p
            lib.rd_kafka_consumer_group_metadata_write.argtypes = [
                ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p), ctypes.POINTER(ctypes.c_size_t)]
            lib.rd_kafka_consumer_group_metadata_destroy.argtypes = [ctypes.c_void_p]
            lib.rd_kafka_mem_free.argtypes = [ctypes.c_void_p, ctypes.c_void_p]
            _lib = lib
        return _lib


def serialized(group_id: str, generation_id: int, member_id: str, group_instance_id: str | None = None) -> bytes:
    """librdkafka's serialized group metadata, as ``Consumer.consumer_group_metadata()`` returns it."""
    lib = _librdkafka()
    handle = lib.rd_kafka_consumer_group_metadata_new_with_genid(
        group_id.encode(), generation_id, member_id.encode(),
        group_instance_id.encode() if group_instance_id else None)
    if not handle:
        raise RuntimeError("librdkafka could not build consumer group metadata")
    buf, size = ctypes.c_void_p(), ctypes.c_size_t()
    try:
        if lib.rd_kafka_consumer_group_metadata_write(handle, ctypes.byref(buf), ctypes.byref(size)):
            raise RuntimeError("librdkafka could not serialize consumer group metadata")
        try:
            return ctypes.string_at(buf, size.value)
        finally:
            lib.rd_kafka_mem_free(None, buf)
    finally:
        lib.rd_kafka_consumer_group_metadata_destroy(handle)
