"""The curated public API: the export list is guarded, and every name resolves."""
from __future__ import annotations

import hotstate

EXPECTED = [
    "App", "AppState", "BrokerUnavailableError", "Cancellable", "Config", "ConfigError", "DeserializationError",
    "ErrorHandlerContext", "HotstateError", "ProcessingError", "ProcessingHandlerResponse", "Processor",
    "Punctuation", "PunctuationError", "Record",
    "RecordTooLargeError", "RestoreListener", "StandbyUpdateListener", "StateDirError", "StoreClosedError",
    "StoreCorruptedError", "StoreInfo", "StoreIOError", "SuspendReason",
    "StoreSpec", "TaskInfo", "TaskState", "TopicPartition", "TopologyError", "Windowed", "serde", "windows",
]


def test_all_is_the_expected_list():
    assert sorted(hotstate.__all__) == sorted(EXPECTED)
    assert len(hotstate.__all__) == len(set(hotstate.__all__))


def test_testing_exports_the_test_driver():
    import hotstate.testing
    assert hotstate.testing.__all__ == ["TopologyTestDriver"]
    assert hotstate.testing.TopologyTestDriver.__module__ == "hotstate.testing.driver"


def test_every_name_resolves():
    for name in hotstate.__all__:
        assert getattr(hotstate, name) is not None, name


def test_star_import_gives_exactly_all():
    ns: dict = {}
    exec("from hotstate import *", ns)
    assert sorted(k for k in ns if not k.startswith("__")) == sorted(EXPECTED)


def test_errors_share_a_base_and_say_what_to_do():
    for name in ("BrokerUnavailableError", "ConfigError", "DeserializationError", "ProcessingError", "PunctuationError",
                 "RecordTooLargeError", "StateDirError", "StoreCorruptedError", "TopologyError"):
        assert issubclass(getattr(hotstate, name), hotstate.HotstateError), name


def test_issue_api_shapes():
    # names code outside this repo calls (issue 2)
    assert {s.name for s in hotstate.AppState} == {"CREATED", "REBALANCING", "RUNNING", "PENDING_SHUTDOWN",
                                                   "NOT_RUNNING", "ERROR"}
    assert {s.name for s in hotstate.TaskState} == {"CREATED", "RESTORING", "RUNNING", "SUSPENDED", "CLOSED"}
    for attr in ("STRING", "BYTES", "INT64", "JSON", "of", "Serde"):
        assert hasattr(hotstate.serde, attr)
    for cb in ("on_restore_start", "on_batch_restored", "on_restore_end"):
        assert callable(getattr(hotstate.RestoreListener, cb))
    for m in ("stream", "set_restore_listener", "start", "wait_until_running", "tasks", "store", "close", "run"):
        assert callable(getattr(hotstate.App, m))
    tp = hotstate.TopicPartition("t", 1)
    assert (tp.topic, tp.partition) == ("t", 1) and tuple(tp) == ("t", 1)
    assert hotstate.TaskInfo("0_1", [tp], hotstate.TaskState.RUNNING).changelog_offsets == {}


def test_processing_handler_api_shapes():
    # what a processing_exception_handler callable receives and returns (issue 10)
    assert {r.name for r in hotstate.ProcessingHandlerResponse} == {"CONTINUE", "FAIL"}
    ctx = hotstate.ErrorHandlerContext("t", 1, 5, 1000, [("h", b"v")], "0_1", b"k", b"v")
    assert (ctx.topic, ctx.partition, ctx.offset, ctx.timestamp, ctx.task_id) == ("t", 1, 5, 1000, "0_1")
    assert (ctx.headers, ctx.source_raw_key, ctx.source_raw_value) == ([("h", b"v")], b"k", b"v")


def test_issue_11_window_names():
    # names fixed by issue 11, keyword arguments included
    w = hotstate.windows
    assert w.tumbling(size_ms=10, grace_ms=0).retention_ms == 10
    assert w.hopping(size_ms=10, advance_ms=5, grace_ms=1, retention_ms=20).retention_ms == 20
    assert w.sliding(time_difference_ms=10, grace_ms=1, retention_ms=30).retention_ms == 30
    assert w.session(inactivity_gap_ms=10, grace_ms=1, retention_ms=30).retention_ms == 30
    from hotstate.dsl.windowed import WindowedTable
    assert callable(WindowedTable.suppress_until_window_closes)
    assert callable(hotstate.serde.session_windowed) and callable(hotstate.serde.time_windowed)


def test_issue_11_processor_api_names():
    # names fixed by issue 11's "Timers and the processor API"
    assert {p.name for p in hotstate.Punctuation} == {"STREAM_TIME", "WALL_CLOCK_TIME"}
    for m in ("with_timestamp", "with_headers", "with_key", "with_value"):
        assert callable(getattr(hotstate.Record, m))
    for m in ("init", "process", "close"):
        assert callable(getattr(hotstate.Processor, m))
    from hotstate.processor import Context
    for m in ("schedule", "forward", "store"):
        assert callable(getattr(Context, m))
    assert callable(hotstate.Cancellable.cancel)
