"""Notices as SNS accepts them, and a notifier that never fails its caller."""

from __future__ import annotations

import logging

import pytest

from skiff.notify import MAX_SUBJECT, Notice, Notifier
from tests.aws_fixtures import Subscriber


def test_a_subject_is_ascii_one_line_and_short_enough_for_sns() -> None:
    notice = Notice("candidate-rejected", "v1 rejected:\nscore — " + "ä" * 200)
    subject = notice.subject("skiff-dev")
    assert subject.isascii() and "\n" not in subject and len(subject) <= MAX_SUBJECT
    assert subject.startswith("[skiff-dev] v1 rejected: score") and subject.endswith("...")


def test_an_unknown_event_is_refused_with_the_known_ones() -> None:
    with pytest.raises(ValueError, match="expected a notice event in .*got: 'exploded'"):
        Notice("exploded", "?")


def test_email_subscribers_get_readable_lines_without_empty_details() -> None:
    text = Notice("training-failed", "job failed", {"reason": "OOM", "next_job": None}).as_text("skiff-dev")
    assert text == "job failed\n\nstack: skiff-dev\nevent: training-failed\nreason: OOM\n"


def test_without_a_topic_nothing_is_sent(aws: None) -> None:
    assert Notifier(None, "skiff-dev").send(Notice("rolled-back", "rolled back")) is None


def test_a_notice_reaches_a_subscriber_as_json(subscriber: Subscriber) -> None:
    sent = Notifier(subscriber.topic_arn, "skiff-dev").send(Notice("rolled-back", "rolled back", {"version": "v1"}))
    (notification,) = subscriber.received()
    assert notification["MessageId"] == sent
    assert notification["Message"] == {
        "stack": "skiff-dev",
        "event": "rolled-back",
        "summary": "rolled back",
        "version": "v1",
    }


def test_a_failed_publish_is_logged_not_raised(aws: None, caplog: pytest.LogCaptureFixture) -> None:
    gone = "arn:aws:sns:eu-west-1:123456789012:deleted-topic"
    with caplog.at_level(logging.ERROR, logger="skiff.notify"):
        assert Notifier(gone, "skiff-dev").send(Notice("rolled-back", "rolled back")) is None
    assert "notification not sent (rolled back)" in caplog.text
