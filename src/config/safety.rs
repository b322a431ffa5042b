//! What production mode requires and development mode only warns about: every certificate
//! and key configured, key files readable by their owner alone, a CRL for every issuing CA,
//! and no CRL already past its `nextUpdate`. One function per rule; [`check`] sorts each
//! finding into a problem (refuses the configuration) or a warning (logged) by mode.

use std::path::Path;
use std::time::SystemTime;

use super::settings::{Mode, PkiPaths, Settings};
use crate::trust::{self, Crl, CrlHealth};

/// What the safety rules found.
#[derive(Debug, Default)]
pub struct Findings {
    /// Refuse the configuration.
    pub problems: Vec<String>,
    /// Log, and serve.
    pub warnings: Vec<String>,
}

impl Findings {
    fn by_mode(&mut self, mode: Mode, finding: String) {
        match mode {
            Mode::Production => self.problems.push(finding),
            Mode::Development => self.warnings.push(finding),
        }
    }
}

/// The settings production mode cannot run without. Checked before anything is read, so a
/// missing one is named rather than reported as an unreadable empty path.
pub fn missing_settings(settings: &Settings) -> Vec<String> {
    if settings.mode == Mode::Development && settings.tls.server_cert.is_none() {
        return Vec::new();
    }
    let why = if settings.mode == Mode::Production {
        "production mode needs it (mode = \"development\" runs on a generated development PKI)"
    } else {
        "tls.server_cert is set, so no development key is used"
    };
    let required: [(&str, bool); 5] = [
        ("tls.server_cert", settings.tls.server_cert.is_some()),
        ("tls.server_key", settings.tls.server_key.is_some()),
        ("keys.gateway_jwks", settings.keys.gateway_jwks.is_some()),
        ("keys.storage_key", settings.keys.storage_key.is_some()),
        ("keys.subject_key", settings.keys.subject_key.is_some()),
    ];
    required
        .iter()
        .filter(|(_, set)| !set)
        .map(|(key, _)| format!("{key} is not set: {why}"))
        .collect()
}

/// Key files, CRL coverage and CRL currency, by mode.
pub fn check(settings: &Settings, pki: &PkiPaths, crls: &[Crl], now: SystemTime) -> Findings {
    let mut findings = Findings::default();
    let mode = settings.mode;
    for (what, path) in [
        ("tls.server_key", &pki.server_key),
        ("keys.gateway_jwks", &pki.gateway_jwks),
        ("keys.storage_key", &pki.storage_key),
        ("keys.subject_key", &pki.subject_key),
    ] {
        if let Some(mode_bits) = exposed(path) {
            findings.by_mode(
                mode,
                format!(
                    "{what} {} can be read by other users (mode {mode_bits:03o}): chmod 600 it",
                    path.display()
                ),
            );
        }
    }
    match trust::read_authorities(&pki.client_ca) {
        // An unreadable bundle is already a problem of the TLS configuration.
        Err(_) => {}
        Ok(cas) => {
            for ca in trust::uncovered(&cas, crls) {
                findings.by_mode(
                    mode,
                    format!(
                        "no CRL in tls.crls is issued by {} (in {}): revoked certificates of that CA would be accepted",
                        ca.subject,
                        pki.client_ca.display()
                    ),
                );
            }
        }
    }
    for crl in crls {
        let health = trust::health(crl, now, settings.tls.crl_warn_before);
        if let Some(line) = trust::describe(crl, health) {
            match health {
                CrlHealth::Overdue => findings.by_mode(mode, line),
                _ => findings.warnings.push(line),
            }
        }
    }
    findings
}

/// The file's permission bits when anyone but the gateway may read it or anyone but its
/// owner may write it. Read access for the file's group is accepted only when that group is
/// the gateway's own: Kubernetes mounts secrets group-readable (`fsGroup`) with no other
/// way for a non-root process to read them.
fn exposed(path: &Path) -> Option<u32> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = std::fs::metadata(path).ok()?;
    let bits = meta.permissions().mode() & 0o777;
    let own_group = meta.gid() == rustix::process::getegid().as_raw();
    let others = bits & 0o007 != 0;
    let group_writes = bits & 0o020 != 0;
    let group_reads = bits & 0o040 != 0 && !own_group;
    (others || group_writes || group_reads).then_some(bits)
}
