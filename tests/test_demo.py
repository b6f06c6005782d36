"""The README's main job runs end to end: four real nodes build with real Nix, gossip, the
3-of-4 decision names Chuck, and the real `nix` substitutes only the trusted path."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.nix import require_nix
from trustix_p2p.demo import run_demo

pytestmark = pytest.mark.nix


def test_the_demo_decides_3_of_4_names_chuck_and_nix_substitutes_only_the_trusted_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    require_nix()
    assert run_demo(tmp_path) == 0
    out = capsys.readouterr().out
    assert "dissented  chuck" in out
    assert "hello:    substituted" in out
    assert "only-two: refused (not trusted)" in out
    hello, only_two = json.loads((tmp_path / "summary.json").read_text())
    assert hello["trusted"] and hello["agreed"] == ["alice", "bob", "dan"]
    assert [d["name"] for d in hello["dissented"]] == ["chuck"]
    assert not only_two["trusted"] and only_two["missing"] == ["chuck", "dan"]
    # The demo cleans up: the fresh store is gone, and so are the paths it built.
    assert not (tmp_path / "workstation-store").exists()
    assert not Path(hello["store_path"]).exists()
