"""What a child sends when its message would be large: a success's result as it is (the
supervisor keeps it in a file); anything else made to fit below `wire.LARGE_MESSAGE`."""

from __future__ import annotations

import json

from taiat.forking import wire


def body(message: dict) -> bytes:
    framed = wire.encode_message(message, 64 << 20)
    (size,) = wire.HEADER.unpack_from(framed)
    assert size == len(framed) - wire.HEADER.size
    return framed[wire.HEADER.size :]


def test_a_large_result_is_sent_whole_between_its_prefix_and_suffix() -> None:
    result = {"rows": ["r" * 100] * 30000}
    sent = body({"ok": True, "result": result})
    assert len(sent) > wire.LARGE_MESSAGE
    assert sent.startswith(wire.RESULT_PREFIX) and sent.endswith(wire.RESULT_SUFFIX)
    middle = sent[len(wire.RESULT_PREFIX) : -len(wire.RESULT_SUFFIX)]
    assert json.loads(middle) == result


def test_a_large_error_is_cut_to_fit() -> None:
    sent = body(wire.error_message("e" * (3 << 20), "t" * (3 << 20)))
    assert len(sent) <= wire.LARGE_MESSAGE
    message = json.loads(sent)
    assert message["ok"] is False
    assert message["error"].startswith("e" * 1000)
    assert message["error"].endswith(f"({(3 << 20) - (64 << 10)} more characters cut)")
    assert message["traceback"].endswith("more characters cut)")


def test_a_large_error_of_escaped_characters_still_fits() -> None:
    sent = body({**wire.error_message("\u4e2d" * (1 << 20)), "final": True})
    assert len(sent) <= wire.LARGE_MESSAGE
    assert json.loads(sent)["final"] is True


def test_a_large_plan_is_refused_in_words() -> None:
    sent = body({"ok": True, "plan": {"steps": ["s" * 100] * 30000}})
    message = json.loads(sent)
    assert message["ok"] is False
    assert "over the 1048576 bytes a plan may take" in message["error"]
