"""A TLS scan of a running gateway with sslyze, presenting a partner's client certificate:
every scan command must complete (no tool error) and the server must comply with Mozilla's
"intermediate" configuration, the gateway's dev CA standing in for a public one."""

import argparse
import pathlib
import sys

from sslyze import (
    CertificateInfoExtraArgument,
    ClientAuthenticationCredentials,
    Scanner,
    ScanCommandAttemptStatusEnum,
    ScanCommandsExtraArguments,
    ServerNetworkConfiguration,
    ServerNetworkLocation,
    ServerScanRequest,
    ServerScanStatusEnum,
)
from sslyze.mozilla_tls_profile.tls_config_checker import (
    MozillaTlsConfiguration,
    ServerNotCompliantWithTlsConfiguration,
    TlsConfigurationEnum,
    check_server_against_tls_configuration,
)


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--pki", type=pathlib.Path, required=True)
    p.add_argument("--partner", default="imara")
    a = p.parse_args()
    who = a.pki / "partners" / a.partner
    request = ServerScanRequest(
        server_location=ServerNetworkLocation("localhost", a.port, ip_address="127.0.0.1"),
        network_configuration=ServerNetworkConfiguration(
            tls_server_name_indication="localhost",
            tls_client_auth_credentials=ClientAuthenticationCredentials(
                certificate_chain_path=who / "system.pem", key_path=who / "system.key"
            ),
        ),
        scan_commands_extra_arguments=ScanCommandsExtraArguments(
            certificate_info=CertificateInfoExtraArgument(custom_ca_file=a.pki / "ca.pem")
        ),
    )
    scanner = Scanner()
    scanner.queue_scans([request])
    failures = []
    for result in scanner.get_results():
        if result.scan_status != ServerScanStatusEnum.COMPLETED:
            print(f"tls scan: could not connect: {result.connectivity_error_trace}", file=sys.stderr)
            return 1
        for name, attempt in vars(result.scan_result).items():
            if attempt.status == ScanCommandAttemptStatusEnum.ERROR:
                failures.append(f"{name}: tool error {attempt.error_reason}")
        try:
            check_server_against_tls_configuration(
                server_scan_result=result,
                tls_config_to_check_against=MozillaTlsConfiguration.get(
                    TlsConfigurationEnum.MOZILLA_INTERMEDIATE
                ),
            )
        except ServerNotCompliantWithTlsConfiguration as e:
            for issue, why in e.issues.items():
                failures.append(f"not Mozilla intermediate: {issue}: {why}")
    for f in failures:
        print(f"tls scan: {f}", file=sys.stderr)
    print(f"tls scan: Mozilla intermediate {'FAILED' if failures else 'compliant'}, {len(failures)} problems")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
