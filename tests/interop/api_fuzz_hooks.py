"""schemathesis hooks for refex's media types (api_fuzz.sh loads them).

A JOSE compact serialisation and the console's pages and stylesheet are text: sent as the
string the schema generated, and read back as text so every answer is still checked against
its schema (its pattern, for a sealed delivery).

A generated string only looks like a JWE: the gateway refuses it at decryption, so the
acceptance path behind it would never be fuzzed. When api_fuzz.sh names a sending partner
(API_FUZZ_SENDER, its private JWKS in API_FUZZ_SENDER_KEYS, the gateway's JWKS in
API_FUZZ_GATEWAY_JWKS), every other positive referral body is replaced by a real one,
signed as that partner and sealed to the gateway (jwcrypto, an independent JOSE library),
with a fresh jti; each acceptance (202) is counted in API_FUZZ_ACCEPTED, which api_fuzz.sh
requires to be non-empty for that caller.
"""

import json
import os
import time
import uuid

import schemathesis

_SENDER = os.environ.get("API_FUZZ_SENDER")
_sealed = 0


def _keys(path):
    with open(path) as f:
        return {k["use"]: k for k in json.load(f)["keys"]}


def _real_referral():
    """A referral the gateway accepts from the sending partner, sealed to it."""
    from jwcrypto import jwe, jwk, jws
    from jwcrypto.common import json_encode

    sig = _keys(os.environ["API_FUZZ_SENDER_KEYS"])["sig"]
    enc = _keys(os.environ["API_FUZZ_GATEWAY_JWKS"])["enc"]
    with open(os.environ["API_FUZZ_PAYLOAD"]) as f:
        payload = json.load(f)
    claims = {
        "iss": _SENDER, "aud": "refex", "jti": str(uuid.uuid4()), "iat": int(time.time()),
        "referral": {
            "type": "child-sexual-abuse-support", "to": ["imara"],
            "sender_ref": f"FUZZ/{uuid.uuid4().hex[:8]}",
            "lawful_basis": {"article6": "public-task", "article9": "substantial-public-interest",
                             "dpa2018_schedule1": "para-18-safeguarding-children"},
            "consent": {"status": "given"}, "subject_informed": {"status": "yes"},
            "payload": payload,
        },
    }
    token = jws.JWS(json.dumps(claims).encode())
    token.add_signature(jwk.JWK(**sig), alg="ES256", protected=json_encode(
        {"alg": "ES256", "kid": sig["kid"], "typ": "referral+jwt"}))
    outer = jwe.JWE(token.serialize(compact=True).encode(), protected=json_encode(
        {"alg": "ECDH-ES+A256KW", "enc": "A256GCM", "kid": enc["kid"], "cty": "JWT"}))
    outer.add_recipient(jwk.JWK(**enc))
    return outer.serialize(compact=True).encode()


def _positive(case):
    meta = getattr(case, "_meta", None)
    return meta is not None and meta.generation.mode.value == "positive"


@schemathesis.serializer("application/jose")
def jose_request(ctx, value):
    global _sealed
    if isinstance(value, str):
        case = getattr(ctx, "case", None)
        if _SENDER and case is not None and case.operation.path == "/v1/referrals" and _positive(case):
            _sealed += 1
            if _sealed % 2 == 1:
                return _real_referral()
        return value.encode("utf-8", "surrogatepass")
    if isinstance(value, bytes):
        return value
    # Negative tests generate other JSON values: send their JSON text, which is no JOSE.
    return json.dumps(value).encode()


@schemathesis.hook
def after_call(ctx, case, response):
    path = os.environ.get("API_FUZZ_ACCEPTED")
    if path and case.operation.path == "/v1/referrals" and response.status_code == 202:
        with open(path, "a") as f:
            f.write(response.text + "\n")


@schemathesis.deserializer("application/jose", "text/html", "text/css", "text/csv")
def as_text(ctx, response):
    return response.content.decode("utf-8")
