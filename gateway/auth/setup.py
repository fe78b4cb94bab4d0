"""Putting authentication into the gateway application (``auth.mode`` htpasswd or aws)."""

from __future__ import annotations

import logging

from aiohttp import web

from gateway.auth.aws import AwsIdentities
from gateway.auth.challenge import Challenger
from gateway.auth.check_queue import CheckQueue
from gateway.auth.client_keys import CLIENT_KEYS, client_keys
from gateway.auth.forwarded import PROXY_TRUST, ProxyTrust, parse_networks
from gateway.auth.htpasswd import HtpasswdFile
from gateway.auth.logins import AwsBackend, HtpasswdBackend, Logins, PasswordBackend
from gateway.auth.middleware import Authenticator
from gateway.auth.ratelimit import FailedLogins
from gateway.auth.rules import AccessRules, EcrRepository, Rule
from gateway.auth.shared_failures import SharedFailedLogins
from gateway.auth.token_server import TokenServer
from gateway.auth.tokens import TokenService, load_signing_key
from gateway.config import AuthConfig, Config
from gateway.ecr.clients import ClientFactory, Credentials, Upstream
from gateway.ecr.retry import RetryPolicy
from gateway.ecr.routing import Router
from gateway.oci.context import ACCESS_CHECK, CATALOG_FILTER
from gateway.state.agreement import LiveReplicas
from gateway.state.connect import RedisConnection

log = logging.getLogger(__name__)

AUTHENTICATOR = web.AppKey("authenticator", Authenticator)


def build_rules(auth: AuthConfig, router: Router | None = None) -> AccessRules:
    """The configured rules; in aws mode with none configured, every authenticated identity
    passes the gateway and IAM alone decides. Callers without credentials no rule speaks
    for may pull where the serving route or mirror has ``anonymous_pull``."""
    rules = [Rule(r.ecr_repository or r.repository, frozenset(r.users), frozenset(r.groups),
                  frozenset(r.actions), r.anonymous, r.ecr_repository is not None)
             for r in auth.rules]
    if not rules and auth.mode == "aws":
        rules = AccessRules.allow_all().rules

    def anonymous_default(name: str, ns: str | None) -> bool:
        return router is not None and router.anonymous_pull(name, ns)

    def ecr_of(name: str, ns: str | None) -> EcrRepository | None:
        if router is None:
            return None
        # The request's own ns counts: the same name may resolve elsewhere through a mirror.
        target = router.resolve(name, ns)
        if target is None:
            return None
        return EcrRepository(target.repository, router.mirrored(target),
                             closed_mirror=router.through_mirror(ns)
                             and not target.route.anonymous_pull)

    return AccessRules(rules, auth.groups, anonymous_default, ecr_of)


def install(app: web.Application, config: Config, clients: ClientFactory,
            policy: RetryPolicy, router: Router | None = None,
            redis: RedisConnection | None = None,
            live: LiveReplicas | None = None) -> Authenticator | None:
    """With ``redis`` (replicas sharing it), failed logins are counted across replicas;
    ``live``: how many there are, each holding its part of the limits when Redis cannot
    count."""
    auth = config.auth
    if auth.mode == "none":
        return None
    key = load_signing_key(auth.token.signing_key_file, config.data_path)
    tokens = TokenService(key, auth.token.issuer, auth.token.service, auth.token.ttl_seconds,
                          auth.token.refresh_ttl_seconds)
    rules = build_rules(auth, router)
    identities: AwsIdentities | None = None
    backend: PasswordBackend
    if auth.mode == "aws":
        up = config.upstream

        def upstream_of(credentials: Credentials) -> Upstream:
            return Upstream(region=up.region, endpoint_url=up.endpoint_url,
                            access_key_id=credentials.access_key_id,
                            secret_access_key=credentials.secret_access_key,
                            session_token=credentials.session_token)

        identities = AwsIdentities(clients, upstream_of, policy)
        backend = AwsBackend(identities)
    else:
        assert auth.htpasswd_file is not None  # checked with the configuration
        backend = HtpasswdBackend(HtpasswdFile(auth.htpasswd_file,
                                               CheckQueue(auth.max_waiting_password_checks)))
    limits = auth.rate_limit
    keys = app.get(CLIENT_KEYS) or client_keys(config)
    shared = None
    if redis is not None:
        shared = SharedFailedLogins(redis, config.state.key_prefix, limits.window_seconds,
                                    limits.max_failures_per_user,
                                    limits.max_failures_per_address, keys, live=live)

        async def close_shared(app: web.Application) -> None:
            await shared.close()

        app.on_cleanup.append(close_shared)
    logins = Logins(backend, FailedLogins(limits.window_seconds, limits.max_failures_per_user,
                                          limits.max_failures_per_address, keys=keys), shared)
    trust = app.get(PROXY_TRUST) or ProxyTrust(parse_networks(config.trusted_proxies))
    app[PROXY_TRUST] = trust
    challenger = Challenger(auth.token.realm, auth.token.service,
                            frozenset(host.lower() for host in auth.token.realm_hosts), trust,
                            config.listen)
    authenticator = Authenticator(tokens, rules, logins, challenger, identities)
    app.middlewares.append(authenticator.middleware)
    app[ACCESS_CHECK] = authenticator.check_access
    app[CATALOG_FILTER] = authenticator.may_pull
    app[AUTHENTICATOR] = authenticator
    TokenServer(tokens, rules, logins).add_routes(app)
    log.info("authentication: %s, %d access rules, tokens signed with %s (kid %s)", auth.mode,
             len(rules.rules), key.algorithm, key.kid)
    return authenticator
