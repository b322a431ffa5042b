//! The deployment files say what the binary really does: the Kubernetes manifests parse, their
//! flags are `refex serve`'s own, their ports and probes are the listeners' and answer on a
//! real gateway, their `refex.toml` loads with the real settings loader and points into the
//! mounted secrets; the container build is multi-stage and non-root; the systemd unit passes
//! `systemd-analyze verify` (where that exists); and the binary tells systemd it is ready
//! (`READY=1` on `NOTIFY_SOCKET`) once its listeners answer.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use crate::common;

use std::collections::BTreeSet;
use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_refex");

/// Every `--flag` that `refex serve --help` lists.
fn serve_flags() -> BTreeSet<String> {
    let out = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    help.split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(|w| {
            w.trim_end_matches([',', '='])
                .split('=')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect()
}

fn flags_in<'a>(args: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    args.into_iter()
        .filter(|a| a.starts_with("--"))
        .map(|a| a.split('=').next().unwrap().to_owned())
        .collect()
}

/// Every document of every manifest, as JSON.
fn manifests() -> Vec<Value> {
    let mut docs = Vec::new();
    for entry in std::fs::read_dir(common::repo().join("deploy/kubernetes")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for doc in serde_norway::Deserializer::from_str(&text) {
            let value: serde_norway::Value = serde::Deserialize::deserialize(doc)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            docs.push(serde_json::to_value(value).unwrap());
        }
    }
    docs
}

fn find<'a>(docs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    docs.iter()
        .find(|d| d["kind"] == kind && d["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name}"))
}

