"""Access rules: first match wins, groups, anonymous pull, catalog, and default deny."""

from __future__ import annotations

import pytest

from gateway.auth.rules import AccessRules, EcrRepository, Rule, compile_pattern
from gateway.auth.scopes import Scope, needed_scope, parse_scope, parse_scopes

ALL = frozenset({"pull", "push", "delete"})
PULL = frozenset({"pull"})


def rule(repository: str, actions: set[str], users: set[str] | None = None,
         groups: set[str] | None = None, anonymous: bool = False) -> Rule:
    return Rule(repository, frozenset(users or ()), frozenset(groups or ()),
                frozenset(actions), anonymous)


@pytest.fixture
def rules() -> AccessRules:
    return AccessRules([
        rule("team-a/secret/**", set(), groups={"team-a"}),  # carved out first
        rule("team-a/**", {"pull", "push", "delete"}, groups={"team-a"}),
        rule("team-a/**", {"pull"}, users={"auditor"}),
        rule("public/*", {"pull", "push"}, users={"*"}, anonymous=True),
        rule("users/{user}/**", {"pull", "push", "delete"}, users={"*"}),
        rule("**", {"catalog"}, users={"admin"}),
    ], {"team-a": ["alice", "ci-a"]})


@pytest.mark.parametrize(("subject", "name", "expected"), [
    ("alice", "team-a/app", ALL),
    ("ci-a", "team-a/deep/nested/app", ALL),
    ("alice", "team-a/secret/keys", frozenset()),  # the first matching rule decides
    ("auditor", "team-a/app", {"pull"}),
    ("bob", "team-a/app", frozenset()),  # default deny
    ("bob", "public/base", {"pull", "push"}),
    (None, "public/base", {"pull"}),  # anonymous callers only ever pull
    (None, "public/a/b", frozenset()),  # `*` stays within one path segment
    (None, "team-a/app", frozenset()),
    ("bob", "users/bob/tools", ALL),
    ("bob", "users/alice/tools", frozenset()),
    (None, "users/bob/tools", frozenset()),
    ("admin", "team-a/app", frozenset()),  # catalog is not a repository action
])
def test_first_match_decides(rules: AccessRules, subject: str | None, name: str,
                             expected: set[str]) -> None:
    assert rules.allowed(subject, name) == frozenset(expected)


def test_catalog_right(rules: AccessRules) -> None:
    assert rules.may_list_catalog("admin")
    assert not rules.may_list_catalog("alice")
    assert not rules.may_list_catalog(None)


def test_grant_is_the_intersection(rules: AccessRules) -> None:
    granted = rules.grant("auditor", parse_scopes([
        "repository:team-a/app:pull,push", "repository:team-b/app:pull",
        "registry:catalog:*", "repository:team-a/app:delete"]))
    assert granted == [Scope("repository", "team-a/app", frozenset({"pull"}))]
    assert rules.grant("admin", parse_scopes(["registry:catalog:*"])) == [
        Scope("registry", "catalog", frozenset({"*"}))]


def test_route_default_applies_only_when_no_rule_speaks() -> None:
    rules = AccessRules([rule("mirror/private/**", set(), anonymous=True)], {},
                        anonymous_default=lambda name, ns: name.startswith("mirror/"))
    assert rules.allowed(None, "mirror/library/nginx") == {"pull"}
    assert rules.allowed(None, "mirror/private/x") == frozenset()  # a rule said no
    assert rules.allowed(None, "team/app") == frozenset()
    assert rules.allowed("bob", "mirror/library/nginx") == frozenset()  # callers with
    # credentials are judged by the rules alone


def test_allow_all_lets_every_authenticated_caller_do_everything() -> None:
    rules = AccessRules.allow_all()
    assert rules.allowed("AKIDANY", "x/y") == ALL
    assert rules.may_list_catalog("AKIDANY")
    assert rules.allowed(None, "x/y") == frozenset()


def test_patterns() -> None:
    regex = compile_pattern("a/*/c?")
    assert regex is not None
    assert regex.match("a/b/cd") and not regex.match("a/b/x/cd") and not regex.match("a/b/cde")
    star = compile_pattern("**")
    assert star is not None and star.match("any/thing/at/all")
    assert compile_pattern("users/{user}") is None  # needs a user
    dots = compile_pattern("a.b/**")
    assert dots is not None and not dots.match("axb/c")  # regex characters are literal


