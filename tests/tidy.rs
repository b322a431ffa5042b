//! Module boundaries the crate graph does not yet express (one crate for now), checked over
//! the source text, rust-analyzer "tidy" style. Each rule lists the modules allowed to cross
//! it; the tooling modules (`bench`, `devpki`, `partner_client`, `toolkit`) sit outside the
//! gateway's core and are exempt until they move out of the crate. Known debts are listed by
//! name so a new one fails here.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// `src/`-relative paths of files whose text contains any of `needles`, outside `allowed`.
fn crossing(needles: &[&str], allowed: &[&str]) -> Vec<String> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let tooling = [
        "bench/",
        "devpki.rs",
        "partner_client.rs",
        "toolkit.rs",
        "main.rs",
        "cli.rs",
    ];
    let mut out: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let rel = f.strip_prefix(&src).unwrap().to_string_lossy().into_owned();
            let exempt = tooling.iter().chain(allowed).any(|a| rel.starts_with(a));
            let text = std::fs::read_to_string(f).unwrap();
            (!exempt && needles.iter().any(|n| text.contains(n))).then_some(rel)
        })
        .collect();
    out.sort();
    out
}

#[test]
fn only_envelope_touches_jose() {
    assert_eq!(crossing(&["josekit"], &["envelope/"]), Vec::<String>::new());
}

#[test]
fn only_store_speaks_sql() {
    assert_eq!(
        crossing(&["sqlx::", "use sqlx"], &["store/"]),
        Vec::<String>::new()
    );
}

#[test]
fn only_the_shell_knows_http() {
    assert_eq!(
        crossing(
            &["axum::", "hyper::", "http::", "tower::"],
            &["api/", "console/", "server", "app.rs", "telemetry.rs"]
        ),
        Vec::<String>::new()
    );
}

#[test]
fn only_tls_and_server_touch_rustls() {
    // Known debt: `config` carries the built `rustls::ServerConfig` in its snapshot.
    assert_eq!(
        crossing(
            &["rustls::", "tokio_rustls"],
            &["tls.rs", "server", "app.rs", "config/mod.rs"]
        ),
        Vec::<String>::new()
    );
}

#[test]
fn the_decision_core_knows_no_runtime_store_or_http() {
    // The pure decisions: nothing of tokio, the store, HTTP or the runtime.
    for file in [
        "lifecycle.rs",
        "policy.rs",
        "lawful.rs",
        "intake/mod.rs",
        "intake/claims.rs",
        "intake/json.rs",
        "disclosure.rs",
        "audit/event.rs",
        "audit/tree.rs",
        "report.rs",
        "schema/document.rs",
        "schema/form.rs",
        "schema/order.rs",
        "printable.rs",
    ] {
        let text =
            std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src").join(file))
                .unwrap();
        for forbidden in [
            "tokio",
            "crate::runtime",
            "crate::store::Store",
            "axum",
            "sqlx",
        ] {
            assert!(
                !text.contains(forbidden),
                "{file} mentions {forbidden}: the decision core stays pure"
            );
        }
    }
}

#[test]
fn the_partner_guide_lists_every_allowed_value() {
    use refex::intake::{ConsentStatus, Override};
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let guide = std::fs::read_to_string(root.join("docs/partner-guide.md")).unwrap();
    let mut values: Vec<String> = Override::ALL
        .iter()
        .map(|o| o.as_str().to_owned())
        .collect();
    values.extend(ConsentStatus::ALL.iter().map(|c| c.as_str().to_owned()));
    values.extend(
        [
            "yes",
            "not-yet",
            "would-increase-risk",
            "would-prejudice-investigation",
            "unable-to-contact",
        ]
        .map(String::from),
    );
    for entry in std::fs::read_dir(root.join("schemas/types")).unwrap() {
        let path = entry.unwrap().path();
        values.push(path.file_stem().unwrap().to_string_lossy().into_owned());
    }
    let missing: Vec<&String> = values
        .iter()
        .filter(|v| !guide.contains(&format!("`{v}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/partner-guide.md does not list {missing:?}"
    );
}
