"""Tests for istiod_native: golden cases transcribed from istio/istio
pilot/pkg/security/authz/builder/testdata/http/*.yaml (snapshot 86c9f01) and
policy_applier_test.go, plus `envoy --mode validate` of the rendered configs.

Expected dicts were written by hand from the goldens (protojson camelCase ->
proto snake_case).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402
import istiod_native as N  # noqa: E402

RBAC_TYPE = "type.googleapis.com/envoy.extensions.filters.http.rbac.v3.RBAC"
JWT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication"
ANY_PERM = [{"and_rules": {"rules": [{"any": True}]}}]
ANY_PRIN = [{"and_ids": {"ids": [{"any": True}]}}]


def rbac_filter(**typed):
    return {"name": "envoy.filters.http.rbac", "typed_config": {"@type": RBAC_TYPE, **typed}}


def url_path(sm):
    return {"url_path": {"path": sm}}


def uri_template(t):
    return {
        "uri_template": {
            "name": "uri-template",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.path.match.uri_template.v3.UriTemplateMatchConfig",
                "path_template": t,
            },
        }
    }


def jwt_md(claim, sm):
    return {
        "metadata": {
            "filter": "envoy.filters.http.jwt_authn",
            "path": [{"key": "payload"}, {"key": claim}],
            "value": {"string_match": sm},
        }
    }


def authn(sm):
    return {"authenticated": {"principal_name": sm}}


# ---------------------------------------------------------------------------
# RBAC goldens (builder testdata/http)
# ---------------------------------------------------------------------------


def test_allow_nil_rule_is_allow_nothing():
    # allow-nil-rule-in.yaml / -out.yaml
    got = N.render_rbac([{"name": "allow-none", "namespace": "foo"}])
    assert got == [
        rbac_filter(
            rules={
                "policies": {
                    "ns[foo]-policy[allow-none]-rule[0]": {
                        "permissions": [{"not_rule": {"any": True}}],
                        "principals": [{"not_id": {"any": True}}],
                    }
                }
            },
            shadow_rules_stat_prefix="istio_dry_run_allow_",
        )
    ]


def test_allow_empty_rule_is_allow_all():
    # allow-empty-rule-in.yaml / -out.yaml
    got = N.render_rbac([{"name": "allow-all", "namespace": "foo", "rules": [{}]}])
    assert got == [
        rbac_filter(
            rules={"policies": {"ns[foo]-policy[allow-all]-rule[0]": {"permissions": ANY_PERM, "principals": ANY_PRIN}}},
            shadow_rules_stat_prefix="istio_dry_run_allow_",
        )
    ]


def test_deny_empty_rule_and_audit():
    # deny-empty-rule-*.yaml and audit-full-rule-*.yaml
    deny = N.render_rbac([{"name": "deny-all", "namespace": "foo", "action": "DENY", "rules": [{}]}])
    assert deny == [
        rbac_filter(
            rules={
                "action": "DENY",
                "policies": {"ns[foo]-policy[deny-all]-rule[0]": {"permissions": ANY_PERM, "principals": ANY_PRIN}},
            },
            shadow_rules_stat_prefix="istio_dry_run_allow_",
        )
    ]
    audit = N.render_rbac([{"name": "audit-all", "namespace": "foo", "action": "AUDIT", "rules": [{}]}])
    assert audit[0]["typed_config"]["rules"]["action"] == "LOG"


def test_deny_and_allow_order_and_default_namespace():
    # deny-and-allow-in.yaml -> out1 (DENY) then out2 (ALLOW); AUDIT comes first
    policies = [
        {"name": "httpbin-allow", "namespace": "foo", "action": "ALLOW",
         "rules": [{"from": [{"source": {"principals": ["allow"]}}]}]},
        {"name": "httpbin-deny", "namespace": "foo", "action": "DENY",
         "rules": [{"from": [{"source": {"principals": ["deny"]}}]}]},
    ]
    got = N.render_rbac(policies)

    def one(name, exact, action=None):
        rules = {"policies": {f"ns[foo]-policy[{name}]-rule[0]": {
            "permissions": ANY_PERM,
            "principals": [{"and_ids": {"ids": [{"or_ids": {"ids": [authn({"exact": exact})]}}]}}],
        }}}
        if action:
            rules = {"action": action, **rules}
        return rbac_filter(rules=rules, shadow_rules_stat_prefix="istio_dry_run_allow_")

    assert got == [one("httpbin-deny", "spiffe://deny", "DENY"), one("httpbin-allow", "spiffe://allow")]

    got = N.render_rbac(policies + [{"name": "a", "action": "AUDIT", "rules": [{}]}])
    assert [f["typed_config"]["rules"].get("action", "ALLOW") for f in got] == ["LOG", "DENY", "ALLOW"]
    assert "ns[default]-policy[a]-rule[0]" in got[0]["typed_config"]["rules"]["policies"]


def test_dry_run_allow_and_deny():
    # dry-run-allow-and-deny-in.yaml -> out1 (DENY shadow) / out2 (ALLOW shadow)
    got = N.render_rbac([
        {"name": "httpbin-1", "namespace": "foo", "action": "ALLOW", "dryRun": True,
         "rules": [{"to": [{"operation": {"paths": ["/allow"]}}]}]},
        {"name": "httpbin-2", "namespace": "foo", "action": "DENY", "dryRun": True,
         "rules": [{"to": [{"operation": {"paths": ["/deny"]}}]}]},
    ])

    def pol(path):
        return {"permissions": [{"and_rules": {"rules": [{"or_rules": {"rules": [url_path({"exact": path})]}}]}}],
                "principals": ANY_PRIN}

    assert got == [
        rbac_filter(shadow_rules={"action": "DENY", "policies": {"ns[foo]-policy[httpbin-2]-rule[0]": pol("/deny")}},
                    shadow_rules_stat_prefix="istio_dry_run_deny_"),
        rbac_filter(shadow_rules={"policies": {"ns[foo]-policy[httpbin-1]-rule[0]": pol("/allow")}},
                    shadow_rules_stat_prefix="istio_dry_run_allow_"),
    ]


def test_dry_run_mix_from_kubernetes_objects():
    # dry-run-mix-in.yaml (annotation form) -> one filter with rules + shadow_rules
    def k8s(name, dry, path):
        return {"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
                "metadata": {"name": name, "namespace": "foo", "annotations": {"istio.io/dry-run": dry}},
                "spec": {"action": "ALLOW", "rules": [{"to": [{"operation": {"paths": [path]}}]}]}}

    got = N.render_rbac([k8s("httpbin-1", "true", "/allow"), k8s("httpbin-2", "false", "/another")])
    assert len(got) == 1
    cfg = got[0]["typed_config"]
    assert list(cfg["rules"]["policies"]) == ["ns[foo]-policy[httpbin-2]-rule[0]"]
    assert list(cfg["shadow_rules"]["policies"]) == ["ns[foo]-policy[httpbin-1]-rule[0]"]
    assert cfg["shadow_rules_stat_prefix"] == "istio_dry_run_allow_"


def test_allow_path_templates():
    # allow-path-in.yaml / -out.yaml
    got = N.render_rbac([{"name": "httpbin-1", "namespace": "foo", "rules": [{"to": [{"operation": {
        "paths": ["/exact", "/prefix/*", "*/suffix", "*", "/path/template/{*}", "/{**}/path/template"],
        "notPaths": ["/not-exact", "/not-prefix/*", "*/not-suffix", "*", "/not-path/template/{*}",
                     "/{**}/not-path/template"],
    }}]}]}])
    perm = got[0]["typed_config"]["rules"]["policies"]["ns[foo]-policy[httpbin-1]-rule[0]"]["permissions"]
    assert perm == [{"and_rules": {"rules": [
        {"or_rules": {"rules": [
            url_path({"exact": "/exact"}), url_path({"prefix": "/prefix/"}), url_path({"suffix": "/suffix"}),
            url_path({"safe_regex": {"regex": ".+"}}),
            uri_template("/path/template/*"), uri_template("/**/path/template"),
        ]}},
        {"not_rule": {"or_rules": {"rules": [
            url_path({"exact": "/not-exact"}), url_path({"prefix": "/not-prefix/"}),
            url_path({"suffix": "/not-suffix"}), url_path({"safe_regex": {"regex": ".+"}}),
            uri_template("/not-path/template/*"), uri_template("/**/not-path/template"),
        ]}}},
    ]}}]


def test_trust_domains_field():
    # trust-domains-in.yaml / -out.yaml
    got = N.render_rbac([{"name": "httpbin", "namespace": "foo", "rules": [{"from": [
        {"source": {"trustDomains": ["cluster.local", "another.local"]}},
        {"source": {"notTrustDomains": ["bad*", "untrusted"]}},
    ]}]}])
    prin = got[0]["typed_config"]["rules"]["policies"]["ns[foo]-policy[httpbin]-rule[0]"]["principals"]
    assert prin == [
        {"and_ids": {"ids": [{"or_ids": {"ids": [authn({"prefix": "spiffe://cluster.local/"}),
                                                 authn({"prefix": "spiffe://another.local/"})]}}]}},
        {"and_ids": {"ids": [{"not_id": {"or_ids": {"ids": [
            authn({"safe_regex": {"regex": "spiffe://bad[^/]*/.*"}}),
            authn({"prefix": "spiffe://untrusted/"}),
        ]}}}]}},
    ]


def test_trust_domain_aliases():
    # simple-policy-td-aliases (bundle td1 + alias cluster.local), first principal set
    got = N.render_rbac(
        [{"name": "httpbin", "namespace": "foo", "rules": [{
            "from": [{"source": {"principals": ["cluster.local/ns/rule[0]/sa/from[0]-principal[0]"]}}],
            "to": [{"operation": {"methods": ["rule[0]-to[0]-method[0]"]}}],
        }]}],
        trust_domain="td1", trust_domain_aliases=["cluster.local"],
    )
    prin = got[0]["typed_config"]["rules"]["policies"]["ns[foo]-policy[httpbin]-rule[0]"]["principals"]
    assert prin == [{"and_ids": {"ids": [{"or_ids": {"ids": [
        authn({"exact": "spiffe://td1/ns/rule[0]/sa/from[0]-principal[0]"}),
        authn({"exact": "spiffe://cluster.local/ns/rule[0]/sa/from[0]-principal[0]"}),
    ]}}]}}]


# allow-full-rule-in.yaml, transcribed (rule[1] only keeps the HTTP-relevant parts
# asserted below; the whole thing is also fed to Envoy in the validate tests).
FULL_RULE_POLICY = {
    "name": "httpbin-1", "namespace": "foo",
    "rules": [
        {"from": [{"source": {"serviceAccounts": ["my-ns/my-sa", "sa-only"],
                              "notServiceAccounts": ["my-ns/my-sa-not", "sa-not-only"]}}]},
        {
            "from": [{"source": {
                "principals": ["principal", "principal-prefix-*", "*-suffix-principal", "*"],
                "requestPrincipals": ["requestPrincipals", "requestPrincipals-prefix-*", "*-suffix-requestPrincipals", "*"],
                "namespaces": ["ns", "ns-prefix-*", "*-ns-suffix", "*"],
                "ipBlocks": ["1.2.3.4", "5.6.0.0/16"],
                "remoteIpBlocks": ["1.2.3.4", "5.6.0.0/16"],
                "notPrincipals": ["not-principal", "not-principal-prefix-*", "*-not-suffix-principal", "*"],
                "notRequestPrincipals": ["not-requestPrincipals", "not-requestPrincipals-prefix-*",
                                         "*-not-suffix-requestPrincipals", "*"],
                "notNamespaces": ["not-ns", "not-ns-prefix-*", "*-not-ns-suffix", "*"],
                "notIpBlocks": ["9.0.0.1", "9.2.0.0/16"],
                "notRemoteIpBlocks": ["9.0.0.1", "9.2.0.0/16"],
            }}],
            "to": [{"operation": {
                "methods": ["method", "method-prefix-*", "*-suffix-method", "*"],
                "hosts": ["exact.com", "*.suffix.com", "prefix.*", "*"],
                "ports": ["80", "90"],
                "paths": ["/exact", "/prefix/*", "*/suffix", "*", "/path/template/{*}", "/{**}/path/template"],
                "notMethods": ["not-method", "not-method-prefix-*", "*-not-suffix-method", "*"],
                "notHosts": ["not-exact.com", "*.not-suffix.com", "not-prefix.*", "*"],
                "notPorts": ["8000", "9000"],
                "notPaths": ["/not-exact", "/not-prefix/*", "*/not-suffix", "*", "/not-path/template/{*}",
                             "/{**}/not-path/template"],
            }}],
            "when": [
                {"key": "request.headers[X-header]", "values": ["header", "header-prefix-*", "*-suffix-header", "*"],
                 "notValues": ["not-header", "not-header-prefix-*", "*-not-suffix-header", "*"]},
                {"key": "source.ip", "values": ["10.10.10.10", "192.168.10.0/24"],
                 "notValues": ["90.10.10.10", "90.168.10.0/24"]},
                {"key": "remote.ip", "values": ["10.10.10.10", "192.168.10.0/24"],
                 "notValues": ["90.10.10.10", "90.168.10.0/24"]},
                {"key": "source.namespace", "values": ["ns", "ns-prefix-*", "*-ns-suffix", "*"],
                 "notValues": ["not-ns", "not-ns-prefix-*", "*-not-ns-suffix", "*"]},
                {"key": "source.principal", "values": ["principal", "principal-prefix-*", "*-suffix-principal", "*"],
                 "notValues": ["not-principal", "not-principal-prefix-*", "*-not-suffix-principal", "*"]},
                {"key": "request.auth.principal",
                 "values": ["requestPrincipals", "requestPrincipals-prefix-*", "*-suffix-requestPrincipals", "*",
                            "https://example.com/*"],
                 "notValues": ["not-requestPrincipals", "not-requestPrincipals-prefix-*",
                               "*-not-suffix-requestPrincipals", "*"]},
                {"key": "request.auth.audiences", "values": ["audiences", "audiences-prefix-*", "*-suffix-audiences", "*"],
                 "notValues": ["not-audiences", "not-audiences-prefix-*", "*-not-suffix-audiences", "*"]},
                {"key": "request.auth.presenter", "values": ["presenter", "presenter-prefix-*", "*-suffix-presenter", "*"],
                 "notValues": ["not-presenter", "not-presenter-prefix-*", "*-not-suffix-presenter", "*"]},
                {"key": "request.auth.claims[iss]", "values": ["iss", "iss-prefix-*", "*-suffix-iss", "*"],
                 "notValues": ["not-iss", "not-iss-prefix-*", "*-not-suffix-iss", "*"]},
                {"key": "request.auth.claims[nested1][nested2]",
                 "values": ["nested", "nested-prefix-*", "*-suffix-nested", "*"],
                 "notValues": ["not-nested", "not-nested-prefix-*", "*-not-suffix-nested", "*"]},
                {"key": "destination.ip", "values": ["10.10.10.10", "192.168.10.0/24"],
                 "notValues": ["90.10.10.10", "90.168.10.0/24"]},
                {"key": "destination.port", "values": ["91", "92"], "notValues": ["9001", "9002"]},
                {"key": "connection.sni", "values": ["exact.com", "*.suffix.com", "prefix.*", "*"],
                 "notValues": ["not-exact.com", "*.not-suffix.com", "not-prefix.*", "*"]},
                {"key": "experimental.envoy.filters.a.b[c]", "values": ["exact", "prefix-*", "*-suffix", "*"],
                 "notValues": ["not-exact", "not-prefix-*", "*-not-suffix", "*"]},
            ],
        },
    ],
}


@pytest.fixture(scope="module")
def full_rule():
    warnings = []
    got = N.render_rbac([FULL_RULE_POLICY], warnings=warnings)
    assert warnings == []
    assert len(got) == 1
    return got[0]["typed_config"]["rules"]["policies"]


def test_full_rule_service_accounts(full_rule):
    r0 = full_rule["ns[foo]-policy[httpbin-1]-rule[0]"]
    assert r0 == {"permissions": ANY_PERM, "principals": [{"and_ids": {"ids": [
        {"or_ids": {"ids": [authn({"safe_regex": {"regex": "spiffe://.+/ns/my-ns/(.+/|)sa/my-sa(/.+)?"}}),
                            authn({"safe_regex": {"regex": "spiffe://.+/ns/foo/(.+/|)sa/sa-only(/.+)?"}})]}},
        {"not_id": {"or_ids": {"ids": [
            authn({"safe_regex": {"regex": "spiffe://.+/ns/my-ns/(.+/|)sa/my-sa-not(/.+)?"}}),
            authn({"safe_regex": {"regex": "spiffe://.+/ns/foo/(.+/|)sa/sa-not-only(/.+)?"}}),
        ]}}},
    ]}}]}


def test_full_rule_permission_order_and_values(full_rule):
    rules = full_rule["ns[foo]-policy[httpbin-1]-rule[1]"]["permissions"][0]["and_rules"]["rules"]
    # hosts, methods, paths, ports (from `to`), then `when` permissions in order
    assert rules[0]["or_rules"]["rules"] == [
        {"header": {"name": ":authority", "string_match": {"exact": "exact.com", "ignore_case": True}}},
        {"header": {"name": ":authority", "string_match": {"suffix": ".suffix.com", "ignore_case": True}}},
        {"header": {"name": ":authority", "string_match": {"prefix": "prefix.", "ignore_case": True}}},
        {"header": {"name": ":authority", "present_match": True}},
    ]
    assert rules[2]["or_rules"]["rules"][:3] == [
        {"header": {"name": ":method", "string_match": {"exact": "method"}}},
        {"header": {"name": ":method", "string_match": {"prefix": "method-prefix-"}}},
        {"header": {"name": ":method", "string_match": {"suffix": "-suffix-method"}}},
    ]
    assert rules[6] == {"or_rules": {"rules": [{"destination_port": 80}, {"destination_port": 90}]}}
    assert rules[7] == {"not_rule": {"or_rules": {"rules": [{"destination_port": 8000}, {"destination_port": 9000}]}}}
    assert rules[8] == {"or_rules": {"rules": [
        {"destination_ip": {"address_prefix": "10.10.10.10", "prefix_len": 32}},
        {"destination_ip": {"address_prefix": "192.168.10.0", "prefix_len": 24}},
    ]}}
    assert rules[12]["or_rules"]["rules"][3] == {"requested_server_name": {"safe_regex": {"regex": ".+"}}}
    assert rules[14] == {"metadata": {"filter": "envoy.filters.a.b", "path": [{"key": "c"}], "value": {"or_match": {
        "value_matchers": [{"string_match": {"exact": "exact"}}, {"string_match": {"prefix": "prefix-"}},
                           {"string_match": {"suffix": "-suffix"}}, {"string_match": {"safe_regex": {"regex": ".+"}}}]}}}}
    assert rules[15]["not_rule"]["metadata"]["value"]["or_match"]["value_matchers"][0] == {
        "string_match": {"exact": "not-exact"}}
    assert len(rules) == 16


def test_full_rule_principals(full_rule):
    ids = full_rule["ns[foo]-policy[httpbin-1]-rule[1]"]["principals"][0]["and_ids"]["ids"]
    # principals (spiffe:// prefix), requestPrincipals, namespaces, remoteIpBlocks, ipBlocks, then `when`
    assert ids[0]["or_ids"]["ids"] == [
        authn({"exact": "spiffe://principal"}), authn({"prefix": "spiffe://principal-prefix-"}),
        authn({"safe_regex": {"regex": "spiffe://.*-suffix-principal"}}), authn({"safe_regex": {"regex": ".+"}}),
    ]
    any_ = {"safe_regex": {"regex": ".+"}}
    assert ids[2]["or_ids"]["ids"] == [
        {"and_ids": {"ids": [jwt_md("iss", {"exact": "requestPrincipals"}), jwt_md("sub", {"exact": ""})]}},
        {"and_ids": {"ids": [jwt_md("iss", {"prefix": "requestPrincipals-prefix-"}), jwt_md("sub", any_)]}},
        {"and_ids": {"ids": [jwt_md("iss", any_), jwt_md("sub", {"suffix": "-suffix-requestPrincipals"})]}},
        {"and_ids": {"ids": [jwt_md("iss", any_), jwt_md("sub", any_)]}},
    ]
    assert ids[4]["or_ids"]["ids"][0] == authn({"safe_regex": {"regex": ".*/ns/ns/.*"}})
    assert ids[4]["or_ids"]["ids"][1] == authn({"safe_regex": {"regex": ".*/ns/ns-prefix-.*/.*"}})
    assert ids[6] == {"or_ids": {"ids": [{"remote_ip": {"address_prefix": "1.2.3.4", "prefix_len": 32}},
                                         {"remote_ip": {"address_prefix": "5.6.0.0", "prefix_len": 16}}]}}
    assert ids[8]["or_ids"]["ids"][0] == {"direct_remote_ip": {"address_prefix": "1.2.3.4", "prefix_len": 32}}
    assert ids[10]["or_ids"]["ids"][3] == {"header": {"name": "X-header", "present_match": True}}
    # request.auth.principal "https://example.com/*": split at the last '/'
    assert ids[20]["or_ids"]["ids"][4] == {"and_ids": {"ids": [
        jwt_md("iss", {"exact": "https://example.com"}), jwt_md("sub", any_)]}}


def test_full_rule_claims_are_list_or_string(full_rule):
    ids = full_rule["ns[foo]-policy[httpbin-1]-rule[1]"]["principals"][0]["and_ids"]["ids"]
    values = [{"string_match": {"exact": "nested"}}, {"string_match": {"prefix": "nested-prefix-"}},
              {"string_match": {"suffix": "-suffix-nested"}}, {"string_match": {"safe_regex": {"regex": ".+"}}}]
    one = {"or_match": {"value_matchers": values}}
    assert ids[28] == {"metadata": {
        "filter": "envoy.filters.http.jwt_authn",
        "path": [{"key": "payload"}, {"key": "nested1"}, {"key": "nested2"}],
        "value": {"or_match": {"value_matchers": [{"list_match": {"one_of": one}}, one]}},
    }}
    assert ids[22]["metadata"]["path"] == [{"key": "payload"}, {"key": "aud"}]
    assert ids[24]["metadata"]["path"] == [{"key": "payload"}, {"key": "azp"}]
    assert "not_id" in ids[29] and len(ids) == 30


def test_single_value_claim_is_not_wrapped_in_or():
    got = N.render_rbac([{"name": "p", "rules": [{"when": [
        {"key": "request.auth.claims[realm_access][roles]", "values": ["admin"]}]}]}])
    md = got[0]["typed_config"]["rules"]["policies"]["ns[default]-policy[p]-rule[0]"]["principals"][0]["and_ids"]["ids"][0]
    sm = {"string_match": {"exact": "admin"}}
    assert md["metadata"]["value"] == {"or_match": {"value_matchers": [{"list_match": {"one_of": sm}}, sm]}}


# ---------------------------------------------------------------------------
# Invalid rules: istiod builder skips (ALLOW) or widens (DENY)
# ---------------------------------------------------------------------------


def test_invalid_allow_rule_skipped_with_warning():
    w = []
    got = N.render_rbac([{"name": "p", "namespace": "ns", "rules": [
        {"when": [{"key": "request.auth.bogus", "values": ["x"]}]},
        {"from": [{"source": {"ipBlocks": ["10.0.0.1", "not-an-ip"]}}]},
        None,
        {"to": [{"operation": {"methods": ["GET"]}}]},
    ]}], warnings=w)
    policies = got[0]["typed_config"]["rules"]["policies"]
    assert list(policies) == ["ns[ns]-policy[p]-rule[3]"]
    assert any("skipped invalid rule ns[ns]-policy[p]-rule[0]" in m and "unknown attribute" in m for m in w)
    assert any("skipped invalid rule ns[ns]-policy[p]-rule[1]" in m for m in w)
    assert any("skipped nil rule ns[ns]-policy[p]-rule[2]" in m for m in w)


def test_all_allow_rules_invalid_leaves_empty_allow_filter():
    w = []
    got = N.render_rbac([{"name": "p", "rules": [{"when": [{"key": "destination.port", "values": ["99999"]}]}]}],
                        warnings=w)
    # an ALLOW RBAC with no policies: Envoy denies everything
    assert got == [rbac_filter(rules={}, shadow_rules_stat_prefix="istio_dry_run_allow_")]
    assert len(w) == 1


def test_invalid_deny_value_is_dropped_policy_widened():
    w = []
    got = N.render_rbac([{"name": "d", "action": "DENY", "rules": [{"when": [
        {"key": "source.ip", "values": ["bad", "10.0.0.0/8"]}, {"key": "destination.port", "values": ["x"]}]}]}],
        warnings=w)
    pol = got[0]["typed_config"]["rules"]["policies"]["ns[default]-policy[d]-rule[0]"]
    assert pol["permissions"] == ANY_PERM  # the only port value was invalid -> dropped
    assert pol["principals"] == [{"and_ids": {"ids": [{"or_ids": {"ids": [
        {"direct_remote_ip": {"address_prefix": "10.0.0.0", "prefix_len": 8}}]}}]}}]
    assert len(w) == 2 and all("widened" in m for m in w)


def test_cidr_keeps_host_bits_like_go_netip():
    got = N.render_rbac([{"name": "p", "rules": [{"from": [{"source": {"ipBlocks": ["10.1.2.3/16", "::ffff:1.2.3.4"]}}]}]}])
    ids = got[0]["typed_config"]["rules"]["policies"]["ns[default]-policy[p]-rule[0]"]["principals"][0]["and_ids"]["ids"]
    assert ids[0]["or_ids"]["ids"] == [
        {"direct_remote_ip": {"address_prefix": "10.1.2.3", "prefix_len": 16}},
        {"direct_remote_ip": {"address_prefix": "::ffff:1.2.3.4", "prefix_len": 128}},
    ]


def test_admission_validation():
    assert N.validate_authorization_policy(FULL_RULE_POLICY) == []
    errs = N.validate_authorization_policy({"name": "x", "action": "DENY"})
    assert errs and "DENY action without `rules`" in errs[0]
    errs = N.validate_authorization_policy({"name": "x", "rules": [
        {"when": [{"key": "request.auth.bogus", "values": ["a"]}, {"key": "request.headers", "values": ["a"]}]},
        {"to": [{"operation": {"paths": ["/{**}/a/{*}"], "ports": ["70000"]}}]},
        {"from": [{"source": {"serviceAccounts": ["a/b/c"], "principals": ["p"]}}]},
    ]})
    assert any("unknown attribute: request.auth.bogus" in e for e in errs)
    assert any("should have format a[b]" in e for e in errs)
    assert any("{**} is not the last operator" in e for e in errs)
    assert any("bad port (70000)" in e for e in errs)
    assert any("cannot set serviceAccounts" in e for e in errs)


def test_deny_body():
    assert N.rbac_deny_body() == "RBAC: access denied"


# ---------------------------------------------------------------------------
# jwt_authn (policy_applier.go convertToEnvoyJwtConfig, policy_applier_test.go)
# ---------------------------------------------------------------------------

KC = "https://keycloak.example.com/realms/demo"
KC_JWKS = KC + "/protocol/openid-connect/certs"


def test_jwt_single_rule_remote():
    got = N.render_jwt_authn([{"issuer": KC, "jwksUri": KC_JWKS, "audiences": ["orders"]}])
    assert got == {
        "name": "envoy.filters.http.jwt_authn",
        "typed_config": {
            "@type": JWT_TYPE,
            "providers": {"origins-0": {
                "issuer": KC,
                "audiences": ["orders"],
                "remote_jwks": {
                    "http_uri": {"uri": KC_JWKS, "cluster": "outbound|443||keycloak.example.com", "timeout": "5s"},
                    "cache_duration": "300s",
                },
                "payload_in_metadata": "payload",
                "clear_route_cache": True,
                "normalize_payload_in_metadata": {"space_delimited_claims": ["permission", "scope"]},
            }},
            "rules": [{"match": {"prefix": "/"}, "requires": {"requires_any": {"requirements": [
                {"provider_name": "origins-0"}, {"allow_missing": {}}]}}}],
            "bypass_cors_preflight": True,
        },
    }


def test_jwt_remote_cluster_names():
    # policy_applier_test.go "non Mesh cluster ... mode Envoy" and "Mesh cluster ... mode Envoy/Hybrid"
    got = N.render_jwt_authn([{"issuer": "i", "jwksUri": "http://invalid-issuer.com:7443/jwks"}])
    assert got["typed_config"]["providers"]["origins-0"]["remote_jwks"]["http_uri"]["cluster"] == \
        "outbound|7443||invalid-issuer.com"
    got = N.render_jwt_authn([{"issuer": "i", "jwksUri": "http://kc:8080/certs"}])
    assert got["typed_config"]["providers"]["origins-0"]["remote_jwks"]["http_uri"]["cluster"] == "outbound|8080||kc"
    mesh = {"jwt-token-issuer.mesh": "jwt-token-issuer.mesh.svc.cluster.local"}
    for mode in ("remote", "hybrid"):
        got = N.render_jwt_authn([{"issuer": "i", "jwksUri": "http://jwt-token-issuer.mesh:7443/jwks"}],
                                 jwks_mode=mode, mesh_services=mesh, clear_route_cache=False)
        prov = got["typed_config"]["providers"]["origins-0"]
        assert prov["remote_jwks"]["http_uri"]["cluster"] == "outbound|7443||jwt-token-issuer.mesh.svc.cluster.local"
        assert "clear_route_cache" not in prov
    # hybrid, host not in the mesh -> istiod fetches and inlines
    got = N.render_jwt_authn([{"issuer": "i", "jwksUri": "http://x/jwks"}], jwks_mode="hybrid",
                             resolved_jwks={"i": '{"keys":[]}'})
    assert got["typed_config"]["providers"]["origins-0"]["local_jwks"] == {"inline_string": '{"keys":[]}'}


def test_jwt_istiod_mode_inline_and_fail_closed():
    w = []
    got = N.render_jwt_authn(
        [{"issuer": "b", "jwksUri": "https://b/jwks"}, {"issuer": "a", "jwks": "INLINE"}, {"issuer": "c"}],
        jwks_mode="istiod", resolved_jwks={"b": "FETCHED"}, warnings=w)
    provs = got["typed_config"]["providers"]
    assert [provs[f"origins-{i}"]["issuer"] for i in range(3)] == ["a", "b", "c"]  # sorted by issuer
    assert provs["origins-0"]["local_jwks"] == {"inline_string": "INLINE"}
    assert provs["origins-1"]["local_jwks"] == {"inline_string": "FETCHED"}
    assert provs["origins-2"]["local_jwks"] == {"inline_string": N.FAIL_CLOSED_JWKS}
    assert len(w) == 1 and "fail-closed" in w[0]
    # 3 providers: any{P0, P1, P2, all{any{P0,missing}, any{P1,missing}, any{P2,missing}}}
    req = got["typed_config"]["rules"][0]["requires"]["requires_any"]["requirements"]
    assert req[:3] == [{"provider_name": f"origins-{i}"} for i in range(3)]
    assert req[3] == {"requires_all": {"requirements": [
        {"requires_any": {"requirements": [{"provider_name": f"origins-{i}"}, {"allow_missing": {}}]}}
        for i in range(3)]}}


def test_jwt_all_provider_fields():
    got = N.render_jwt_authn([{
        "issuer": KC, "jwksUri": "http://kc.local/certs",
        "fromHeaders": [{"name": "x-jwt", "prefix": "Bearer "}, {"name": "x-raw"}],
        "fromParams": ["tok"], "fromCookies": ["session"],
        "forwardOriginalToken": True, "outputPayloadToHeader": "x-payload",
        "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}],
        "timeout": "1.5s", "spaceDelimitedClaims": ["roles", "scope"],
    }], jwt_cache_size=100)
    prov = got["typed_config"]["providers"]["origins-0"]
    assert prov["from_headers"] == [{"name": "x-jwt", "value_prefix": "Bearer "}, {"name": "x-raw"}]
    assert prov["from_params"] == ["tok"] and prov["from_cookies"] == ["session"]
    assert prov["forward"] is True and prov["forward_payload_header"] == "x-payload"
    assert prov["claim_to_headers"] == [{"header_name": "x-sub", "claim_name": "sub"}]
    assert prov["remote_jwks"]["http_uri"] == {"uri": "http://kc.local/certs", "cluster": "outbound|80||kc.local",
                                               "timeout": "1.500s"}
    assert prov["normalize_payload_in_metadata"] == {"space_delimited_claims": ["permission", "roles", "scope"]}
    assert prov["jwt_cache_config"] == {"jwt_cache_size": 100}


def test_jwt_presence_required():
    # istio/istio PR #60830 policy_applier_test.go cases
    one = N.render_jwt_authn([{"issuer": "i", "jwks": "k", "presence": "REQUIRED"}])
    assert one["typed_config"]["rules"][0]["requires"] == {"provider_name": "origins-0"}
    both = N.render_jwt_authn([{"issuer": "a", "jwks": "k", "presence": "REQUIRED"},
                               {"issuer": "b", "jwks": "k", "presence": "REQUIRED"}])
    assert both["typed_config"]["rules"][0]["requires"] == {"requires_all": {"requirements": [
        {"provider_name": "origins-0"}, {"provider_name": "origins-1"}]}}
    mixed = N.render_jwt_authn([{"issuer": "b", "jwks": "k", "presence": "OPTIONAL"},
                                {"issuer": "a", "jwks": "k", "presence": "REQUIRED"}])
    assert mixed["typed_config"]["rules"][0]["requires"] == {"requires_all": {"requirements": [
        {"provider_name": "origins-0"},
        {"requires_any": {"requirements": [{"provider_name": "origins-1"}, {"allow_missing": {}}]}},
    ]}}


def test_jwt_no_rules():
    assert N.render_jwt_authn([]) is None


# ---------------------------------------------------------------------------
# Real Envoy: `envoy --mode validate`
# ---------------------------------------------------------------------------


def envoy_validate(tmp_path: Path, bootstrap: dict, name: str = "bootstrap") -> subprocess.CompletedProcess:
    try:
        envoy = harness.find_envoy()
    except harness.HarnessError as e:
        pytest.fail(str(e), pytrace=False)
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(bootstrap, indent=1))
    return subprocess.run([envoy, "--mode", "validate", "-c", str(path), "-l", "warning"],
                          capture_output=True, text=True, timeout=120)


REAL_JWKS = json.dumps({"keys": [
    {"kty": "RSA", "kid": "sig", "use": "sig", "alg": "RS256", "e": "AQAB",
     "n": json.loads(N.FAIL_CLOSED_JWKS)["keys"][0]["n"]},
]})


def _all_features_filters():
    w = []
    jwt = N.render_jwt_authn([
        {"issuer": KC, "jwksUri": KC_JWKS, "audiences": ["orders"], "presence": "REQUIRED",
         "fromHeaders": [{"name": "Authorization", "prefix": "Bearer "}],
         "outputClaimToHeaders": [{"header": "x-sub", "claim": "sub"}]},
        {"issuer": "http://idp.local:8080/realms/b", "jwksUri": "http://idp.local:8080/certs",
         "fromParams": ["access_token"], "fromCookies": ["tok"], "outputPayloadToHeader": "x-payload",
         "forwardOriginalToken": True, "timeout": "2s", "spaceDelimitedClaims": ["roles"]},
        {"issuer": "inline", "jwks": REAL_JWKS, "fromHeaders": [{"name": "x-other"}]},
    ], jwt_cache_size=64, warnings=w)
    rbac = N.render_rbac([
        FULL_RULE_POLICY,
        {"name": "deny-admin", "namespace": "foo", "action": "DENY", "rules": [
            {"to": [{"operation": {"paths": ["/admin/{**}"]}}],
             "from": [{"source": {"notRequestPrincipals": ["*"]}}]}]},
        {"name": "audit", "action": "AUDIT", "rules": [{}]},
        {"name": "dry", "action": "DENY", "dryRun": True, "rules": [{"when": [
            {"key": "request.auth.claims[scope]", "values": ["orders:write"]}]}]},
        {"name": "nothing", "action": "ALLOW"},
    ], warnings=w)
    assert w == []
    return jwt, rbac


def test_envoy_accepts_all_features_remote(tmp_path):
    jwt, rbac = _all_features_filters()
    assert [f["name"] for f in rbac] == ["envoy.filters.http.rbac"] * 3
    boot = N.build_bootstrap([jwt, *rbac], extra_clusters=N.jwks_clusters(jwt))
    assert [c["name"] for c in boot["static_resources"]["clusters"]] == [
        "backend", "outbound|8080||idp.local", "outbound|443||keycloak.example.com"]  # issuer order
    res = envoy_validate(tmp_path, boot)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "OK" in res.stdout + res.stderr


def test_envoy_accepts_istiod_mode_and_sidecar(tmp_path):
    jwt = N.render_jwt_authn(
        [{"issuer": KC, "jwksUri": KC_JWKS}, {"issuer": "https://unreachable.example"}],
        jwks_mode="istiod", resolved_jwks={KC: REAL_JWKS}, clear_route_cache=False)
    res = envoy_validate(tmp_path, N.build_bootstrap([jwt, *N.render_rbac([{"name": "x", "rules": [{}]}])]))
    assert res.returncode == 0, res.stdout + res.stderr


def test_envoy_rejects_bad_inline_jwks(tmp_path):
    # sanity check that validation is meaningful: an invalid inline JWKS is a NACK
    jwt = N.render_jwt_authn([{"issuer": "i", "jwks": "not-json"}], jwks_mode="istiod")
    res = envoy_validate(tmp_path, N.build_bootstrap([jwt]))
    assert res.returncode != 0
    assert "invalid local jwks" in res.stdout + res.stderr
