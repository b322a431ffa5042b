//! What the partner trust bundle and the CRLs say about revocation: which issuing CAs have a
//! CRL, and how long each CRL has before it must be replaced. Pure over the parsed files:
//! the configuration refuses (production) or warns (development) from [`uncovered`], and
//! `/readyz`, the metrics and the log report [`CrlHealth`].
//!
//! rustls checks revocation only against the CRLs it is given: a CA with no CRL means its
//! revoked certificates are accepted without a word, and a CRL past its `nextUpdate` refuses
//! every certificate of its CA. Both are caught here before they happen.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, CertificateRevocationListDer};

/// A trust or CRL file that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The file is missing, unreadable, or not PEM of the expected kind.
    #[error("cannot read {what} from {path}: {reason}")]
    Unreadable {
        /// Certificates or CRL.
        what: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// A CA in the partner trust bundle, by its subject name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authority {
    /// The subject, readable (`CN=…, O=…`).
    pub subject: String,
    /// The subject's DER encoding: what a CRL's issuer must equal.
    subject_der: Vec<u8>,
}

/// One CRL: who issued it and until when it is current.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Crl {
    /// The issuer, readable.
    pub issuer: String,
    issuer_der: Vec<u8>,
    /// When a newer CRL is due (`nextUpdate`); `None` when the CRL names none.
    pub next_update: Option<SystemTime>,
    /// When it was issued (`thisUpdate`).
    pub this_update: SystemTime,
    /// Its CRL number, big-endian without leading zeros (empty when it has none): orders
    /// two CRLs of one CA issued within the same second.
    pub number: Vec<u8>,
    /// The file it came from.
    pub path: PathBuf,
}

/// How a CRL stands at a moment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrlHealth {
    /// Current, and not due within the warning period.
    Current,
    /// Current, but due within the warning period: replace it before then.
    Due {
        /// Time left before `nextUpdate`.
        remaining: Duration,
    },
    /// Past `nextUpdate`: every certificate of its CA is refused until a newer CRL is loaded.
    Overdue,
}

