"""App lifecycle without a broker: an App in CREATED, its transition table, close(), errors."""
from __future__ import annotations

import itertools

import pytest

import hotstate
from hotstate import AppState, serde
from hotstate.errors import HotstateError, IllegalStateTransition, TopologyError

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
