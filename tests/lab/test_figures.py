"""The typed figures: a run's figures from what it measured (strictly) and from results.json."""

from __future__ import annotations

import dataclasses

import pytest
from test_report import RESULTS

from healthz.lab.figures import RunFigures


def test_a_measured_key_without_a_field_is_a_mistake_and_an_old_file_s_is_ignored():
    # results.json also carries figures derived from the fields (pool_capacity ...): not measured ones.
    fields = {f.name for f in dataclasses.fields(RunFigures)}
    data = {k: v for k, v in RESULTS[0].to_dict().items() if k in fields}
    assert RunFigures.from_dict(data, strict=True) == RESULTS[0]
    with pytest.raises(ValueError, match="no field for: sessions_per_minute"):
        RunFigures.from_dict({**data, "sessions_per_minute": 1.0}, strict=True)
    assert RunFigures.from_dict({**data, "sessions_per_minute": 1.0}) == RESULTS[0]
