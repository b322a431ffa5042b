//! The binary's commands, one function each, called by `main`'s dispatch: each reads its
//! settings, runs the library's work and prints what people read. `anyhow` lives here and in
//! `main.rs`, the binary's edge, and nowhere in the library.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;

use refex::cli::{OutputFormat, ReportFormat};
use refex::clock::{Clock as _, SystemClock};
use refex::config::{self, Overrides};
use refex::partner_client::ClientError;
use refex::toolkit::ToolkitError;

/// What every command may need from the command line itself.
pub(crate) struct Ctx<'a> {
    /// `--config`.
    pub(crate) config: &'a Path,
    /// Whether `--config` was given (a missing explicit file is an error; the default may be
    /// absent).
    pub(crate) explicit: bool,
}

/// `refex serve`: the gateway, until SIGTERM or SIGINT; SIGHUP reloads.
pub(crate) async fn serve(ctx: &Ctx<'_>, args: refex::cli::ServeArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        listen: args.listen.map(|a| a.to_string()),
        admin_listen: args.admin_listen.map(|a| a.to_string()),
        data_dir: args.data_dir,
        store_url: args.store_url,
    };
    let settings = config::load_settings(ctx.config, ctx.explicit, &overrides)?;
    refex::telemetry::init_logging(&settings.log);
    // Every signal handler exists before anything listens: a SIGHUP or SIGTERM sent
    // the moment the gateway says it is ready is handled, never the default action.
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangups = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;
    let mut terms = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupts =
        signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let running = refex::app::start(settings, Arc::new(SystemClock)).await?;
    // SIGHUP reloads partners, agreements, schemas, keys and CRLs; a bad
    // configuration is refused whole and logged, the old one keeps serving.
    let rt = running.runtime.clone();
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            let _ = refex::reload::reload(&rt, "operator:sighup").await;
        }
    });
    let stop = running.stopper();
    tokio::spawn(async move {
        tokio::select! {
            _ = terms.recv() => {}
            _ = interrupts.recv() => {}
        }
        tracing::info!("shutdown requested: no new connections; finishing in-flight requests");
        let _ = sd_notify::notify(&[sd_notify::NotifyState::Stopping]);
        let _ = stop.send(true);
    });
    // Listeners bound and every handler in place: only now say ready (log line,
    // then systemd's READY=1; nothing without NOTIFY_SOCKET).
    running.announce_ready();
    if let Err(e) = sd_notify::notify(&[sd_notify::NotifyState::Ready]) {
        tracing::warn!(error = %e, "could not notify systemd of readiness");
    }
    running.wait().await;
    tracing::info!("refex stopped");
    Ok(())
}

/// `refex purge`: one housekeeping pass, then exit.
pub(crate) async fn purge(ctx: &Ctx<'_>, args: refex::cli::PurgeArgs) -> anyhow::Result<()> {
    let overrides = store_overrides(args.data_dir, args.store_url);
    let settings = config::load_settings(ctx.config, ctx.explicit, &overrides)?;
    refex::telemetry::init_logging(&settings.log);
    let report = refex::app::housekeep_once(settings, Arc::new(SystemClock)).await?;
    println!(
        "expired {} deliveries, purged {} referral records, dropped {} replay markers",
        report.expired, report.purged, report.markers
    );
    Ok(())
}

