"""App lifecycle without a broker: an App in CREATED, its transition table, close(), errors."""
from __future__ import annotations

import itertools
import socket

import pytest

import hotstate
from hotstate import AppState, serde
from hotstate.errors import ConfigError, HotstateError, IllegalStateTransition, StateDirError, TopologyError
from hotstate.state.state_dir import StateDirectory

A = AppState
ALLOWED = {
    (A.CREATED, A.REBALANCING), (A.CREATED, A.PENDING_SHUTDOWN), (A.CREATED, A.ERROR),
    (A.REBALANCING, A.RUNNING), (A.REBALANCING, A.PENDING_SHUTDOWN), (A.REBALANCING, A.ERROR),
    (A.RUNNING, A.REBALANCING), (A.RUNNING, A.PENDING_SHUTDOWN), (A.RUNNING, A.ERROR),
    (A.PENDING_SHUTDOWN, A.NOT_RUNNING), (A.PENDING_SHUTDOWN, A.ERROR),
    (A.ERROR, A.PENDING_SHUTDOWN),
}


def test_new_app_is_created(make_app):
    app = make_app()
    assert app.state is A.CREATED
    assert app.tasks() == []
    assert app.metrics()["records_processed_total"] == 0


def test_close_on_created_app(make_app):
    app = make_app()
    assert app.close() is True
    assert app.state is A.NOT_RUNNING
    assert app.close() is True  # idempotent
    assert app.state is A.NOT_RUNNING


def test_building_after_close_raises(make_app):
    app = make_app()
    app.close()
    with pytest.raises(HotstateError, match=r"stream\(\).*NOT_RUNNING"):
        app.stream("words")
    with pytest.raises(HotstateError, match="set_restore_listener"):
        app.set_restore_listener(hotstate.RestoreListener())
    with pytest.raises(HotstateError, match=r"start\(\)"):
        app.start()


def test_wait_until_running_on_created_app_raises(make_app):
    with pytest.raises(HotstateError, match="CREATED"):
        make_app().wait_until_running(timeout_s=0.1)


def test_start_without_source_raises_topology_error_before_touching_the_broker(make_app):
    app = make_app()
    with pytest.raises(TopologyError, match="no source"):
        app.start()
    assert app.state is A.CREATED


def test_store_queries_before_start(make_app):
    app = make_app()
    app.stream("words", key_serde=serde.STRING).group_by_key().count(store="word-counts")
    ro = app.store("word-counts")
    assert ro.get("hello") is None
    with pytest.raises(KeyError, match="word-counts"):
        app.store("nope")


@pytest.mark.parametrize("frm, to", list(itertools.product(A, A)))
def test_transition_table(make_app, frm, to):
    app = make_app()
    app._state = frm
    if (frm, to) in ALLOWED:
        app._transition(to)
        assert app.state is to
    else:
        with pytest.raises(IllegalStateTransition):
            app._transition(to)
        assert app.state is frm


def test_stream_thread_error_moves_app_to_error_and_close_cleans_up(make_app):
    app = make_app()
    app._transition(A.REBALANCING)
    boom = RuntimeError("boom")
    app._on_error(boom)
    assert app.state is A.ERROR
    with pytest.raises(HotstateError, match="boom"):
        app.wait_until_running(timeout_s=1)
    assert app.close() is True
    assert app.state is A.NOT_RUNNING


def test_tasks_running_callback_toggles_running_and_rebalancing(make_app):
    app = make_app()
    app._on_tasks_running(True)
    assert app.state is A.CREATED  # only moves between REBALANCING and RUNNING
    app._transition(A.REBALANCING)
    app._on_tasks_running(True)
    assert app.state is A.RUNNING
    app.wait_until_running(timeout_s=0.1)
    app._on_tasks_running(False)
    assert app.state is A.REBALANCING


class _ThreadFailingOnStop:
    """Stands in for StreamThread: its shutdown fails (e.g. the final commit raises)."""

    task_manager = None

    def __init__(self, app):
        self._app = app

    def stop(self):
        self._app._on_error(RuntimeError("final commit failed"))

    def join(self, timeout):
        pass

    def is_alive(self):
        return False


def test_close_when_shutdown_fails_does_not_raise(make_app):
    app = make_app()
    app._transition(A.REBALANCING)
    app._thread = _ThreadFailingOnStop(app)
    app.close(timeout_s=1)
    assert app.state in (A.NOT_RUNNING, A.ERROR)


# ---- start() and close() leave nothing behind (issue #10, defect 9) ----

class _FakeStreamThread:
    """Stands in for StreamThread (the broker is not needed): alive from start() until stop() (or, when
    ``stuck``, until ``finish()``)."""

    made: list = []
    stuck = False

    def __init__(self, *args, **kwargs):
        self.task_manager = None
        self.alive = False
        self.stopping = False
        _FakeStreamThread.made.append(self)

    def start(self):
        self.alive = True

    def stop(self):
        self.stopping = True
        if not self.stuck:
            self.alive = False

    def finish(self):
        self.alive = False

    def join(self, timeout=None):
        pass

    def is_alive(self):
        return self.alive


