//! A keystore in a local directory, byte-compatible with KES's filesystem keystore: entry
//! `<name>` is the file `<dir>/<name>` holding the raw value, mode 0600. A directory written by
//! KES can be served as is, and KES can serve a directory written here.
//!
//! KES creates the final file with `O_EXCL` and then writes it, so a crash mid-write leaves a
//! truncated entry that can never be created again. Here the value is first written and fsynced
//! to a temporary file in the same directory, then hard-linked to the final name. `link(2)`
//! fails if the target exists, so it is the create-if-absent step and is atomic: the entry
//! appears complete or not at all. Temporary names start with `.`, which no key name can
//! contain, so they never show up as entries. The directory is fsynced after a create or delete
//! before it is acknowledged, so an acknowledged change survives a crash.
//!
//! Name rules follow KES: empty names and names containing `/`, `\` or `.` are refused; so are
//! NUL and names longer than a file name may be. Refused names are never joined to the
//! directory path, so no request can reach outside it. Creating such a name is
//! [`StoreError::Invalid`]; reading or deleting one is [`StoreError::NotFound`], because no
//! such entry can exist.

use crate::{page_from, KeyStore, ListPage, StoreError, StoreStatus, MAX_VALUE_LEN};
use async_trait::async_trait;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

/// File mode of entries, as KES writes them: the values are key material.
const FILE_MODE: u32 = 0o600;
/// Mode of the directory when it has to be created, as KES does.
const DIR_MODE: u32 = 0o755;
/// Longest name accepted: the usual file-name limit (`NAME_MAX`).
const MAX_NAME_LEN: usize = 255;
/// Prefix of temporary files. The leading `.` keeps them out of the key namespace.
const TEMP_PREFIX: &str = ".kes-tmp-";
/// Attempts at finding an unused temporary name; 64 random bits make a second one unlikely.
const TEMP_ATTEMPTS: usize = 8;
/// Temporary files older than this are left over from a crash and removed by [`FsStore::open`].
/// Younger ones may belong to a create in flight in another process sharing the directory.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60 * 60);

/// A keystore in a directory, in KES's filesystem layout. Cheap to clone.
#[derive(Clone, Debug)]
pub struct FsStore {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    dir: PathBuf,
    /// Set once the filesystem refuses hard links (some network and FAT filesystems); creates
    /// then fall back to KES's own write-in-place.
    no_links: AtomicBool,
}

impl FsStore {
    /// Opens the store in `dir`, creating it and its parents with mode 0755 if missing, and
    /// removes temporary files that a crash left behind. Blocks; call it at startup.
    pub fn open(dir: impl Into<PathBuf>) -> Result<FsStore, StoreError> {
        let dir = dir.into();
        DirBuilder::new()
            .recursive(true)
            .mode(DIR_MODE)
            .create(&dir)
            .map_err(|e| io_error("create directory", &dir, e, true))?;
        let meta = fs::metadata(&dir).map_err(|e| io_error("stat", &dir, e, true))?;
        if !meta.is_dir() {
            return Err(StoreError::unavailable(
                false,
                format!("fs: {} is not a directory", dir.display()),
            ));
        }
        remove_stale_temp_files(&dir, STALE_TEMP_AGE);
        Ok(FsStore {
            inner: Arc::new(Inner {
                dir,
                no_links: AtomicBool::new(false),
            }),
        })
    }

    /// The directory holding the entries.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// Runs blocking file I/O off the async workers. `retryable` describes the outcome when the
    /// task itself is lost (runtime shutdown): unknown for writes, harmless for reads.
    async fn blocking<T, F>(&self, retryable: bool, f: F) -> Result<T, StoreError>
    where
        F: FnOnce(&Inner) -> Result<T, StoreError> + Send + 'static,
        T: Send + 'static,
    {
        let inner = Arc::clone(&self.inner);
        match tokio::task::spawn_blocking(move || f(&inner)).await {
            Ok(result) => result,
            Err(e) => Err(StoreError::unavailable(
                retryable,
                format!("fs: i/o task did not complete: {e}"),
            )),
        }
    }
}

/// KES's rule plus what a file name cannot hold. Anything passing it is a single path component
/// other than `.` and `..`.
fn valid_name(name: &str) -> bool {
    !name.is_empty() && name.len() <= MAX_NAME_LEN && !name.contains(['/', '\\', '.', '\0'])
}