/// `refex audit export`: the audit log as JSON lines.
pub(crate) async fn audit_export(
    ctx: &Ctx<'_>,
    args: refex::cli::AuditExportArgs,
) -> anyhow::Result<()> {
    let overrides = store_overrides(args.data_dir, args.store_url);
    let settings = config::load_settings(ctx.config, ctx.explicit, &overrides)?;
    let store = refex::store::open(&settings.store_url()).await?;
    let tmp = args.out.with_extension("partial");
    let mut file = std::io::BufWriter::new(
        refex::files::create_private(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?,
    );
    let n = refex::audit::export::export(store.as_ref(), &settings.gateway_id, &mut file).await?;
    drop(file);
    std::fs::rename(&tmp, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    store.close().await;
    eprintln!("exported {n} audit events to {}", args.out.display());
    Ok(())
}

/// `refex audit verify`: an exported log checked offline.
pub(crate) async fn audit_verify(args: refex::cli::AuditVerifyArgs) -> anyhow::Result<()> {
    let export = std::fs::read_to_string(&args.log)
        .with_context(|| format!("reading {}", args.log.display()))?;
    let jwks_text = if args.jwks.starts_with("http://") || args.jwks.starts_with("https://") {
        refex::tls::install_default_provider();
        reqwest::get(&args.jwks)
            .await?
            .error_for_status()?
            .text()
            .await?
    } else {
        std::fs::read_to_string(&args.jwks).with_context(|| format!("reading {}", args.jwks))?
    };
    let jwks = refex::envelope::keys::KeySet::parse_public(jwks_text.as_bytes(), &args.jwks)?;
    let trusted = match &args.checkpoint {
        Some(p) => {
            Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?)
        }
        None => None,
    };
    let trusted = trusted.map(|t| refex::audit::verify::trusted_checkpoint(&t));
    let v = refex::audit::verify::verify(&export, &jwks, trusted.as_deref())
        .map_err(|fault| anyhow::anyhow!("audit log verification FAILED: {fault}"))?;
    println!(
        "audit log OK: {} events, {} checkpoints, latest checkpoint at size {}",
        v.events, v.checkpoints, v.latest
    );
    Ok(())
}

/// `refex subject-access`: what a partner holds about a person.
pub(crate) async fn subject_access(
    ctx: &Ctx<'_>,
    args: refex::cli::SubjectAccessArgs,
) -> anyhow::Result<()> {
    let overrides = store_overrides(args.data_dir, args.store_url);
    let settings = config::load_settings(ctx.config, ctx.explicit, &overrides)?;
    let (config, store) = refex::app::open_offline(settings, &SystemClock).await?;
    let partner: refex::identity::PartnerId = args.partner.parse()?;
    anyhow::ensure!(
        config.policy.partners.contains_key(&partner),
        "unknown partner {partner}"
    );
    let ids = refex::subject::Identifiers {
        nhs_number: args.nhs_number,
        given: args.given,
        family: args.family,
        date_of_birth: args.dob,
    };
    let records = refex::access::subject_access_for(
        store.as_ref(),
        &config,
        &partner,
        &refex::audit::event::ActorRef::operator("refex-subject-access")?,
        &ids,
        SystemClock.unix_time(),
    )
    .await?;
    store.close().await;
    match args.format {
        OutputFormat::Json => println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "partner": partner, "referrals": records })
            )?
        ),
        OutputFormat::Csv => print!("{}", refex::disclosure::to_csv(&records)?),
    }
    Ok(())
}

/// `refex report`: suppressed aggregates.
pub(crate) async fn report(ctx: &Ctx<'_>, args: refex::cli::ReportArgs) -> anyhow::Result<()> {
    let overrides = store_overrides(args.data_dir, args.store_url);
    let settings = config::load_settings(ctx.config, ctx.explicit, &overrides)?;
    let (config, store) = refex::app::open_offline(settings, &SystemClock).await?;
    let now = SystemClock.unix_time();
    let actor = &refex::audit::event::ActorRef::operator("refex-report")?;
    let table = refex::access::aggregate_report(
        store.as_ref(),
        &config,
        actor,
        &args.from,
        &args.to,
        &args.by,
        now,
    )
    .await?;
    if let Some(path) = &args.chart {
        let chart = refex::access::aggregate_report(
            store.as_ref(),
            &config,
            actor,
            &args.from,
            &args.to,
            "month,type",
            now,
        )
        .await?;
        std::fs::write(path, refex::report::chart_svg(&chart))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("chart written to {}", path.display());
    }
    store.close().await;
    match args.format {
        ReportFormat::Table => print!("{}", refex::report::render_text(&table)),
        ReportFormat::Json => println!("{}", serde_json::to_string_pretty(&table)?),
        ReportFormat::Csv => print!("{}", refex::report::to_csv(&table)?),
    }
    Ok(())
}

/// `refex keys rotate`: new gateway keys, the old ones retiring.
pub(crate) async fn keys_rotate(ctx: &Ctx<'_>, args: refex::cli::RotateArgs) -> anyhow::Result<()> {
    let overrides = store_overrides(args.data_dir, args.store_url);
    let settings = config::load_settings(ctx.config, ctx.explicit, &overrides)?;
    let path = settings.pki().gateway_jwks;
    let (_, store) = refex::app::open_offline(settings, &SystemClock).await?;
    let rotation = refex::rotation::rotate(
        &path,
        args.grace,
        &SystemClock,
        store.as_ref(),
        "operator:refex-keys-rotate",
    )
    .await;
    store.close().await;
    let rotation = rotation?;
    println!(
        "new keys: enc {} and sig {}; retiring {} at {} (Unix time)",
        rotation.enc,
        rotation.sig,
        rotation.retiring.join(", "),
        rotation.retire_at
    );
    println!("reload every gateway (SIGHUP or POST /admin/reload) to use them");
    Ok(())
}