fn port_of(addr: &str) -> u64 {
    addr.rsplit(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn kubernetes_manifests_match_the_binary() {
    let docs = manifests();
    let deployment = find(&docs, "Deployment", "refex");
    let service = find(&docs, "Service", "refex");
    let pdb = find(&docs, "PodDisruptionBudget", "refex");
    find(&docs, "StatefulSet", "refex-postgres");
    find(&docs, "Service", "refex-postgres");
    let config = find(&docs, "ConfigMap", "refex-config");

    // The configuration loads with the real loader (unknown keys are refused there).
    let dir = tempfile::tempdir().unwrap();
    let toml_path = dir.path().join("refex.toml");
    std::fs::write(&toml_path, config["data"]["refex.toml"].as_str().unwrap()).unwrap();
    let settings =
        refex::config::load_settings(&toml_path, true, &refex::config::Overrides::default())
            .unwrap();
    assert_eq!(
        settings.mode,
        refex::config::settings::Mode::Production,
        "the shipped Kubernetes configuration runs in production mode"
    );

    // The admin port is reachable only from the monitoring namespace; the API port from
    // anywhere (mutual TLS decides).
    let policy = find(&docs, "NetworkPolicy", "refex");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        deployment["spec"]["selector"]["matchLabels"]
    );
    let rules = policy["spec"]["ingress"].as_array().unwrap();
    let rule_for = |port: &str| {
        rules
            .iter()
            .find(|r| {
                r["ports"]
                    .as_array()
                    .is_some_and(|ps| ps.iter().any(|p| p["port"] == port))
            })
            .unwrap_or_else(|| panic!("no ingress rule for the {port} port"))
    };
    let admin_from = rule_for("admin")["from"].as_array().unwrap();
    assert!(
        !admin_from.is_empty(),
        "the admin port must name who may reach it"
    );
    assert!(rule_for("api")["from"].is_null());
    assert!(
        rules.iter().all(|r| r["ports"].is_array()),
        "a rule without ports would open every port"
    );

    // Flags are serve's own.
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args: Vec<&str> = container["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "serve");
    let known = serve_flags();
    for flag in flags_in(args.iter().copied()) {
        assert!(
            known.contains(&flag),
            "{flag} is not a flag of refex serve: {known:?}"
        );
    }
    let env: Vec<&str> = container["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(env.contains(&"REFEX_STORE_URL"));

    // Ports are the configured listeners; probes use the admin listener's real paths.
    let port = |name: &str| {
        container["ports"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()["containerPort"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(port("api"), u64::from(settings.listen.port()));
    assert_eq!(port("admin"), u64::from(settings.admin_listen.port()));
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");
    assert_eq!(container["livenessProbe"]["httpGet"]["port"], "admin");
    // The project (its directory, the store's files) lives as long as the gateway.
    let project = common::Project::new();
    let gw = project.start().await;
    for probe in ["readinessProbe", "livenessProbe"] {
        let path = container[probe]["httpGet"]["path"].as_str().unwrap();
        let res = reqwest::get(gw.admin_url(path)).await.unwrap();
        let status = res.status();
        assert_eq!(status, 200, "{probe} {path}: {}", res.text().await.unwrap());
    }
    gw.stop().await;

    // The Service publishes only the API port (TLS passes through), the PDB keeps a quorum
    // of the Deployment's pods, and `replicas` is not typed in refex.toml: it is counted.
    let ports = service["spec"]["ports"].as_array().unwrap();
    assert_eq!(ports.len(), 1);
    assert_eq!(ports[0]["targetPort"], "api");
    let labels = &deployment["spec"]["template"]["metadata"]["labels"];
    assert_eq!(pdb["spec"]["selector"]["matchLabels"], *labels);
    assert_eq!(service["spec"]["selector"], *labels);
    let replicas = deployment["spec"]["replicas"].as_u64().unwrap();
    // The image is tagged with this release, so manifests and binary cannot drift apart.
    let image = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap();
    assert!(
        image.ends_with(&format!(":{}", env!("CARGO_PKG_VERSION"))),
        "{image}"
    );
    // The store is backed up nightly, into its own volume, by the same PostgreSQL's tools.
    let backup = find(&docs, "CronJob", "refex-postgres-backup");
    let job = &backup["spec"]["jobTemplate"]["spec"]["template"]["spec"];
    assert!(
        job["containers"][0]["command"][2]
            .as_str()
            .unwrap()
            .contains("pg_dump"),
        "{backup}"
    );
    assert_eq!(backup["spec"]["concurrencyPolicy"], "Forbid");
    find(&docs, "PersistentVolumeClaim", "refex-postgres-backup");
    // Counted in the store, never typed twice.
    assert_eq!(settings.replicas, None, "refex.toml must not fix replicas");
    // The budget is relative (one pod at a time), so it cannot disagree with `replicas`.
    assert_eq!(pdb["spec"]["maxUnavailable"], 1, "{pdb}");
    assert!(pdb["spec"].get("minAvailable").is_none(), "{pdb}");
    assert!(replicas >= 2, "a quorum needs two or more replicas");

    // Non-root, read-only, no privileges.
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );

    // Every certificate and key the configuration names is under a mounted secret.
    let mounts: Vec<(String, String)> = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap().to_owned(),
                m["mountPath"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let secret_volumes: Vec<&str> = pod["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["secret"].is_object())
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    let pki = settings.pki();
    assert!(
        !pki.dev,
        "the manifests must not run on the development PKI"
    );
    let files = [
        pki.server_cert,
        pki.server_key,
        pki.client_ca,
        pki.gateway_jwks,
        pki.storage_key,
        pki.subject_key,
    ]
    .into_iter()
    .chain(pki.crls);
    for file in files {
        let file = file.display().to_string();
        assert!(
            mounts
                .iter()
                .any(|(name, path)| secret_volumes.contains(&name.as_str())
                    && file.starts_with(&format!("{path}/"))),
            "{file} is not in a mounted secret"
        );
    }
    // The CRL is replaced weekly on its own: never in the Secret that holds the server key.
    let dir_of = |p: &std::path::Path| p.parent().unwrap().to_owned();
    for crl in &settings.pki().crls {
        assert_ne!(
            dir_of(crl),
            dir_of(&settings.pki().server_key),
            "{}",
            crl.display()
        );
    }
}

#[test]
fn the_container_build_is_multi_stage_and_runs_unprivileged() {
    let text = std::fs::read_to_string(common::repo().join("deploy/Containerfile")).unwrap();
    let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
    assert_eq!(lines.iter().filter(|l| l.starts_with("FROM ")).count(), 2);
    let user = lines.iter().find(|l| l.starts_with("USER ")).unwrap();
    assert!(!user.contains("root") && !user.contains(" 0"), "{user}");
    let cmd = lines.iter().find(|l| l.starts_with("CMD ")).unwrap();
    let cmd: Vec<String> = serde_json::from_str(cmd.trim_start_matches("CMD ")).unwrap();
    assert_eq!(cmd[0], "serve");
    let known = serve_flags();
    for flag in flags_in(cmd.iter().map(String::as_str)) {
        assert!(known.contains(&flag), "{flag} is not a flag of refex serve");
    }
    let listen = cmd.iter().position(|a| a == "--listen").unwrap();
    let admin = cmd.iter().position(|a| a == "--admin-listen").unwrap();
    let expose = lines.iter().find(|l| l.starts_with("EXPOSE ")).unwrap();
    assert!(expose.contains(&port_of(&cmd[listen + 1]).to_string()));
    assert!(expose.contains(&port_of(&cmd[admin + 1]).to_string()));
    // The build stage copies every workspace member and the migrations the store embeds (a
    // missing one fails only when someone builds the image).
    let copied: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.strip_prefix("COPY "))
        .filter(|l| !l.starts_with("--from"))
        .filter_map(|l| l.split(' ').next())
        .map(|from| from.trim_end_matches('/'))
        .collect();
    let covers = |path: &str| {
        copied
            .iter()
            .any(|from| path == *from || path.starts_with(&format!("{from}/")))
    };
    assert!(
        covers("migrations"),
        "the Containerfile does not copy migrations/"
    );
    let manifest: toml::Table = std::fs::read_to_string(common::repo().join("Cargo.toml"))
        .unwrap()
        .parse()
        .unwrap();
    for member in manifest["workspace"]["members"].as_array().unwrap() {
        let member = member.as_str().unwrap();
        if member == "." {
            continue;
        }
        assert!(
            covers(member),
            "the Containerfile does not copy the workspace member {member}"
        );
    }
}

#[test]
fn the_systemd_unit_uses_real_flags_and_verifies() {
    let unit = std::fs::read_to_string(common::repo().join("deploy/refex.service")).unwrap();
    assert!(
        unit.lines().any(|l| l == "Type=notify"),
        "readiness comes from sd_notify"
    );
    assert!(
        unit.lines()
            .any(|l| l.starts_with("ExecReload=") && l.contains("-HUP"))
    );
    let exec = unit.lines().find(|l| l.starts_with("ExecStart=")).unwrap();
    let args: Vec<&str> = exec
        .trim_start_matches("ExecStart=")
        .split_whitespace()
        .collect();
    assert_eq!(args[1], "serve");
    let known = serve_flags();
    for flag in flags_in(args.iter().copied()) {
        assert!(known.contains(&flag), "{flag} is not a flag of refex serve");
    }
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed; the unit was checked by hand only");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let local = dir.path().join("refex.service");
    std::fs::write(&local, unit.replace("/usr/local/bin/refex", BIN)).unwrap();
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&local)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The unit's system-call filter keeps every call the gateway makes outside
/// `@system-service`'s usual set: `setpriority` (the CPU threads lower their own priority;
/// an outside review found the unit's `~@resources` killed the gateway with SIGSYS on the
/// first submission), and a refused call is an error, not a kill.
#[test]
fn the_systemd_units_call_filter_keeps_what_the_gateway_calls() {
    let unit = std::fs::read_to_string(common::repo().join("deploy/refex.service")).unwrap();
    assert!(
        unit.lines().any(|l| l == "SystemCallErrorNumber=EPERM"),
        "a filtered call must fail with EPERM, not kill the gateway"
    );
    let filters: Vec<&str> = unit
        .lines()
        .filter_map(|l| l.strip_prefix("SystemCallFilter="))
        .collect();
    let analyze = Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !analyze {
        // The groups cannot be expanded: the call must be named in an allowing line after
        // every denying one.
        let last_naming = filters
            .iter()
            .rposition(|l| !l.starts_with('~') && l.split_whitespace().any(|e| e == "setpriority"));
        assert!(
            last_naming > filters.iter().rposition(|l| l.starts_with('~')),
            "the unit's SystemCallFilter refuses setpriority, which the gateway calls"
        );
        eprintln!("systemd-analyze is not installed; the filter's groups were not expanded");
        return;
    }
    let mut allowed = std::collections::BTreeSet::new();
    for line in &filters {
        let (deny, list) = match line.strip_prefix('~') {
            Some(rest) => (true, rest),
            None => (false, *line),
        };
        for entry in list.split_whitespace() {
            for call in syscalls_in(entry) {
                if deny {
                    allowed.remove(&call);
                } else {
                    allowed.insert(call);
                }
            }
        }
    }
    for call in ["setpriority", "getpriority"] {
        assert!(
            allowed.contains(call),
            "the unit's SystemCallFilter refuses {call}, which the gateway calls"
        );
    }
}

/// The system calls a `SystemCallFilter=` entry names: a group expanded by `systemd-analyze`
/// (nested groups too), or the call itself.
fn syscalls_in(entry: &str) -> Vec<String> {
    if !entry.starts_with('@') {
        return vec![entry.to_owned()];
    }
    let out = Command::new("systemd-analyze")
        .args(["syscall-filter", entry])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "systemd-analyze syscall-filter {entry}"
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .skip(1) // the group's own name
        .flat_map(syscalls_in)
        .collect()
}

#[test]
fn serve_tells_systemd_it_is_ready_once_listening() {
    use std::os::unix::net::UnixDatagram;
    let project = common::Project::new();
    common::process::write_toml(project.path(), "");
    let socket_path = project.path().join("notify.sock");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut child = Command::new(BIN)
        .current_dir(project.path())
        .args(["serve", "--data-dir", "data"])
        .env("NOTIFY_SOCKET", &socket_path)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let ready_line = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("ready to accept"))
    });
    let mut buf = [0u8; 256];
    let n = socket.recv(&mut buf).unwrap();
    let message = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(message.lines().any(|l| l == "READY=1"), "{message:?}");
    // By then the admin listener answers.
    let line = ready_line.join().unwrap().unwrap();
    let ready: Value = serde_json::from_str(&line).unwrap();
    let admin = ready["admin"].as_str().unwrap().to_owned();
    let status = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(async move {
            reqwest::get(format!("http://{admin}/healthz"))
                .await
                .unwrap()
                .status()
        });
    assert_eq!(status, 200);
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(child.wait().unwrap().success());
}