/// Maps an I/O error that is not an answer about the key itself (those are matched at the call
/// sites, where their meaning is known).
fn io_error(op: &str, path: &Path, err: io::Error, retryable: bool) -> StoreError {
    let message = format!("fs: {op} {}: {err}", path.display());
    match err.kind() {
        io::ErrorKind::PermissionDenied => StoreError::Denied(message),
        _ => StoreError::unavailable(retryable, message),
    }
}

/// Makes a change to the directory's entries durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Where writing a new file failed: only after `Open` succeeded does a file of ours exist.
enum WriteError {
    Open(io::Error),
    Write(io::Error),
}

/// Writes `value` to a new file at `path` and syncs it. Fails with `Open` and
/// `AlreadyExists` if `path` exists.
fn write_new(path: &Path, value: &[u8]) -> Result<(), WriteError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(WriteError::Open)?;
    file.write_all(value)
        .and_then(|()| file.sync_all())
        .map_err(WriteError::Write)
}

/// Removes a file the create wrote and no longer needs; failing leaves only an invisible
/// temporary file, or a truncated entry after a failed in-place write, so it is logged.
fn discard(path: &Path) -> bool {
    match fs::remove_file(path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::NotFound => true,
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "fs keystore: cannot remove file");
            false
        }
    }
}

fn create_blocking(inner: &Inner, name: &str, value: &[u8]) -> Result<(), StoreError> {
    let dir = inner.dir.as_path();
    let target = dir.join(name);
    if inner.no_links.load(Ordering::Relaxed) {
        return create_in_place(dir, &target, value);
    }
    let temp = write_temp(dir, value)?;
    let linked = fs::hard_link(&temp, &target);
    // Whatever the link did, the temporary name has served its purpose: on success the entry
    // holds the data, on failure nothing refers to it.
    discard(&temp);
    match linked {
        Ok(()) => sync_after_change(dir),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(StoreError::AlreadyExists),
        // EPERM/EOPNOTSUPP from link(2) in a directory we just wrote into means the filesystem
        // has no hard links.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::PermissionDenied | io::ErrorKind::Unsupported
            ) =>
        {
            tracing::warn!(
                dir = %dir.display(),
                error = %e,
                "fs keystore: hard links unsupported, creating entries in place; a crash during \
                 a create can leave a truncated entry"
            );
            inner.no_links.store(true, Ordering::Relaxed);
            create_in_place(dir, &target, value)
        }
        // link(2) failed, so nothing became visible: safe to retry.
        Err(e) => Err(io_error("link", &target, e, true)),
    }
}

/// Syncs the directory after an entry appeared or disappeared. The change is visible already
/// but not durable until this succeeds, so a failure is never retryable: a retry would see the
/// changed state (`AlreadyExists`, `NotFound`) and misreport.
fn sync_after_change(dir: &Path) -> Result<(), StoreError> {
    sync_dir(dir).map_err(|e| {
        StoreError::unavailable(false, format!("fs: sync directory {}: {e}", dir.display()))
    })
}

/// Writes `value` to a fresh temporary file in `dir` and returns its path.
fn write_temp(dir: &Path, value: &[u8]) -> Result<PathBuf, StoreError> {
    let mut last = None;
    for _ in 0..TEMP_ATTEMPTS {
        let temp = dir.join(format!("{TEMP_PREFIX}{:016x}", rand::random::<u64>()));
        match write_new(&temp, value) {
            Ok(()) => return Ok(temp),
            Err(WriteError::Open(e)) if e.kind() == io::ErrorKind::AlreadyExists => last = Some(e),
            Err(WriteError::Open(e)) => return Err(io_error("create", &temp, e, true)),
            Err(WriteError::Write(e)) => {
                discard(&temp);
                return Err(io_error("write", &temp, e, true));
            }
        }
    }
    let e = last.unwrap_or_else(|| io::Error::from(io::ErrorKind::AlreadyExists));
    Err(io_error("find a temporary name in", dir, e, true))
}

/// KES's own create, for filesystems without hard links.
fn create_in_place(dir: &Path, target: &Path, value: &[u8]) -> Result<(), StoreError> {
    match write_new(target, value) {
        Ok(()) => {}
        Err(WriteError::Open(e)) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(StoreError::AlreadyExists)
        }
        // Nothing was created.
        Err(WriteError::Open(e)) => return Err(io_error("create", target, e, true)),
        Err(WriteError::Write(e)) => {
            // A partial entry would block every later create of the name and read as a
            // corrupt key; only if it is gone again may the caller retry.
            let retryable = discard(target);
            return Err(io_error("write", target, e, retryable));
        }
    }
    sync_after_change(dir)
}