/// `refex keys init`: production gateway keys, written once.
pub(crate) fn keys_init(args: refex::cli::KeysInitArgs) -> anyhow::Result<()> {
    println!("{}", refex::provision::init_keys(&args.dir)?);
    Ok(())
}

/// `refex ca …`: the partnership's CA.
pub(crate) fn ca(cmd: refex::cli::CaCommand) -> anyhow::Result<()> {
    println!("{}", refex::ca::run(&cmd, SystemClock.now())?);
    Ok(())
}

/// `refex keys hosted`: a hosted partner's keys.
pub(crate) fn keys_hosted(ctx: &Ctx<'_>, args: refex::cli::HostedKeysArgs) -> anyhow::Result<()> {
    let settings = config::load_settings(ctx.config, ctx.explicit, &Overrides::default())?;
    let partner = args.partner.parse()?;
    let done = refex::hosted::onboard(&settings, &partner)?;
    println!("{done}");
    Ok(())
}

/// `refex bench`: runs the `refex-bench` binary beside this one (the benchmark is tooling,
/// kept out of the gateway binary) with this command line, and answers with its exit status.
pub(crate) fn bench() -> anyhow::Result<()> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let bench = exe.with_file_name("refex-bench");
    if !bench.is_file() {
        anyhow::bail!(
            "{} is not built: `cargo build` (`--release` for real numbers) builds it beside refex (the benchmark is its own binary)",
            bench.display()
        );
    }
    let status = std::process::Command::new(&bench)
        .args(std::env::args_os().skip(1))
        .status()
        .with_context(|| format!("running {}", bench.display()))?;
    if status.success() {
        Ok(())
    } else {
        anyhow::bail!("the benchmark failed ({status})")
    }
}

/// With `--json`, a refusal's problem document goes to standard output as the gateway sent
/// it (a script reads one JSON document either way) and the exit status still says it
/// failed; without, the error is printed for people by `main`.
fn json_problem<T>(json: bool, result: Result<T, ToolkitError>) -> anyhow::Result<T> {
    match result {
        Err(ToolkitError::Client(ClientError::Problem { status, problem })) if json => {
            // Standard output stays JSON: a body that is not (a proxy's page, a wrong path)
            // is described in a problem document of the same shape.
            if serde_json::from_str::<serde_json::Value>(&problem).is_ok_and(|v| v.is_object()) {
                println!("{problem}");
            } else {
                println!(
                    "{}",
                    serde_json::json!({
                        "title": "Not a problem document",
                        "status": status,
                        "detail": "the address answered with something other than a problem \
                                   document: is --gateway the gateway's address?"
                    })
                );
            }
            anyhow::bail!("the gateway refused the request ({status})")
        }
        other => Ok(other?),
    }
}

/// A sender's view of a referral (`send`, `status`, `withdraw` answers) in words.
fn print_deliveries(answer: &serde_json::Value) {
    use refex::partner_client::terminal_safe as safe;
    let words = |v: &serde_json::Value| {
        v.as_str()
            .and_then(refex::lifecycle::DeliveryStatus::parse)
            .map_or("status unknown to this version", |s| s.words())
    };
    println!("referral {}", safe(answer["id"].as_str().unwrap_or("?")));
    for d in answer["deliveries"].as_array().into_iter().flatten() {
        let reason = d["review_reason"]
            .as_str()
            .map(|r| format!(" (the lead's reason: {})", safe(r)))
            .unwrap_or_default();
        println!(
            "  to {}: {}{reason}",
            safe(d["to"].as_str().unwrap_or("?")),
            words(&d["status"])
        );
    }
    for (key, label) in [
        ("supersedes", "corrects"),
        ("superseded_by", "corrected by"),
    ] {
        if let Some(id) = answer[key].as_str() {
            println!("  {label} {}", safe(id));
        }
    }
}

/// `refex send`: a referral, as a partner.
pub(crate) async fn send(args: Box<refex::cli::SendArgs>) -> anyhow::Result<()> {
    let claims = refex::toolkit::claims(&args)?;
    let sent = async { Ok(refex::toolkit::client(&args.who)?.send(&claims).await?) }.await;
    let answer = json_problem(args.json, sent)?;
    if args.json {
        println!("{answer}");
    } else {
        print_deliveries(&answer);
    }
    Ok(())
}

