"""Schemathesis hooks for tests/e2e/test_schemathesis.py (loaded through SCHEMATHESIS_HOOKS).

The OpenAPI document names the formats of PEM text that the gateway checks by parsing it
(``x-pem-certificate-chain``, ``x-pem-private-key``: gateway/mgmt/openapi.py).  A random
string is schema-valid there and rightly refused (400), so the positive checks need real
PEM: one certificate and its key, made once here.  Both formats always come from the same
pair, so any schema-valid body that carries both carries a matching pair.  Garbage PEM is
covered by the unit tests of the PEM checks, not here.
"""

from __future__ import annotations

import schemathesis
import trustme
from hypothesis import strategies as st

_CA = trustme.CA()
_LEAF = _CA.issue_cert("schemathesis.example")

schemathesis.openapi.format(
    "x-pem-certificate-chain",
    st.just(b"".join(blob.bytes() for blob in _LEAF.cert_chain_pems).decode()),
)
schemathesis.openapi.format("x-pem-private-key", st.just(_LEAF.private_key_pem.bytes().decode()))
