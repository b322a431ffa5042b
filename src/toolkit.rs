//! The partner toolkit commands (`refex send`, `status`, `withdraw`, `inbox`) over
//! `partner_client`: building claims from flags or a file, and the inbox loop that acks a
//! delivery only after it is durably written.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::cli::{InboxArgs, PartnerArgs, SendArgs};
use crate::partner_client::{ClientError, Identity, PartnerClient, write_durably};

/// Why a toolkit command failed.
#[derive(Debug, thiserror::Error)]
pub enum ToolkitError {
    /// The gateway or the client failed.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// A file could not be read or written.
    #[error("{0}")]
    File(String),
    /// The flags do not make a referral.
    #[error("{0}")]
    Usage(&'static str),
}

/// The client the flags describe.
pub fn client(who: &PartnerArgs) -> Result<PartnerClient, ToolkitError> {
    let dev = Identity::dev(&who.pki, &who.partner);
    let own_files = who.cert.is_some() && who.key.is_some() && who.jwks_private.is_some();
    let dir = who.pki.join("partners").join(&who.partner);
    if !own_files && !dir.is_dir() {
        let known: Vec<String> = std::fs::read_dir(who.pki.join("partners"))
            .map(|d| {
                let mut v: Vec<String> = d
                    .filter_map(Result::ok)
                    .filter_map(|e| e.file_name().into_string().ok())
                    .collect();
                v.sort();
                v
            })
            .unwrap_or_default();
        return Err(ToolkitError::File(format!(
            "--as {}: no such partner in the PKI directory {} (looked for {}); partners there: {}. \
             For a real partner give --cert, --key, --jwks-private and --ca",
            who.partner,
            who.pki.display(),
            dir.display(),
            if known.is_empty() {
                "none".to_owned()
            } else {
                known.join(", ")
            }
        )));
    }
    let identity = Identity {
        cert: who.cert.clone().unwrap_or(dev.cert),
        key: who.key.clone().unwrap_or(dev.key),
        jwks_private: who.jwks_private.clone().unwrap_or(dev.jwks_private),
        ca: who.ca.clone().unwrap_or(dev.ca),
    };
    Ok(PartnerClient::new(&identity, &who.gateway)?)
}

fn read_json(path: &std::path::Path) -> Result<Value, ToolkitError> {
    let text =
        std::fs::read(path).map_err(|e| ToolkitError::File(format!("{}: {e}", path.display())))?;
    serde_json::from_slice(&text)
        .map_err(|e| ToolkitError::File(format!("{}: {e}", path.display())))
}

/// The claims `refex send` signs.
pub fn claims(args: &SendArgs) -> Result<Value, ToolkitError> {
    let referral = match &args.referral {
        Some(path) => read_json(path)?,
        None => {
            let ty = args
                .referral_type
                .as_deref()
                .ok_or(ToolkitError::Usage("give --type and --file, or --referral"))?;
            let file = args
                .file
                .as_deref()
                .ok_or(ToolkitError::Usage("give --file with the payload"))?;
            let mut lawful = json!({ "article6": args.article6, "article9": args.article9 });
            if args.schedule1 != "none" {
                lawful["dpa2018_schedule1"] = json!(args.schedule1);
            }
            if let Some(a) = &args.article10 {
                lawful["article10"] = json!(a);
            }
            let mut consent = json!({ "status": args.consent });
            if let Some(o) = &args.override_ {
                consent["override"] = json!(o);
            }
            if let Some(j) = &args.justification {
                consent["justification"] = json!(j);
            }
            let mut informed = json!({ "status": args.informed });
            if let Some(r) = &args.informed_reason {
                informed["reason"] = json!(r);
            }
            let mut r = json!({
                "type": ty, "sender_ref": args.sender_ref, "lawful_basis": lawful,
                "consent": consent, "subject_informed": informed, "payload": read_json(file)?,
            });
            if !args.to.is_empty() {
                r["to"] = json!(args.to);
            }
            r
        }
    };
    let iat = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    Ok(json!({
        "iss": args.who.partner, "aud": args.aud, "jti": uuid::Uuid::now_v7().to_string(),
        "iat": iat, "referral": referral,
    }))
}

/// A partner's name from `partners/<id>.toml`, where this checkout has it.
fn partner_name(id: &str) -> Option<String> {
    if !id
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return None;
    }
    let text = std::fs::read_to_string(std::path::Path::new("partners").join(format!("{id}.toml")))
        .ok()?;
    toml::from_str::<crate::config::partners::PartnerFile>(&text)
        .ok()
        .map(|f| f.name)
}

/// The organisation's kind for `--html`: `--kind`, else its partner file's.
fn own_kind(args: &InboxArgs) -> Option<crate::identity::PartnerKind> {
    if let Some(k) = &args.kind {
        return Some(k.clone());
    }
    let file = std::path::Path::new("partners").join(format!("{}.toml", args.who.partner));
    let text = std::fs::read_to_string(file).ok()?;
    toml::from_str::<crate::config::partners::PartnerFile>(&text)
        .ok()
        .map(|f| f.kind)
}

/// What one pass of `refex inbox` did.
#[derive(Debug, Default)]
pub struct InboxRun {
    /// Deliveries written and acknowledged.
    pub saved: usize,
    /// Deliveries that could not be opened with this partner's keys, left unacknowledged in
    /// the inbox (each told to the caller as it happened).
    pub unopened: usize,
}