@pytest.fixture
def fake_runtime(monkeypatch):
    """start() without a broker: no topic checks, a fake stream thread."""
    _FakeStreamThread.made = []
    _FakeStreamThread.stuck = False
    monkeypatch.setattr("hotstate.app.StreamThread", _FakeStreamThread)
    monkeypatch.setattr(hotstate.App, "_prepare_topics", lambda self: None)
    return _FakeStreamThread


def _lockable(app) -> bool:
    other = StateDirectory(app.config.state_dir, app.config.app_id)
    try:
        other.lock()
    except StateDirError:
        return False
    other.unlock()
    return True


def test_a_taken_metrics_port_fails_start_with_nothing_running_and_the_state_dir_unlocked(make_app, fake_runtime):
    with socket.socket() as taken:
        taken.bind(("0.0.0.0", 0))
        taken.listen()
        port = taken.getsockname()[1]
        app = make_app(metrics_port=port)
        app.stream("words")
        with pytest.raises(ConfigError, match=f"metrics_port {port}"):
            app.start()
        assert not any(t.alive for t in fake_runtime.made), "no stream thread may run after a failed start()"
        assert app.state is A.CREATED
        assert _lockable(app), "a failed start() must release the state dir"
    app.start()  # the port is free now: the same app starts
    try:
        assert app.state is A.REBALANCING and fake_runtime.made[-1].alive
        assert app._metrics_server is not None and app._metrics_server.port == port
    finally:
        assert app.close() is True
    assert _lockable(app)


def test_close_keeps_the_state_dir_locked_while_the_stream_thread_is_alive(make_app, fake_runtime):
    fake_runtime.stuck = True
    app = make_app()
    app.stream("words")
    app.start()
    thread = fake_runtime.made[-1]
    assert app.close(timeout_s=0.01) is False
    assert thread.stopping and thread.alive
    assert not _lockable(app), "the threads still use the stores: the state dir stays locked"
    assert app.state is A.PENDING_SHUTDOWN
    thread.finish()
    assert app.close(timeout_s=0.01) is True, "closing again once the threads ended finishes the job"
    assert app.state is A.NOT_RUNNING
    assert _lockable(app)


def test_the_stream_thread_ends_only_after_the_state_updater(make_app):
    """App.close watches the stream thread; a state updater that outlived its shutdown timeout may still hold
    stores open, so the stream thread waits for it before ending (and the state dir stays locked meanwhile)."""
    from types import SimpleNamespace

    from hotstate.runtime.stream_thread import StreamThread

    class UpdaterPastItsTimeout:
        alive = True

        def shutdown(self, timeout_s):
            if timeout_s is None:  # waits until the thread ended; with a timeout, it elapses first here
                self.alive = False

    app = make_app()
    thread = StreamThread(app.config, app._topology, app._state_dir, None, app._metrics, lambda ok: None,
                          lambda exc: None)
    updater = UpdaterPastItsTimeout()
    closed = SimpleNamespace(close=lambda: None)
    tm = SimpleNamespace(shutdown=lambda clean: None, producer=SimpleNamespace(flush=lambda t: 0))
    thread._shutdown([closed], tm, updater, closed, True)
    assert not updater.alive, "the stream thread ended while the state updater still ran"


def test_a_group_member_that_fails_to_start_leaves_no_consumer_open(make_app, monkeypatch):
    """Issue #10, suspected and confirmed: the librdkafka consumers created before the group member leaked
    when the member failed to start."""
    from types import SimpleNamespace

    from hotstate.runtime import stream_thread

    made = []

    def fake_consumer(cfg):
        c = SimpleNamespace(closed=False)
        c.close = lambda: setattr(c, "closed", True)
        made.append(c)
        return c

    def failing_member(*a, **kw):
        raise RuntimeError("no broker answered the group member")

    monkeypatch.setattr(stream_thread.clients, "main_consumer", fake_consumer)
    monkeypatch.setattr(stream_thread.clients, "end_offsets_consumer", fake_consumer)
    monkeypatch.setattr(stream_thread.clients, "producer", lambda *a, **kw: SimpleNamespace(flush=lambda t: 0))
    monkeypatch.setattr(stream_thread, "GroupMembership", failing_member)
    errors = []
    app = make_app()
    app.stream("words")
    thread = stream_thread.StreamThread(app.config, app._topology, app._state_dir, None, app._metrics,
                                        lambda ok: None, errors.append)
    thread.run()
    assert [str(e) for e in errors] == ["no broker answered the group member"]
    assert len(made) == 2 and all(c.closed for c in made)
