"""The main job's development tokens: a site it lacks is added, the others stay valid."""

from __future__ import annotations

import json
import stat
from pathlib import Path

from atmpnet.mainjob import _development_tokens
from atmpnet.settings import ApiToken, Settings
from pydantic import SecretStr


def _secrets(settings: Settings, sites: list[str]) -> dict[str, str]:
    made = _development_tokens(settings, sites)
    assert made is not None
    tokens, path = made
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert {t.site_id for t in tokens if t.role == "site"} == set(sites)
    return {t.name: t.token.get_secret_value() for t in tokens if t.token is not None}


def test_a_new_site_gets_tokens_and_the_others_keep_theirs(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = _secrets(settings, ["site-a", "site-b"])
    assert _secrets(settings, ["site-a", "site-b"]) == first  # the same network: kept
    grown = _secrets(settings, ["site-a", "site-b", "site-c"])  # --keep with more sites, or mirrored in
    assert {k: v for k, v in grown.items() if k in first} == first
    assert "site-site-c" in grown
    assert len(json.loads((tmp_path / "api-tokens.json").read_text())) == len(grown)
    other = _secrets(settings, ["site-x"])  # another network: new tokens
    assert not set(other.values()) & set(grown.values())


def test_configured_tokens_need_no_file(tmp_path: Path) -> None:
    ops = ApiToken(name="ops", role="operations", token=SecretStr("x" * 32))
    settings = Settings(data_dir=tmp_path, api_tokens=[ops])
    assert _development_tokens(settings, ["site-a"]) is None
    assert not (tmp_path / "api-tokens.json").exists()
