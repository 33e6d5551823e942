"""Gateway API keys: stored hashed, checked in constant time, per site, revocable."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from atmpnet.errors import ConfigurationError
from atmpnet.settings import Settings
from atmpnet.site.site_keys import KeyRole, SiteKeyStore, default_keys_path, split_key


def test_a_new_key_authenticates_as_its_site(tmp_path: Path) -> None:
    store = SiteKeyStore(tmp_path / "keys.json")
    key = store.add(site_id="site-a", label="MES line 2")
    principal = store.authenticate(key)
    assert principal is not None
    assert (principal.role, principal.site_id, principal.label) == (KeyRole.SITE, "site-a", "MES line 2")
    assert principal.key_id == key.split("_")[1]
    assert key.startswith("atmp_") and len(key) > 50


def test_the_key_file_holds_no_secret_and_only_its_owner_reads_it(tmp_path: Path) -> None:
    path = tmp_path / "gateway" / "keys.json"
    store = SiteKeyStore(path)
    keys = [
        store.add(site_id="site-a"),
        store.add(site_id="site-b"),
        store.add(site_id=None, role=KeyRole.NETWORK),
    ]
    text = path.read_text()
    for key in keys:
        key_id, secret = split_key(key) or ("", "")
        assert secret not in text and key not in text
        assert key_id in text  # the id is public: it names the key in logs
    records = json.loads(text)["keys"]
    assert {r["algorithm"] for r in records} == {"hmac-sha256"}
    assert len({r["salt"] for r in records}) == 3  # a salt per key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-key",
        "atmp_000000000000_" + "x" * 43,  # unknown id
        "Bearer atmp_abc",
    ],
)
def test_malformed_or_unknown_keys_are_refused(tmp_path: Path, token: str) -> None:
    store = SiteKeyStore(tmp_path / "keys.json")
    store.add(site_id="site-a")
    assert store.authenticate(token) is None


def test_a_wrong_secret_for_a_known_id_is_refused(tmp_path: Path) -> None:
    store = SiteKeyStore(tmp_path / "keys.json")
    key = store.add(site_id="site-a")
    tampered = key[:-1] + ("A" if key[-1] != "A" else "B")
    assert store.authenticate(tampered) is None
    assert store.authenticate(key) is not None


def test_keys_of_two_sites_stay_apart(tmp_path: Path) -> None:
    store = SiteKeyStore(tmp_path / "keys.json")
    a, b = store.add(site_id="site-a"), store.add(site_id="site-b")
    pa, pb = store.authenticate(a), store.authenticate(b)
    assert pa is not None and pb is not None
    assert (pa.site_id, pb.site_id) == ("site-a", "site-b")


def test_a_running_store_sees_keys_added_and_revoked_by_another_process(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    serving = SiteKeyStore(path)  # the gateway's store
    assert serving.authenticate("atmp_000000000000_" + "x" * 43) is None  # loads the empty state
    cli = SiteKeyStore(path)  # `atmpnet gateway add-key` in another process
    key = cli.add(site_id="site-a")
    assert serving.authenticate(key) is not None
    key_id = key.split("_")[1]
    assert cli.revoke(key_id)
    assert serving.authenticate(key) is None
    assert not cli.revoke(key_id)  # already revoked
    assert [r.revoked_at is not None for r in serving.records()] == [True]  # kept for the audit trail


def test_site_ids_follow_the_envelope_pattern_and_network_keys_have_none(tmp_path: Path) -> None:
    store = SiteKeyStore(tmp_path / "keys.json")
    with pytest.raises(ConfigurationError, match="site id"):
        store.add(site_id="Site A")
    with pytest.raises(ConfigurationError, match="site id"):
        store.add(site_id=None)
    with pytest.raises(ConfigurationError, match="no site"):
        store.add(site_id="site-a", role=KeyRole.NETWORK)
    network = store.authenticate(store.add(site_id=None, role=KeyRole.NETWORK))
    assert network is not None and network.role is KeyRole.NETWORK and network.site_id is None


def test_a_corrupt_key_file_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("{not json")
    with pytest.raises(ConfigurationError, match="cannot read"):
        SiteKeyStore(path).authenticate("atmp_000000000000_" + "x" * 43)


def test_the_key_file_lives_under_data_dir_unless_set(tmp_path: Path) -> None:
    assert default_keys_path(Settings(data_dir=tmp_path)) == tmp_path / "gateway" / "keys.json"
    assert default_keys_path(Settings(data_dir=tmp_path, gateway_keys_path=tmp_path / "k.json")) == (
        tmp_path / "k.json"
    )


def test_the_key_file_is_owner_only_even_over_a_leftover_temporary_file(tmp_path: Path) -> None:
    # a crash can leave the temporary file behind, with whatever mode it was given then
    path = tmp_path / "keys.json"
    leftover = tmp_path / f".keys.json.{os.getpid()}.tmp"
    leftover.write_text("{}")
    leftover.chmod(0o644)
    SiteKeyStore(path).add(site_id="site-a")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
