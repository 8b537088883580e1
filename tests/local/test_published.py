"""How the local stack routes a request through the inference function's alias."""

from __future__ import annotations

import pytest

from skiff.local.published import pick_version


def test_without_weights_every_request_reaches_the_aliased_version() -> None:
    assert {pick_version("4", {}, draw / 100) for draw in range(100)} == {"4"}


@pytest.mark.parametrize("weight", [0.1, 0.5])
def test_an_extra_version_gets_its_weights_share_of_requests(weight: float) -> None:
    draws = [i / 1000 for i in range(1000)]
    routed = [pick_version("4", {"5": weight}, draw) for draw in draws]
    assert routed.count("5") == pytest.approx(1000 * weight, abs=1)
    assert set(routed) == {"4", "5"}
