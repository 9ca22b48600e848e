"""After a failed publish a producer process pauses publishing, then lets one caller try."""

from __future__ import annotations

from eventrelay.worker.producer.broker import PublishPause


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_failed_publish_pauses_every_caller_until_the_pause_is_over() -> None:
    clock = Clock()
    pause = PublishPause(seconds=10, clock=clock)
    assert pause.may_publish() and not pause.paused()
    pause.failed()
    clock.now += 9.9
    assert pause.paused() and not pause.may_publish()
    clock.now += 0.2
    assert not pause.paused()


def test_after_the_pause_one_caller_tries_and_its_outcome_decides_for_the_others() -> None:
    clock = Clock()
    pause = PublishPause(seconds=10, clock=clock)
    pause.failed()
    clock.now += 10.1
    assert pause.may_publish()  # the probe
    assert not pause.may_publish()  # the others wait while it tries
    pause.failed()
    clock.now += 5
    assert not pause.may_publish()  # the broker is still away: paused again
    clock.now += 5.1
    assert pause.may_publish()
    pause.succeeded()
    assert pause.may_publish() and pause.may_publish() and not pause.paused()
