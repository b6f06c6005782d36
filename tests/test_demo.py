"""The README's main job runs end to end and names the builder that logged a different hash."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trustix_p2p.demo import run_demo


def test_demo_runs_four_real_nodes_and_names_chuck(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run_demo(tmp_path) == 0
    out = capsys.readouterr().out
    assert "3 of 4 builders logged" in out
    assert "disagreeing: chuck" in out
    votes = json.loads((tmp_path / "summary.json").read_text())
    assert sorted(len(v) for v in votes.values()) == [1, 3]
    assert ["chuck"] in votes.values()
