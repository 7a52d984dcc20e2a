"""Session fixture: a metric-weights directory of tiny random models in the release layout."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.metrics.tiny_weights import write_metric_weights


@pytest.fixture(scope="session")
def metric_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_metric_weights(tmp_path_factory.mktemp("metric-weights"))