/// Reads the CAs of a trust bundle.
pub fn read_authorities(path: &Path) -> Result<Vec<Authority>, TrustError> {
    let unreadable = |reason: String| TrustError::Unreadable {
        what: "certificates",
        path: path.to_owned(),
        reason,
    };
    let ders = CertificateDer::pem_file_iter(path)
        .map_err(|e| unreadable(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unreadable(e.to_string()))?;
    ders.iter()
        .map(|der| {
            let (_, cert) = x509_parser::parse_x509_certificate(der.as_ref())
                .map_err(|e| unreadable(format!("not an X.509 certificate: {e}")))?;
            Ok(Authority {
                subject: cert.subject().to_string(),
                subject_der: cert.subject().as_raw().to_vec(),
            })
        })
        .collect()
}

/// Reads every CRL in the files.
pub fn read_crls(paths: &[PathBuf]) -> Result<Vec<Crl>, TrustError> {
    let mut out = Vec::new();
    for path in paths {
        let unreadable = |reason: String| TrustError::Unreadable {
            what: "CRL",
            path: path.clone(),
            reason,
        };
        let ders = CertificateRevocationListDer::pem_file_iter(path)
            .map_err(|e| unreadable(e.to_string()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unreadable(e.to_string()))?;
        for der in ders {
            let (_, crl) = x509_parser::parse_x509_crl(der.as_ref())
                .map_err(|e| unreadable(format!("not an X.509 CRL: {e}")))?;
            let next_update = crl
                .next_update()
                .and_then(|t| u64::try_from(t.timestamp()).ok())
                .map(|s| UNIX_EPOCH + Duration::from_secs(s));
            let this_update = UNIX_EPOCH
                + Duration::from_secs(u64::try_from(crl.last_update().timestamp()).unwrap_or(0));
            let number = crl
                .crl_number()
                .map(|n| n.to_bytes_be())
                .unwrap_or_default();
            out.push(Crl {
                issuer: crl.issuer().to_string(),
                issuer_der: crl.issuer().as_raw().to_vec(),
                next_update,
                this_update,
                number,
                path: path.clone(),
            });
        }
    }
    Ok(out)
}

/// The CRLs of `new` that are older (an earlier `thisUpdate`) than the CRL of the same CA in
/// force, in words: a stale copy put back would quietly un-revoke what the newer one
/// revoked, so a reload refuses it.
pub fn older_than_in_force(new: &[Crl], in_force: &[Crl]) -> Vec<String> {
    let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    // CRL numbers rise with every CRL a CA issues (RFC 5280), whatever its clock did: when
    // both have one they decide; otherwise the issue time does.
    let number = |c: &Crl| (c.number.len(), c.number.clone());
    let older = |a: &Crl, b: &Crl| {
        if !a.number.is_empty() && !b.number.is_empty() {
            number(a) < number(b)
        } else {
            a.this_update < b.this_update
        }
    };
    let newest_of = |crls: &'_ [Crl], issuer: &[u8]| {
        crls.iter()
            .filter(|c| c.issuer_der == issuer)
            .reduce(|a, b| if older(a, b) { b } else { a })
            .cloned()
    };
    // Per CA, the newest CRL the new configuration lists against the newest in force: a CA
    // listed with an old CRL beside its current one is covered by the current one.
    let mut issuers: Vec<&[u8]> = new.iter().map(|c| c.issuer_der.as_slice()).collect();
    issuers.sort();
    issuers.dedup();
    issuers
        .into_iter()
        .filter_map(|issuer| {
            let n = newest_of(new, issuer)?;
            let newest = newest_of(in_force, issuer)?;
            older(&n, &newest).then(|| {
                let newest = newest.this_update;
                format!(
                    "{}: the CRL of {} was issued at {} (Unix time), before the one in force \
                     ({}): an older CRL would un-revoke certificates; publish a new one \
                     (refex ca crl)",
                    n.path.display(),
                    n.issuer,
                    secs(n.this_update),
                    secs(newest)
                )
            })
        })
        .collect()
}

/// The CAs no CRL was issued by: revocation of their certificates cannot be checked.
pub fn uncovered<'a>(authorities: &'a [Authority], crls: &[Crl]) -> Vec<&'a Authority> {
    authorities
        .iter()
        .filter(|ca| !crls.iter().any(|crl| crl.issuer_der == ca.subject_der))
        .collect()
}

/// How `crl` stands at `now`, warning `warn_before` its `nextUpdate`.
pub fn health(crl: &Crl, now: SystemTime, warn_before: Duration) -> CrlHealth {
    let Some(next) = crl.next_update else {
        return CrlHealth::Current;
    };
    match next.duration_since(now) {
        Err(_) => CrlHealth::Overdue,
        Ok(remaining) if remaining.is_zero() => CrlHealth::Overdue,
        Ok(remaining) if remaining <= warn_before => CrlHealth::Due { remaining },
        Ok(_) => CrlHealth::Current,
    }
}

/// One line for operators about a CRL that is due or overdue; `None` when current.
pub fn describe(crl: &Crl, health: CrlHealth) -> Option<String> {
    match health {
        CrlHealth::Current => None,
        CrlHealth::Due { remaining } => Some(format!(
            "the CRL from {} ({}) must be replaced within {}: after its nextUpdate every certificate of that CA is refused",
            crl.issuer,
            crl.path.display(),
            humantime::format_duration(Duration::from_secs(remaining.as_secs()))
        )),
        CrlHealth::Overdue => Some(format!(
            "the CRL from {} ({}) is past its nextUpdate: every certificate of that CA is refused until a newer CRL is loaded",
            crl.issuer,
            crl.path.display()
        )),
    }
}

