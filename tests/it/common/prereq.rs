//! What tests need from outside the repository: PostgreSQL, Chromium with chromedriver and
//! the NSS tools, and the outside test vectors (`../shared/testdata`, or `REFEX_TESTDATA`).
//! A test that cannot run its check never passes silently: a missing prerequisite fails it,
//! naming what is missing and how to get it, unless the run opts out of that prerequisite by
//! name in `REFEX_TEST_SKIP` (`postgres`, `browser`, `vectors`, `tmpfs`, `smtp`, comma-separated), which
//! prints `SKIPPED`. Under `CI=true` nothing may be skipped.

use std::path::PathBuf;

/// How to get each prerequisite.
fn how(name: &str) -> &'static str {
    match name {
        "postgres" => {
            "start PostgreSQL with trust auth and a `test` database on 127.0.0.1:5432 (or set REFEX_TEST_POSTGRES_URL); `.ci/run` does this on Debian"
        }
        "browser" => "apt-get install chromium chromium-driver libnss3-tools npm (`.ci/run` does)",
        "tmpfs" => "run the tests as root (the full-disk test mounts a small tmpfs)",
        "promtool" => {
            "put Prometheus's promtool on PATH or at target/promtool/promtool (`.ci/run` extracts it from Debian's prometheus package: apt-get download prometheus; dpkg-deb -x)"
        }
        "smtp" => {
            "apt-get install python3-aiosmtpd (a real SMTP server for the notification test; `.ci/run` does)"
        }
        "vectors" => {
            "the vectors live in ../shared/testdata beside the clone (or set REFEX_TESTDATA to that folder); see its README for their sources and licences"
        }
        _ => "see tests/it/common/prereq.rs",
    }
}

/// `true` when the prerequisite is there. When it is not: under `CI=true`, or unless
/// `REFEX_TEST_SKIP` names it, the test fails here; otherwise it prints `SKIPPED` and the
/// caller returns without checking anything.
pub fn available(name: &str, present: Result<(), String>) -> bool {
    let Err(why) = present else {
        return true;
    };
    let ci = std::env::var("CI").as_deref() == Ok("true");
    let opted_out = std::env::var("REFEX_TEST_SKIP")
        .unwrap_or_default()
        .split(',')
        .any(|s| s.trim() == name);
    if ci || !opted_out {
        panic!(
            "{name} unavailable ({why}): this test cannot run its check. To run it: {}. To skip it \
             knowingly (never under CI=true): REFEX_TEST_SKIP={name}",
            how(name)
        );
    }
    eprintln!("SKIPPED ({name} named in REFEX_TEST_SKIP): {why}");
    false
}

/// The outside test vectors' folder: `REFEX_TESTDATA`, or `../shared/testdata` beside the
/// repository.
pub fn testdata() -> PathBuf {
    std::env::var_os("REFEX_TESTDATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| super::repo().join("../shared/testdata"))
}