fn get_blocking(dir: &Path, name: &str) -> Result<Vec<u8>, StoreError> {
    let path = dir.join(name);
    let file = match File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound),
        Err(e) => return Err(io_error("open", &path, e, true)),
    };
    let meta = file
        .metadata()
        .map_err(|e| io_error("stat", &path, e, true))?;
    if !meta.is_file() {
        return Err(StoreError::Invalid(format!(
            "fs: {} is not a regular file",
            path.display()
        )));
    }
    // Read one byte past the limit to tell "exactly at the limit" from "too long"; KES
    // silently truncates, which would hand out a corrupt key.
    let hint = usize::try_from(meta.len())
        .unwrap_or(MAX_VALUE_LEN)
        .min(MAX_VALUE_LEN);
    let mut value = Vec::with_capacity(hint + 1);
    file.take(MAX_VALUE_LEN as u64 + 1)
        .read_to_end(&mut value)
        .map_err(|e| io_error("read", &path, e, true))?;
    if value.len() > MAX_VALUE_LEN {
        return Err(StoreError::Invalid(format!(
            "fs: {} is larger than {MAX_VALUE_LEN} bytes",
            path.display()
        )));
    }
    Ok(value)
}

fn delete_blocking(dir: &Path, name: &str) -> Result<(), StoreError> {
    let path = dir.join(name);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(StoreError::NotFound),
        // unlink(2) failed, so nothing changed.
        Err(e) => return Err(io_error("remove", &path, e, true)),
    }
    sync_after_change(dir)
}

fn list_blocking(
    dir: &Path,
    prefix: &str,
    continue_at: &str,
    limit: usize,
) -> Result<ListPage, StoreError> {
    let entries = fs::read_dir(dir).map_err(|e| io_error("read directory", dir, e, true))?;
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| io_error("read directory", dir, e, true))?;
        // Non-UTF-8 names cannot be key names, and temporary files fail the name rule.
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if !valid_name(&name) || !name.starts_with(prefix) {
            continue;
        }
        // Subdirectories and the like are not entries. An entry deleted since readdir has
        // no type any more; it is simply gone.
        match entry.file_type() {
            Ok(t) if t.is_file() || t.is_symlink() => names.push(name),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("stat", &entry.path(), e, true)),
        }
    }
    Ok(page_from(names, prefix, continue_at, limit))
}

/// Best-effort removal of temporary files older than `age`, left by a crash mid-create.
fn remove_stale_temp_files(dir: &Path, age: Duration) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for entry in entries.flatten() {
        let is_temp = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(TEMP_PREFIX));
        if !is_temp {
            continue;
        }
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|modified| now.duration_since(modified).ok())
            .is_some_and(|elapsed| elapsed >= age);
        if stale && discard(&entry.path()) {
            tracing::info!(path = %entry.path().display(), "fs keystore: removed stale temporary file");
        }
    }
}

