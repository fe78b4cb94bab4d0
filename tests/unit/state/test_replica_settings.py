"""What replicas sharing Redis compare (gateway/state/agreement.py)."""

from __future__ import annotations

from gateway.config import Config
from gateway.state.agreement import agreed_settings, disagreements


def test_each_bound_a_replica_enforces_alone_changes_what_it_writes() -> None:
    base = agreed_settings(Config())
    for change in ({"limits": {"client_key": {"ipv6_prefix_length": 48}}},
                   {"trusted_proxies": ["10.0.0.0/8"]},
                   {"limits": {"max_open_uploads_per_client": 3}},
                   {"auth": {"rules": [{"repository": "**", "users": ["*"],
                                        "actions": ["pull"], "anonymous": True}]}}):
        other = agreed_settings(Config.model_validate(change))
        assert disagreements(base, {"r": {"settings": other}}), change


def test_an_older_replica_or_a_stray_entry_is_no_disagreement() -> None:
    own = agreed_settings(Config())
    older = {k: v for k, v in own.items() if k != "limits.client_key"}
    assert disagreements(own, {"old": {"settings": older}}) == {}
    assert disagreements(own, {"junk": {"settings": "x"}, "junk2": {}}) == {}
    named = disagreements(own, {"id": {"host": "node-b", "pid": 7,
                                       "settings": {**own, "auth.mode": "htpasswd"}}})
    assert named == {"auth.mode": [("node-b (pid 7)", "htpasswd")]}
