"""Hypothesis strategies shared by the fuzz tests: hostile text, names, digests, manifests."""

from __future__ import annotations

import os
from typing import Any

from hypothesis import strategies as st

LONG = os.environ.get("RELIABILITY_LONG", "") not in ("", "0")
EXAMPLES = 3000 if LONG else 200

HEX = "0123456789abcdef"
# Characters that break parsers: separators, encodings, controls, look-alikes, non-ASCII.
NASTY = [*"/.%-_:@;+~ \t\r\n\x00\x7f\\?#=&,*", "%2F", "%2e", "%00", "%C3%A9", "\u00e9",
         "\uff0f", "\u202e", "\u200d", "\u0663", "\u00b2", "..", "//"]

nasty_text = st.lists(st.one_of(st.sampled_from(NASTY), st.text(max_size=4)),
                      max_size=12).map("".join)
name_like = st.one_of(
    st.from_regex(r"[a-z0-9]+([._-][a-z0-9]+)*(/[a-z0-9]+([._-][a-z0-9]+)*){0,3}",
                  fullmatch=True),
    nasty_text,
    st.text(max_size=300),
)
digest_like = st.one_of(
    st.builds(lambda alg, hx: f"{alg}:{hx}", st.sampled_from(["sha256", "sha512", "md5",
                                                             "SHA256", "sha256+b64", ""]),
              st.text(alphabet=HEX + "ABCDEFxyz=_-", max_size=140)),
    st.sampled_from(["sha256:" + "a" * 64, "sha512:" + "b" * 128]),
    nasty_text,
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                         st.floats(allow_nan=True), st.text(max_size=20))
json_values = st.recursive(json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=10), inner, max_size=4)),
    max_leaves=20)
MEDIA_TYPES = ["application/vnd.oci.image.manifest.v1+json",
               "application/vnd.oci.image.index.v1+json",
               "application/vnd.docker.distribution.manifest.v2+json",
               "application/vnd.docker.distribution.manifest.list.v2+json",
               "application/vnd.docker.distribution.manifest.v1+json", "text/plain", ""]
descriptor = st.fixed_dictionaries({}, optional={
    "mediaType": st.one_of(st.sampled_from([*MEDIA_TYPES, "application/x.y"]), json_scalars),
    "digest": st.one_of(digest_like, json_scalars),
    "size": st.one_of(st.integers(min_value=-5, max_value=2**65), json_scalars),
    "annotations": st.one_of(st.dictionaries(st.text(max_size=5), st.text(max_size=5),
                                             max_size=2), json_values),
    "artifactType": st.one_of(st.sampled_from(MEDIA_TYPES), json_scalars)})
manifest_doc: st.SearchStrategy[dict[str, Any]] = st.fixed_dictionaries({}, optional={
    "schemaVersion": st.one_of(st.just(2), json_scalars),
    "mediaType": st.one_of(st.sampled_from(MEDIA_TYPES), json_scalars),
    "config": st.one_of(descriptor, json_values),
    "layers": st.one_of(st.lists(descriptor, max_size=3), json_values),
    "manifests": st.one_of(st.lists(descriptor, max_size=3), json_values),
    "subject": st.one_of(descriptor, json_values),
    "annotations": json_values,
    "artifactType": json_scalars,
})