/// `refex status`: a sent referral's status, as its sender.
pub(crate) async fn status(args: refex::cli::PartnerIdArgs) -> anyhow::Result<()> {
    let got = async { Ok(refex::toolkit::client(&args.who)?.status(&args.id).await?) }.await;
    let answer = json_problem(args.json, got)?;
    if args.json {
        println!("{answer}");
    } else {
        print_deliveries(&answer);
    }
    Ok(())
}

/// `refex withdraw`: a sent referral withdrawn, as its sender.
pub(crate) async fn withdraw(args: refex::cli::PartnerIdArgs) -> anyhow::Result<()> {
    let done = async {
        Ok(refex::toolkit::client(&args.who)?
            .withdraw(&args.id)
            .await?)
    }
    .await;
    let answer = json_problem(args.json, done)?;
    if args.json {
        println!("{answer}");
    } else {
        print_deliveries(&answer);
    }
    Ok(())
}

/// `refex inbox`: deliveries fetched, as a recipient.
pub(crate) async fn inbox(args: refex::cli::InboxArgs) -> anyhow::Result<()> {
    use refex::partner_client::terminal_safe;
    use refex::toolkit::Outcome;
    let json = args.json;
    let run = refex::toolkit::inbox(&args, |outcome| match outcome {
        Outcome::Saved { delivery: d, path } if json => println!(
            "{}",
            serde_json::json!({ "id": d["jti"], "from": d["delivery"]["from"],
            "type": d["delivery"]["type"], "file": path.display().to_string() })
        ),
        Outcome::Saved { delivery: d, path } => {
            let safe = |v: &serde_json::Value| terminal_safe(v.as_str().unwrap_or("?"));
            eprintln!(
                "saved {} from {} ({}) to {}",
                safe(&d["jti"]),
                safe(&d["delivery"]["from"]),
                safe(&d["delivery"]["type"]),
                terminal_safe(&path.display().to_string())
            );
        }
        Outcome::Unopened { id, why } if json => println!(
            "{}",
            serde_json::json!({ "id": terminal_safe(id), "unopened": why,
            "left": "in the inbox, not acknowledged" })
        ),
        Outcome::Unopened { id, why } => eprintln!(
            "could not open {} ({}): left in the inbox, not acknowledged; it may be damaged, \
             or sealed or signed with keys this partner does not hold: check your keys, \
             or ask the gateway's operators",
            terminal_safe(id),
            terminal_safe(why)
        ),
        Outcome::Gone { id } if json => println!(
            "{}",
            serde_json::json!({ "id": id,
            "gone": "withdrawn, expired or acknowledged elsewhere before it was fetched" })
        ),
        Outcome::Gone { id } => eprintln!(
            "{} was withdrawn, expired or acknowledged elsewhere before it was fetched: \
             nothing to save",
            terminal_safe(id)
        ),
        Outcome::GoneAfterSaving { id, path } if json => println!(
            "{}",
            serde_json::json!({ "id": id, "file": path.display().to_string(),
            "gone": "withdrawn, expired or acknowledged elsewhere after it was saved" })
        ),
        Outcome::GoneAfterSaving { id, path } => eprintln!(
            "{} was withdrawn, expired or acknowledged elsewhere after it was saved to {}: \
             ask the sender before acting on it",
            terminal_safe(id),
            terminal_safe(&path.display().to_string())
        ),
    })
    .await;
    let run = json_problem(json, run)?;
    if !json {
        eprintln!("{} deliveries saved and acknowledged", run.saved);
    }
    if run.unopened > 0 {
        anyhow::bail!(
            "{} deliveries could not be opened and are still in the inbox",
            run.unopened
        );
    }
    Ok(())
}

/// `refex dev-pki`: the development PKI.
pub(crate) fn dev_pki(ctx: &Ctx<'_>, args: refex::cli::DevPkiArgs) -> anyhow::Result<()> {
    let settings = config::load_settings(ctx.config, ctx.explicit, &Overrides::default())?;
    let summary = refex::devpki::generate(
        &args.out,
        &settings.partners_dir,
        &settings.agreements,
        args.force,
        SystemClock.now(),
    )?;
    eprintln!(
        "Wrote a {} PKI to {}: gateway, {} partners, {} people.\n\
         Never use it for real referrals.",
        refex::devpki::DEV_ONLY,
        summary.dir.display(),
        summary.partners.len(),
        summary.people
    );
    Ok(())
}

pub(crate) fn store_overrides(
    data_dir: Option<std::path::PathBuf>,
    store_url: Option<String>,
) -> Overrides {
    Overrides {
        data_dir,
        store_url,
        ..Overrides::default()
    }
}
