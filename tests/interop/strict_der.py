"""Every certificate and CRL the development PKI writes parses with an independent, strict
DER parser (Python `cryptography`, which refuses e.g. an explicitly encoded DEFAULT such as
BasicConstraints cA=FALSE), and every leaf is X.509 v3 with the key usage it is for."""

import pathlib
import sys

from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID


def main(pki: pathlib.Path) -> int:
    certs = sorted(pki.rglob("*.pem"))
    parsed = 0
    failures = []
    for path in certs:
        data = path.read_bytes()
        if b"BEGIN X509 CRL" in data:
            try:
                x509.load_pem_x509_crl(data)
                parsed += 1
            except ValueError as e:
                failures.append(f"{path}: {e}")
            continue
        if b"BEGIN CERTIFICATE" not in data:
            continue
        try:
            for cert in x509.load_pem_x509_certificates(data):
                parsed += 1
                if cert.version != x509.Version.v3:
                    failures.append(f"{path}: not X.509 v3")
                try:
                    bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
                    is_ca = bc.ca
                except x509.ExtensionNotFound:
                    is_ca = False
                if not is_ca:
                    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
                    if not ({ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH} & set(eku)):
                        failures.append(f"{path}: leaf without clientAuth or serverAuth")
        except ValueError as e:
            failures.append(f"{path}: {e}")
    for f in failures:
        print(f"strict DER: {f}", file=sys.stderr)
    if parsed == 0:
        print(f"strict DER: no certificate found under {pki}", file=sys.stderr)
        return 1
    print(f"strict DER: {parsed} certificates and CRLs parsed, {len(failures)} refused")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(pathlib.Path(sys.argv[1])))
