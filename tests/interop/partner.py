"""An independent partner for refex, in Python with jwcrypto and requests.

It makes its own JWS (ES256) and JWE (ECDH-ES+A256KW / A256GCM) from the shipped examples,
posts over mutual TLS, and as a recipient decrypts and verifies a delivery. Any disagreement
between josekit (in refex) and jwcrypto is a bug to fix in refex.

Usage: partner.py --gateway https://localhost:PORT --admin http://127.0.0.1:PORT --pki DIR --examples DIR
"""

import argparse
import json
import sys
import time
import uuid

import requests
from jwcrypto import jwe, jwk, jws
from jwcrypto.common import json_encode

results = []


def check(name, condition, detail=""):
    results.append((name, bool(condition)))
    print(("ok     " if condition else "FAILED ") + name + ("" if condition else f": {detail}"))


def keys(path):
    doc = json.load(open(path))
    return {k["use"]: k for k in doc["keys"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gateway", required=True)
    ap.add_argument("--admin", required=True)
    ap.add_argument("--pki", required=True)
    ap.add_argument("--examples", required=True)
    a = ap.parse_args()

    ca = f"{a.pki}/ca.pem"
    police = (f"{a.pki}/partners/notts-police/system.pem", f"{a.pki}/partners/notts-police/system.key")
    imara = (f"{a.pki}/partners/imara/system.pem", f"{a.pki}/partners/imara/system.key")
    police_keys = keys(f"{a.pki}/partners/notts-police/jwks.private.json")
    imara_keys = keys(f"{a.pki}/partners/imara/jwks.private.json")

    # The gateway's JWKS, from the admin listener (no client certificate needed).
    gw = {k["use"]: k for k in requests.get(f"{a.admin}/.well-known/jwks.json", timeout=10).json()["keys"]}
    check("JWKS has enc and sig keys with kid and alg", {"enc", "sig"} <= gw.keys() and all("kid" in k and "alg" in k for k in gw.values()))

    payload = json.load(open(f"{a.examples}/child-sexual-abuse-support/police-referral.json"))
    claims = {
        "iss": "notts-police", "aud": "refex", "jti": str(uuid.uuid4()), "iat": int(time.time()),
        "referral": {
            "type": "child-sexual-abuse-support", "to": ["imara"], "sender_ref": "PY/1",
            "lawful_basis": {"article6": "public-task", "article9": "substantial-public-interest",
                             "dpa2018_schedule1": "para-18-safeguarding-children"},
            "consent": {"status": "given"}, "subject_informed": {"status": "yes"},
            "payload": payload,
        },
    }

    def seal(claims, sig_key, enc_key, alg="ECDH-ES+A256KW"):
        signer = jwk.JWK(**sig_key)
        token = jws.JWS(json.dumps(claims).encode())
        token.add_signature(signer, alg="ES256",
                            protected=json_encode({"alg": "ES256", "kid": sig_key["kid"], "typ": "referral+jwt"}))
        inner = token.serialize(compact=True)
        outer = jwe.JWE(inner.encode(), protected=json_encode(
            {"alg": alg, "enc": "A256GCM", "kid": enc_key["kid"], "cty": "JWT"}))
        outer.add_recipient(jwk.JWK(**enc_key))
        return outer.serialize(compact=True)

    def post(body, cert):
        return requests.post(f"{a.gateway}/v1/referrals", data=body, cert=cert, verify=ca, timeout=30,
                             headers={"content-type": "application/jose"})

    r = post(seal(claims, police_keys["sig"], gw["enc"]), police)
    check("a jwcrypto-made referral is accepted (202)", r.status_code == 202, r.text)
    referral_id = r.json().get("id") if r.status_code == 202 else None

    # A retry of the same claims is answered with the original acceptance (idempotent by
    # jti); other claims under the same jti are a replay (409); a referral signed by imara's
    # key as the police is 403.
    r = post(seal(claims, police_keys["sig"], gw["enc"]), police)
    check("a retry gets its acceptance (202, repeated)", r.status_code == 202 and r.json().get("repeated") is True and r.json().get("id") == referral_id, r.text)
    changed = dict(claims, referral=dict(claims["referral"], sender_ref="NP/changed"))
    r = post(seal(changed, police_keys["sig"], gw["enc"]), police)
    check("other claims under a used jti are 409 problem+json", r.status_code == 409 and r.headers["content-type"] == "application/problem+json", r.text)
    other = dict(claims, jti=str(uuid.uuid4()))
    r = post(seal(other, imara_keys["sig"], gw["enc"]), police)
    check("a signature by another partner's key is 403", r.status_code == 403, r.text)
    # A tampered ciphertext is refused.
    body = seal(dict(claims, jti=str(uuid.uuid4())), police_keys["sig"], gw["enc"])
    parts = body.split(".")
    parts[3] = ("A" if parts[3][0] != "A" else "B") + parts[3][1:]
    r = post(".".join(parts), police)
    check("a tampered JWE is 400", r.status_code == 400, r.text)

    # As the recipient: list, fetch, decrypt with our key, verify the gateway's signature, ack.
    page = requests.get(f"{a.gateway}/v1/inbox", cert=imara, verify=ca, timeout=30).json()
    check("the delivery is listed", len(page["messages"]) == 1, page)
    if page["messages"]:
        dlv = page["messages"][0]["id"]
        r = requests.get(f"{a.gateway}/v1/inbox/{dlv}", cert=imara, verify=ca, timeout=30)
        check("the delivery is application/jose", r.headers["content-type"] == "application/jose", r.headers)
        outer = jwe.JWE()
        outer.deserialize(r.text, key=jwk.JWK(**imara_keys["enc"]))
        check("the JWE header names our key", outer.jose_header.get("kid") == imara_keys["enc"]["kid"], outer.jose_header)
        inner = jws.JWS()
        inner.deserialize(outer.payload.decode())
        inner.verify(jwk.JWK(**gw["sig"]))
        check("the gateway's signature verifies, typ delivery+jwt", inner.jose_header.get("typ") == "delivery+jwt", inner.jose_header)
        d = json.loads(inner.payload)
        check("the delivery is for us and is the referral we sent",
              d["aud"] == "imara" and d["delivery"]["referral_id"] == referral_id, d.get("aud"))
        check("the payload is the minimised view (no offence narrative)",
              "narrative" not in d["delivery"]["payload"]["offence"] and d["delivery"]["payload"]["child"]["name"]["given"] == "Amy")
        r = requests.post(f"{a.gateway}/v1/inbox/{dlv}/ack", cert=imara, verify=ca, timeout=30)
        check("ack is 204", r.status_code == 204, r.status_code)

    passed = sum(1 for _, ok in results if ok)
    failed = len(results) - passed
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