@pytest.mark.parametrize(("text", "expected"), [
    ("repository:team/app:pull,push", Scope("repository", "team/app",
                                            frozenset({"pull", "push"}))),
    ("repository:127.0.0.1:5000/app:pull", Scope("repository", "127.0.0.1:5000/app",
                                                 frozenset({"pull"}))),
    ("repository(plugin):x:pull", Scope("repository", "x", frozenset({"pull"}))),
    ("repository:x:*", Scope("repository", "x", frozenset({"pull", "push", "delete"}))),
    ("registry:catalog:*", Scope("registry", "catalog", frozenset({"*"}))),
    ("nonsense", None),
    ("repository::pull", None),
])
def test_parse_scope(text: str, expected: Scope | None) -> None:
    assert parse_scope(text) == expected


def test_post_scopes_are_space_separated() -> None:
    assert len(parse_scopes(["repository:a:pull repository:b:push", "registry:catalog:*"])) == 3


def test_challenge_scopes() -> None:
    assert str(needed_scope("a/b", "push")) == "repository:a/b:pull,push"
    assert str(needed_scope("a/b", "delete")) == "repository:a/b:delete"
    assert str(needed_scope(None, "catalog")) == "registry:catalog:*"


def test_ecr_rules_gate_what_name_rules_grant() -> None:
    """The same names resolve into a mirrored ECR repository (docker-hub/...) or an ordinary
    one; pushes and deletes into the mirrored one need an ``ecr`` rule, pulls do not."""
    mirrored = {"hub/app": EcrRepository("docker-hub/app", True),
                "team/app": EcrRepository("team/app", False),
                "team/locked": EcrRepository("prod/locked", False)}
    rules = AccessRules([
        Rule("docker-hub/**", frozenset({"seeder"}), frozenset(), frozenset({"pull", "push"}),
             ecr=True),
        Rule("prod/**", frozenset({"*"}), frozenset(), frozenset({"pull"}), ecr=True),
        rule("**", {"pull", "push", "delete"}, users={"pusher", "seeder"}),
        rule("**", {"pull"}, anonymous=True),
    ], {}, ecr_of=lambda name, ns: mirrored.get(name))
    assert rules.allowed("pusher", "hub/app") == {"pull"}  # no ECR grant: reads only
    assert rules.allowed("seeder", "hub/app") == {"pull", "push"}  # the ECR rule decides
    assert rules.allowed("pusher", "team/app") == ALL  # not mirrored: name rules alone
    assert rules.allowed("pusher", "team/locked") == {"pull"}  # an ECR rule narrows
    assert rules.allowed(None, "hub/app") == {"pull"}
    assert rules.allowed("pusher", "unrouted") == ALL  # nothing to resolve: name rules
    granted = rules.grant("pusher", parse_scopes(["repository:hub/app:pull,push"]))
    assert granted == [Scope("repository", "hub/app", frozenset({"pull"}))]
    # An ECR rule never widens: no name rule, nothing.
    only_ecr = AccessRules([Rule("**", frozenset({"*"}), frozenset(), ALL, ecr=True)], {},
                           ecr_of=lambda name, ns: mirrored.get(name))
    assert only_ecr.allowed("pusher", "team/app") == frozenset()
    assert not only_ecr.may_list_catalog("pusher")


def test_allow_all_leaves_mirrored_repositories_to_iam() -> None:
    rules = AccessRules(AccessRules.allow_all().rules, {},
                        ecr_of=lambda name, ns: EcrRepository("docker-hub/" + name, True))
    assert rules.allowed("arn:aws:iam::1:user/x", "library/nginx") == ALL


def test_a_mirror_closed_to_anonymous_pulls_is_a_ceiling_for_anonymous_rules() -> None:
    """An anonymous rule opens names here; under a closed mirror's ?ns= it opens nothing,
    while a user's rule still decides there."""
    def ecr_of(name: str, ns: str | None) -> EcrRepository:
        if ns == "docker.io":
            return EcrRepository("docker-hub/" + name, True, closed_mirror=True)
        return EcrRepository(name, False)

    rules = AccessRules([Rule("public/**", frozenset(), frozenset(), PULL, anonymous=True),
                         Rule("**", frozenset({"node"}), frozenset(), PULL)], {},
                        ecr_of=ecr_of)
    assert rules.allowed(None, "public/app") == PULL
    assert rules.allowed(None, "public/app", "docker.io") == frozenset()
    assert rules.allowed("node", "public/app", "docker.io") == PULL