/// What `refex inbox` did with one delivery, told as it happens (a follower never ends,
/// so nothing may wait for the end of the run to be said).
#[derive(Debug)]
pub enum Outcome<'a> {
    /// Written durably to `path`, then acknowledged.
    Saved {
        /// The delivery's claims.
        delivery: &'a Value,
        /// Where it was written.
        path: &'a std::path::Path,
    },
    /// It did not decrypt or verify with this partner's keys, nor after the gateway's keys
    /// were read again (damaged, forged, or sealed to a key this partner no longer holds):
    /// left in the inbox, unacknowledged.
    Unopened {
        /// The delivery id.
        id: &'a str,
        /// Why, in the JOSE layer's words (never a payload value).
        why: &'a str,
    },
    /// Withdrawn, expired or acknowledged elsewhere between the listing and the fetch:
    /// nothing to save.
    Gone {
        /// The delivery id.
        id: &'a str,
    },
    /// Saved to `path`, but withdrawn, expired or acknowledged elsewhere before its
    /// acknowledgement: the file stays, and whoever acts on it should ask the sender first.
    GoneAfterSaving {
        /// The delivery id.
        id: &'a str,
        /// Where it was written.
        path: &'a std::path::Path,
    },
}

/// Drains the inbox (or follows it): each delivery is fetched, decrypted, verified, written
/// durably to `--out`, and only then acknowledged; `report` is told of each outcome as it
/// happens. A delivery that cannot be opened is tried once more with the gateway's keys
/// read again (they may have been rotated since the run began), then left in the inbox,
/// unacknowledged, and the run goes on to the ones after it: one damaged delivery must not
/// hold back every referral behind it. Anything else (the gateway, the network, the disk)
/// stops the run.
pub async fn inbox(
    args: &InboxArgs,
    mut report: impl FnMut(Outcome<'_>),
) -> Result<InboxRun, ToolkitError> {
    let client = client(&args.who)?;
    let printable = if args.html {
        let schemas = crate::schema::SchemaSet::load(&args.schemas).map_err(|errs| {
            ToolkitError::File(format!(
                "--html needs the schemas ({}): {}",
                args.schemas.display(),
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ))
        })?;
        let kind = own_kind(args);
        if let Some(kind) = kind.as_ref().filter(|k| !schemas.kinds().contains(k)) {
            return Err(ToolkitError::File(format!(
                "--kind {kind}: no view in {} is for that kind; the kinds are {}",
                args.schemas.display(),
                schemas
                    .kinds()
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        Some((schemas, kind))
    } else {
        None
    };
    let mut gateway = client.gateway_keys().await?;
    let mut cursor = "0".to_owned();
    let mut run = InboxRun::default();
    loop {
        let page = client
            .inbox(&cursor, if args.follow { 30 } else { 0 })
            .await?;
        let messages = page["messages"].as_array().cloned().unwrap_or_default();
        let mut refreshed = false;
        for m in &messages {
            let Some(id) = m["id"].as_str() else { continue };
            // The id names a file under --out and a URL path: only a delivery id's shape.
            if crate::ids::DeliveryId::parse(id).is_err() {
                run.unopened += 1;
                report(Outcome::Unopened {
                    id,
                    why: "the gateway listed something that is not a delivery id",
                });
                continue;
            }
            let mut fetched = client.fetch(id, &gateway).await;
            // The gateway's keys may have been rotated since they were read: read them again,
            // at most once per page, and try once more. If they cannot be read, the first
            // answer stands.
            if matches!(fetched, Err(ClientError::Jose(_))) && !refreshed {
                refreshed = true;
                if let Ok(keys) = client.gateway_keys().await {
                    gateway = keys;
                    fetched = client.fetch(id, &gateway).await;
                }
            }
            let delivery = match fetched {
                Ok(d) if d["jti"].as_str() == Some(id) => d,
                Ok(_) => {
                    run.unopened += 1;
                    report(Outcome::Unopened {
                        id,
                        why: "its signed claims are of another delivery",
                    });
                    continue;
                }
                Err(ClientError::Jose(why)) => {
                    run.unopened += 1;
                    report(Outcome::Unopened { id, why: &why });
                    continue;
                }
                Err(ClientError::Problem { status: 404, .. }) => {
                    report(Outcome::Gone { id });
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let bytes = serde_json::to_vec_pretty(&delivery)
                .map_err(|e| ToolkitError::File(e.to_string()))?;
            let path = write_durably(&args.out, &format!("{id}.json"), &bytes)
                .map_err(|e| ToolkitError::File(format!("{}: {e}", args.out.display())))?;
            if let Some((schemas, kind)) = &printable {
                let html = crate::printable::delivery_page(
                    schemas,
                    kind.as_ref(),
                    &partner_name,
                    &delivery,
                );
                write_durably(&args.out, &format!("{id}.html"), html.as_bytes())
                    .map_err(|e| ToolkitError::File(format!("{}: {e}", args.out.display())))?;
            }
            match client.ack(id).await {
                Ok(()) => {}
                Err(ClientError::Problem { status: 404, .. }) => {
                    report(Outcome::GoneAfterSaving { id, path: &path });
                    continue;
                }
                Err(e) => return Err(e.into()),
            }
            run.saved += 1;
            report(Outcome::Saved {
                delivery: &delivery,
                path: &path,
            });
        }
        cursor = page["next_cursor"].as_str().unwrap_or(&cursor).to_owned();
        if messages.is_empty() && !args.follow {
            return Ok(run);
        }
    }
}
