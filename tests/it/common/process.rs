//! Gateways as separate processes (`refex serve` of the built binary), for tests that kill,
//! signal or multiply them: start one in a project directory, talk to it over mutual TLS,
//! stop it gracefully or SIGKILL it.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_refex");

/// A fresh checkout's layout in a temporary directory: the shipped `partners/` and
/// `schemas/` linked in, no `refex.toml` and no PKI yet.
pub fn layout() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::os::unix::fs::symlink(super::repo().join("partners"), dir.path().join("partners"))
        .unwrap();
    std::os::unix::fs::symlink(super::repo().join("schemas"), dir.path().join("schemas")).unwrap();
    dir
}

/// Writes a `refex.toml` on random ports whose logs are JSON lines with the ready line in
/// them; `extra` is appended (whole tables).
pub fn write_toml(dir: &Path, extra: &str) {
    std::fs::write(
        dir.join("refex.toml"),
        format!(
            "mode = \"development\"\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n{extra}\n[log]\nformat = \"json\"\nfilter = \"warn,refex::app=info\"\n"
        ),
    )
    .unwrap();
}

/// A gateway process.
pub struct Served {
    pub child: Child,
    pub api: u16,
    pub admin: u16,
    pki: PathBuf,
}

/// Starts `refex serve` in `dir` on `store_url` and waits for its ready line.
pub fn serve(dir: &Path, store_url: &str) -> Served {
    serve_command(
        dir,
        Command::new(BIN).args(["serve", "--data-dir", "data", "--store-url", store_url]),
    )
}

/// As [`serve`], started with a soft open-file limit of `soft` (as a default systemd service
/// or a shell would give it), through `sh -c 'ulimit -Sn …; exec refex serve …'`.
pub fn serve_with_open_files(dir: &Path, store_url: &str, soft: u32) -> Served {
    serve_command(
        dir,
        Command::new("sh").args([
            "-c",
            &format!("ulimit -Sn {soft} && exec \"$0\" serve --data-dir data --store-url \"$1\""),
            BIN,
            store_url,
        ]),
    )
}

fn serve_command(dir: &Path, command: &mut Command) -> Served {
    let mut child = command
        .current_dir(dir)
        .env_remove("RUST_LOG")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let ready = loop {
        let mut line = String::new();
        assert!(
            stderr.read_line(&mut line).unwrap() > 0,
            "gateway exited before ready"
        );
        if line.contains("ready to accept") {
            break serde_json::from_str::<Value>(&line).unwrap();
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    std::thread::spawn(move || for _ in stderr.lines() {});
    let port = |key: &str| -> u16 {
        ready[key]
            .as_str()
            .unwrap()
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    Served {
        api: port("api"),
        admin: port("admin"),
        child,
        pki: dir.join("certs/dev"),
    }
}

impl Served {
    /// `https://localhost:<port><path>` of the API listener.
    pub fn url(&self, path: &str) -> String {
        format!("https://localhost:{}{path}", self.api)
    }

    /// `http://127.0.0.1:<port><path>` of the admin listener.
    pub fn admin_url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.admin)
    }

    /// A client presenting `partner`'s system certificate.
    pub fn system(&self, partner: &str) -> reqwest::Client {
        let dir = self.pki.join("partners").join(partner);
        super::client(
            &self.pki,
            Some((&dir.join("system.pem"), &dir.join("system.key"))),
            None,
        )
    }

    /// SIGKILL, as a crash.
    pub fn kill(&self) {
        signal(&self.child, "-KILL");
    }

    /// The process itself, for a test that kills and waits for it on its own (it is no
    /// longer killed when this is dropped).
    pub fn into_parts(mut self) -> (Child, u16, u16) {
        let placeholder = Command::new("true").spawn().unwrap();
        let child = std::mem::replace(&mut self.child, placeholder);
        (child, self.api, self.admin)
    }

    /// SIGTERM, and the exit it must make (0).
    pub fn stop(mut self) {
        signal(&self.child, "-TERM");
        assert!(self.child.wait().unwrap().success());
    }
}

impl Drop for Served {
    /// A test that fails mid-way must not leave its gateway running (holding the test
    /// harness's pipes open, and the machine's cores busy).
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn signal(child: &Child, sig: &str) {
    Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
}
