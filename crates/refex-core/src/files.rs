//! Files the gateway and its tools write: private from the moment they exist. Directories
//! are created 0700 and files 0600 through the `open` call itself (never chmod'ed after),
//! so no moment exists when another user could open one. Replacing a file is durable: a
//! temporary file written and synced, renamed over the target, the directory synced.

use std::fs::{DirBuilder, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Mode of every directory the gateway creates.
pub const DIR_MODE: u32 = 0o700;
/// Mode of every file the gateway creates.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and any missing parents, each 0700. An existing directory is left as it is.
pub fn create_private_dir_all(dir: &Path) -> std::io::Result<()> {
    DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)
}

/// Creates (or truncates) `path` for writing, 0600 if it is created.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Creates `path` empty and 0600 if it does not exist; leaves an existing file alone. For
/// SQLite: its `-wal` and `-shm` files take the database file's mode.
pub fn touch_private(path: &Path) -> std::io::Result<()> {
    match OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
    {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Creates `path` (never replacing a file already there) and writes `bytes` to it, synced;
/// 0600 when `secret`, else 0644 (a public key set others may read). Parents are created
/// 0700.
pub fn write_new(path: &Path, bytes: &[u8], secret: bool) -> std::io::Result<()> {
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_private_dir_all(parent)?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(if secret { FILE_MODE } else { 0o644 })
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Writes `bytes` to `dir/name` durably and privately: `dir` created 0700 if missing, a
/// 0600 temporary file written and synced, renamed over the target, the directory synced.
/// Returns the target's path.
pub fn write_private_durably(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    create_private_dir_all(dir)?;
    let target = dir.join(name);
    let tmp = dir.join(format!(".{name}.partial"));
    {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(FILE_MODE)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &target)?;
    File::open(dir)?.sync_all()?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn what_is_created_is_private() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("a/b");
        create_private_dir_all(&dir).unwrap();
        assert_eq!(mode(&root.path().join("a")), DIR_MODE);
        assert_eq!(mode(&dir), DIR_MODE);
        let file = write_private_durably(&dir, "x.json", b"{}").unwrap();
        assert_eq!(mode(&file), FILE_MODE);
        assert!(!dir.join(".x.json.partial").exists());
        touch_private(&dir.join("db")).unwrap();
        assert_eq!(mode(&dir.join("db")), FILE_MODE);
        drop(create_private(&dir.join("out")).unwrap());
        assert_eq!(mode(&dir.join("out")), FILE_MODE);
    }
}
