"""Shared test set-up: quiet TensorFlow, a fixed seed per test, the toolchain skip rule."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(0)
    yield


def skip_or_fail(reason: str) -> None:
    """Skips a test whose toolchain is missing, saying why; fails instead under
    ``KERAS_LOWPREC_REQUIRE_FIRMWARE=1`` (set by ``.ci/run``), where every toolchain test must run."""
    if os.environ.get("KERAS_LOWPREC_REQUIRE_FIRMWARE") == "1":
        pytest.fail(f"firmware tests required but: {reason}")
    pytest.skip(reason)