#[async_trait]
impl KeyStore for FsStore {
    fn kind(&self) -> &'static str {
        "fs"
    }

    async fn create(&self, name: &str, value: &[u8]) -> Result<(), StoreError> {
        if !valid_name(name) {
            return Err(StoreError::Invalid(format!(
                "fs: {name:?} is not a valid key name for the filesystem keystore"
            )));
        }
        if value.len() > MAX_VALUE_LEN {
            return Err(StoreError::Invalid(format!(
                "value of {} bytes exceeds the limit of {MAX_VALUE_LEN} bytes",
                value.len()
            )));
        }
        let (name, value) = (name.to_owned(), value.to_vec());
        self.blocking(false, move |inner| create_blocking(inner, &name, &value))
            .await
    }

    async fn get(&self, name: &str) -> Result<Vec<u8>, StoreError> {
        if !valid_name(name) {
            return Err(StoreError::NotFound);
        }
        let name = name.to_owned();
        self.blocking(true, move |inner| get_blocking(&inner.dir, &name))
            .await
    }

    async fn delete(&self, name: &str) -> Result<(), StoreError> {
        if !valid_name(name) {
            return Err(StoreError::NotFound);
        }
        let name = name.to_owned();
        self.blocking(false, move |inner| delete_blocking(&inner.dir, &name))
            .await
    }

    async fn list(
        &self,
        prefix: &str,
        continue_at: &str,
        limit: usize,
    ) -> Result<ListPage, StoreError> {
        let (prefix, continue_at) = (prefix.to_owned(), continue_at.to_owned());
        self.blocking(true, move |inner| {
            list_blocking(&inner.dir, &prefix, &continue_at, limit)
        })
        .await
    }

    async fn status(&self) -> Result<StoreStatus, StoreError> {
        let started = Instant::now();
        self.blocking(true, |inner| {
            let meta = fs::metadata(&inner.dir).map_err(|e| {
                StoreError::unavailable(true, format!("fs: stat {}: {e}", inner.dir.display()))
            })?;
            if meta.is_dir() {
                Ok(())
            } else {
                Err(StoreError::unavailable(
                    true,
                    format!("fs: {} is not a directory", inner.dir.display()),
                ))
            }
        })
        .await?;
        Ok(StoreStatus {
            latency: started.elapsed(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use crate::conformance::{run_all_with, Options};
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FsStore::open(tmp.path().join("keys")).unwrap();
        run_all_with(Arc::new(store.clone()), Options::strict()).await;
        assert!(
            !store.inner.no_links.load(Ordering::Relaxed),
            "the atomic hard-link path was exercised, not the fallback"
        );
        // Every check cleaned up, including the temporary files of losing creates.
        assert_eq!(entries(&tmp.path().join("keys")), Vec::<String>::new());
    }

    /// The fallback for filesystems without hard links must meet the same contract.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn conformance_without_hard_links() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FsStore::open(tmp.path()).unwrap();
        store.inner.no_links.store(true, Ordering::Relaxed);
        run_all_with(Arc::new(store), Options::strict()).await;
        assert_eq!(entries(tmp.path()), Vec::<String>::new());
    }

    #[tokio::test]
    async fn open_creates_the_directory_with_mode_0755() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        FsStore::open(&dir).unwrap();
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        // The umask may only remove bits.
        assert_eq!(mode & !DIR_MODE, 0, "mode {mode:o}");
        assert!(fs::metadata(tmp.path().join("a")).unwrap().is_dir());
    }

    #[tokio::test]
    async fn open_refuses_a_file() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        fs::write(&file, b"x").unwrap();
        assert!(FsStore::open(&file).is_err());
    }

    #[tokio::test]
    async fn entries_are_files_with_mode_0600_holding_the_raw_value() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FsStore::open(tmp.path()).unwrap();
        store.create("my-key", b"raw value\n").await.unwrap();
        let path = tmp.path().join("my-key");
        let meta = fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        assert_eq!(meta.nlink(), 1, "the temporary link is gone");
        assert_eq!(fs::read(&path).unwrap(), b"raw value\n");
        assert_eq!(entries(tmp.path()), vec!["my-key"]);
    }

    #[tokio::test]
    async fn reads_a_directory_in_kes_layout() {
        let tmp = tempfile::tempdir().unwrap();
        // As KES (>= 2024-02-29) leaves them: base64 text, no newline; and a legacy JSON key.
        let keys = [
            (
                "minio-key",
                "CiIKIL5bLm5hbWUtdGhhdC1sb29rcy1saWtlLWEta2V5EAESIgog",
            ),
            (
                "backup_2023",
                "{\"bytes\":\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}",
            ),
            ("Z-last", "dGV4dA=="),
        ];
        for (name, value) in keys {
            fs::write(tmp.path().join(name), value).unwrap();
        }
        let store = FsStore::open(tmp.path()).unwrap();
        let page = store.list("", "", 100).await.unwrap();
        assert_eq!(page.names, vec!["Z-last", "backup_2023", "minio-key"]);
        assert!(page.continue_at.is_empty());
        for (name, value) in keys {
            assert_eq!(store.get(name).await.unwrap(), value.as_bytes());
        }
        assert!(matches!(
            store.create("minio-key", b"other").await,
            Err(StoreError::AlreadyExists)
        ));
        store.delete("backup_2023").await.unwrap();
        assert!(!tmp.path().join("backup_2023").exists());
    }

    #[tokio::test]
    async fn listing_skips_what_is_not_an_entry() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FsStore::open(tmp.path()).unwrap();
        store.create("k1", b"v").await.unwrap();
        fs::write(
            tmp.path().join(format!("{TEMP_PREFIX}0123456789abcdef")),
            b"half",
        )
        .unwrap();
        fs::write(tmp.path().join(".hidden"), b"x").unwrap();
        fs::write(tmp.path().join("with.dot"), b"x").unwrap();
        fs::create_dir(tmp.path().join("subdir")).unwrap();
        let page = store.list("", "", 100).await.unwrap();
        assert_eq!(page.names, vec!["k1"]);
        assert!(matches!(
            store.get("subdir").await,
            Err(StoreError::Invalid(_))
        ));
    }

    #[tokio::test]
    async fn invalid_names_never_touch_the_filesystem() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let store = FsStore::open(&dir).unwrap();
        // Bait outside the store directory that a path traversal would hit.
        fs::write(tmp.path().join("outside"), b"secret").unwrap();
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let bad = [
            "",
            ".",
            "..",
            "../outside",
            "a/b",
            "a\\b",
            "key.json",
            ".kes-tmp-1",
            "nul\0byte",
            long.as_str(),
        ];
        for name in bad {
            assert!(
                matches!(store.create(name, b"v").await, Err(StoreError::Invalid(_))),
                "create {name:?}"
            );
            assert!(
                matches!(store.get(name).await, Err(StoreError::NotFound)),
                "get {name:?}"
            );
            assert!(
                matches!(store.delete(name).await, Err(StoreError::NotFound)),
                "delete {name:?}"
            );
        }
        assert_eq!(fs::read(tmp.path().join("outside")).unwrap(), b"secret");
        assert_eq!(entries(tmp.path()), vec!["keys", "outside"]);
        assert_eq!(entries(&dir), Vec::<String>::new());
        let longest = "y".repeat(MAX_NAME_LEN);
        store.create(&longest, b"v").await.unwrap();
        assert_eq!(store.get(&longest).await.unwrap(), b"v");
    }

    #[tokio::test]
    async fn value_limits() {
        let tmp = tempfile::tempdir().unwrap();
        let store = FsStore::open(tmp.path()).unwrap();
        let big = vec![b'a'; MAX_VALUE_LEN + 1];
        assert!(matches!(
            store.create("big", &big).await,
            Err(StoreError::Invalid(_))
        ));
        assert_eq!(entries(tmp.path()), Vec::<String>::new());
        // A file grown past the limit outside the store is reported, not truncated.
        fs::write(tmp.path().join("big"), &big).unwrap();
        assert!(matches!(
            store.get("big").await,
            Err(StoreError::Invalid(_))
        ));
        fs::write(tmp.path().join("max"), &big[..MAX_VALUE_LEN]).unwrap();
        assert_eq!(store.get("max").await.unwrap().len(), MAX_VALUE_LEN);
        store.create("empty", b"").await.unwrap();
        assert_eq!(store.get("empty").await.unwrap(), b"");
    }

    #[tokio::test]
    async fn open_removes_only_stale_temporary_files() {
        let tmp = tempfile::tempdir().unwrap();
        let stale = tmp.path().join(format!("{TEMP_PREFIX}stale"));
        let fresh = tmp.path().join(format!("{TEMP_PREFIX}fresh"));
        fs::write(&stale, b"x").unwrap();
        fs::write(&fresh, b"x").unwrap();
        let old = SystemTime::now() - STALE_TEMP_AGE - Duration::from_secs(60);
        File::options()
            .write(true)
            .open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        fs::write(tmp.path().join("key"), b"v").unwrap();
        FsStore::open(tmp.path()).unwrap();
        assert!(!stale.exists());
        assert!(fresh.exists(), "may belong to a create in flight");
        assert!(tmp.path().join("key").exists());
    }

    #[tokio::test]
    async fn status_fails_when_the_directory_is_gone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("keys");
        let store = FsStore::open(&dir).unwrap();
        store.status().await.unwrap();
        fs::remove_dir(&dir).unwrap();
        let err = store.status().await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        let err = store.list("", "", 10).await.unwrap_err();
        assert!(err.is_unavailable(), "{err:?}");
        assert!(matches!(
            store.create("k", b"v").await,
            Err(StoreError::Unavailable {
                retryable: true,
                ..
            })
        ));
    }
}
