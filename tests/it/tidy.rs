//! Boundaries checked here, rust-analyzer "tidy" style: the crate graph's own (the pure core
//! crate's dependencies, read from `Cargo.lock`), and the module boundaries inside the
//! gateway crate that the graph does not yet express, checked over the source text. Each
//! rule lists the modules allowed to cross it; the tooling modules (`devpki`, `toolkit`) sit
//! outside the gateway's core and are exempt (the partner SDK and the benchmark have moved out
//! of the crate: `crates/refex-partner`, `crates/refex-bench`). Known debts are listed by name
//! so a new one fails here.

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
        "devpki.rs",
        "toolkit.rs",
        "main.rs",
        "cli_commands.rs",
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

/// Every crate `root` depends on, directly or not, by name, from `Cargo.lock` (every
/// version of a name counts: conservative).
fn dependencies_of(root: &str) -> std::collections::BTreeSet<String> {
    let lock: toml::Table =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.lock"))
            .unwrap()
            .parse()
            .unwrap();
    let mut edges: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for package in lock["package"].as_array().unwrap() {
        let name = package["name"].as_str().unwrap().to_owned();
        let deps = package
            .get("dependencies")
            .and_then(|d| d.as_array())
            .map(|d| {
                d.iter()
                    .map(|v| v.as_str().unwrap().split(' ').next().unwrap().to_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        edges.entry(name).or_default().extend(deps);
    }
    assert!(edges.contains_key(root), "{root} is not in Cargo.lock");
    let mut seen = std::collections::BTreeSet::new();
    let mut todo = vec![root.to_owned()];
    while let Some(next) = todo.pop() {
        for dep in edges.get(&next).into_iter().flatten() {
            if seen.insert(dep.clone()) {
                todo.push(dep.clone());
            }
        }
    }
    seen
}

/// Crate families that speak HTTP or serve it.
const WEB: &[&str] = &[
    "axum", "hyper", "http", "h2", "h3", "tower", "reqwest", "lettre", "tonic", "warp",
];
/// Crate families that are an async runtime or its sockets, a TLS stack, or a database.
const RUNTIME_TLS_SQL: &[&str] = &[
    "tokio",
    "mio",
    "async-std",
    "async-io",
    "smol",
    "socket2",
    "futures-executor",
    "rustls",
    "native-tls",
    "sqlx",
    "libsqlite3",
    "rusqlite",
    "postgres",
];

/// The crates in `deps` of any of these families (the name itself, or it and a `-` or `_`).
fn of_families<'a>(
    deps: &'a std::collections::BTreeSet<String>,
    families: &[&str],
) -> Vec<&'a str> {
    deps.iter()
        .map(String::as_str)
        .filter(|d| {
            families.iter().any(|f| {
                *d == *f || d.starts_with(&format!("{f}-")) || d.starts_with(&format!("{f}_"))
            })
        })
        .collect()
}

/// The core crate (`crates/refex-core`) cannot reach the network, a store or an async
/// runtime: no crate of those families is anywhere in its dependency graph (OpenSSL is
/// there, for JOSE only: `only_envelope_touches_jose`).
#[test]
fn the_core_crate_has_no_runtime_web_or_sql_dependency() {
    let deps = dependencies_of("refex-core");
    assert!(deps.contains("josekit"), "the graph was read: {deps:?}");
    assert!(!deps.contains("refex") && !deps.contains("refex-store"));
    // The family match itself works (it sees the store's).
    assert!(!of_families(&dependencies_of("refex-store"), RUNTIME_TLS_SQL).is_empty());
    let found = of_families(&deps, &[WEB, RUNTIME_TLS_SQL].concat());
    assert!(
        found.is_empty(),
        "refex-core depends on {found:?}: the core stays pure"
    );
}

#[test]
fn only_envelope_touches_jose() {
    // The envelope is in the core crate; the gateway uses it through its types only.
    assert_eq!(crossing(&["josekit"], &[]), Vec::<String>::new());
    let core = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/refex-core/src");
    let mut files = Vec::new();
    sources(&core, &mut files);
    for f in files {
        let rel = f
            .strip_prefix(&core)
            .unwrap()
            .to_string_lossy()
            .into_owned();
        if !rel.starts_with("envelope/") {
            assert!(
                !std::fs::read_to_string(&f).unwrap().contains("josekit"),
                "{rel} uses josekit outside the envelope"
            );
        }
    }
}

#[test]
fn only_store_speaks_sql() {
    // The store is its own crate (`crates/refex-store`): no gateway module speaks SQL.
    assert_eq!(crossing(&["sqlx::", "use sqlx"], &[]), Vec::<String>::new());
}

/// The benchmark is its own crate (`crates/refex-bench`, run by `refex bench`), outside the
/// gateway's dependency graph: the gateway depends neither on it nor on sqlx (the store is
/// the store crate's; only the benchmark seeds stores directly).
#[test]
fn the_benchmark_is_outside_the_gateway() {
    let manifest: toml::Table =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("Cargo.toml"))
            .unwrap()
            .parse()
            .unwrap();
    let direct = manifest["dependencies"].as_table().unwrap();
    for name in ["sqlx", "refex-bench", "criterion", "hdrhistogram"] {
        assert!(!direct.contains_key(name), "the gateway depends on {name}");
    }
    assert!(!dependencies_of("refex").contains("refex-bench"));
    assert!(dependencies_of("refex-bench").contains("refex"));
}

/// The store crate knows SQL and the core's types, and nothing of HTTP, TLS or the gateway.
#[test]
fn the_store_crate_knows_no_http_or_gateway() {
    let deps = dependencies_of("refex-store");
    assert!(
        deps.contains("sqlx") && deps.contains("refex-core"),
        "{deps:?}"
    );
    assert!(
        !deps.contains("refex"),
        "refex-store depends on the gateway"
    );
    // The family match itself works (it sees the gateway's).
    assert!(!of_families(&dependencies_of("refex"), WEB).is_empty());
    let found = of_families(&deps, &[WEB, &["rustls", "native-tls"]].concat());
    assert!(found.is_empty(), "refex-store depends on {found:?}");
}

/// The partner SDK (`crates/refex-partner`) is a client: the core's envelope and an HTTP
/// client, nothing of the gateway, its server framework or a store, so a partner's own
/// integration can use it without the gateway.
#[test]
fn the_partner_crate_is_a_client_only() {
    let deps = dependencies_of("refex-partner");
    assert!(
        deps.contains("reqwest") && deps.contains("refex-core"),
        "{deps:?}"
    );
    assert!(
        !deps.contains("refex") && !deps.contains("refex-store"),
        "refex-partner depends on the gateway or its store"
    );
    // (reqwest brings tower-http's client middleware; the server framework is axum.)
    let found = of_families(&deps, &["axum", "sqlx", "libsqlite3", "postgres"]);
    assert!(found.is_empty(), "refex-partner depends on {found:?}");
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
    // The configuration keeps the built TLS server configuration as the opaque
    // `tls::ServerTls`, in its `Transport` apart from the `Config` the decisions read.
    assert_eq!(
        crossing(
            &["rustls::", "tokio_rustls"],
            &["tls.rs", "server", "app.rs"]
        ),
        Vec::<String>::new()
    );
}

#[test]
fn the_decision_core_knows_no_runtime_store_or_http() {
    // The pure decisions: nothing of tokio, the store, HTTP or the runtime.
    // (Those in the core crate are checked by its dependency graph above.)
    for file in ["disclosure.rs", "report.rs", "printable.rs"] {
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