/// How every CRL stands at `now`: sets the `refex_crl_seconds_to_next_update` gauge per
/// issuer and returns a line for each CRL due or overdue, with its health.
pub fn observe(crls: &[Crl], now: SystemTime, warn_before: Duration) -> Vec<(CrlHealth, String)> {
    let mut out = Vec::new();
    for crl in crls {
        if let Some(next) = crl.next_update {
            let seconds = match next.duration_since(now) {
                Ok(d) => d.as_secs_f64(),
                Err(e) => -e.duration().as_secs_f64(),
            };
            metrics::gauge!(crate::telemetry::CRL_SECONDS_TO_NEXT_UPDATE, "issuer" => crl.issuer.clone())
                .set(seconds);
        }
        let health = health(crl, now, warn_before);
        if let Some(line) = describe(crl, health) {
            out.push((health, line));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crl(next: Option<u64>) -> Crl {
        Crl {
            issuer: "CN=ca".into(),
            issuer_der: vec![1],
            next_update: next.map(|s| UNIX_EPOCH + Duration::from_secs(s)),
            this_update: UNIX_EPOCH,
            number: Vec::new(),
            path: "crl.pem".into(),
        }
    }

    #[test]
    fn an_older_crl_of_the_same_ca_is_named() {
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        let old = Crl {
            this_update: at(100),
            ..crl(None)
        };
        let new = Crl {
            this_update: at(200),
            ..crl(None)
        };
        // Numbered CRLs: the number orders them, whatever their times say.
        let first = Crl {
            number: vec![5],
            ..old.clone()
        };
        let second = Crl {
            number: vec![1, 0],
            ..old.clone()
        };
        assert_eq!(
            older_than_in_force(std::slice::from_ref(&first), std::slice::from_ref(&second)).len(),
            1
        );
        assert!(
            older_than_in_force(std::slice::from_ref(&second), std::slice::from_ref(&first))
                .is_empty()
        );
        // A CA whose clock was wrong and is set right: a higher number issued "earlier".
        let after_clock_fix = Crl {
            number: vec![1, 1],
            this_update: at(50),
            ..old.clone()
        };
        assert!(older_than_in_force(&[after_clock_fix], std::slice::from_ref(&second)).is_empty());
        // An old CRL listed beside the current one of the same CA is not a step back.
        assert!(older_than_in_force(&[first.clone(), second.clone()], &[first, second]).is_empty());
        let other_ca = Crl {
            issuer_der: vec![2],
            ..old.clone()
        };
        assert!(
            older_than_in_force(std::slice::from_ref(&new), std::slice::from_ref(&old)).is_empty()
        );
        assert!(
            older_than_in_force(std::slice::from_ref(&new), std::slice::from_ref(&new)).is_empty()
        );
        assert_eq!(
            older_than_in_force(std::slice::from_ref(&old), std::slice::from_ref(&new)).len(),
            1
        );
        assert!(older_than_in_force(&[other_ca], &[new]).is_empty());
    }

    #[test]
    fn health_turns_due_then_overdue() {
        let week = Duration::from_secs(7 * 86_400);
        let at = |s| UNIX_EPOCH + Duration::from_secs(s);
        let c = crl(Some(1_000_000));
        assert_eq!(health(&c, at(0), week), CrlHealth::Current);
        assert_eq!(
            health(&c, at(1_000_000 - 10), week),
            CrlHealth::Due {
                remaining: Duration::from_secs(10)
            }
        );
        assert_eq!(health(&c, at(1_000_000), week), CrlHealth::Overdue);
        assert_eq!(health(&c, at(2_000_000), week), CrlHealth::Overdue);
        assert_eq!(
            health(&crl(None), at(u32::MAX as u64), week),
            CrlHealth::Current
        );
    }

    #[test]
    fn a_ca_is_covered_only_by_a_crl_it_issued() {
        let cas = vec![
            Authority {
                subject: "CN=a".into(),
                subject_der: vec![1],
            },
            Authority {
                subject: "CN=b".into(),
                subject_der: vec![2],
            },
        ];
        let left = uncovered(&cas, &[crl(None)]);
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].subject, "CN=b");
        assert_eq!(uncovered(&cas, &[]).len(), 2);
    }
}
