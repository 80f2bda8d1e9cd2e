//! The data directory's format marker and the seed a restore leaves in a new directory.
//!
//! The marker is a small text file, [`FORMAT_FILE`], written when the directory is created and
//! read before sled opens anything, so that a directory written by another version of the
//! storage layout is refused with both versions named, even if sled itself could not read it.
//!
//! A directory without the marker is taken as format 1 and given the marker: either it is new,
//! or it was written before the marker existed, by builds that all wrote format 1 (the layout
//! version stored inside the database is checked as well, whatever the marker says).

use std::io::Write;
use std::path::{Path, PathBuf};

use super::LAYOUT_VERSION;

/// The marker's file name inside the data directory.
pub const FORMAT_FILE: &str = "KES_DATA_FORMAT";

/// The format this build writes and reads.
pub const DATA_FORMAT_VERSION: u64 = LAYOUT_VERSION;

/// The marker's text before the version number.
const MARKER_PREFIX: &str = "kes data directory format ";

/// Entries a fresh file system puts in a mount point; they do not make a directory "used".
const IGNORED_ENTRIES: &[&str] = &["lost+found"];

#[derive(Debug, thiserror::Error)]
pub enum DataDirError {
    #[error(
        "data directory {dir} has format version {found}, and this build of kes reads format \
         version {supported}: run the kes version that wrote it, or start this node on an \
         empty directory (it catches up from its peers) or restore a backup into one"
    )]
    UnsupportedFormat {
        dir: PathBuf,
        found: u64,
        supported: u64,
    },
    #[error(
        "data directory {dir}: the format marker {FORMAT_FILE} is not one kes writes: {content:?}"
    )]
    BadMarker { dir: PathBuf, content: String },
    #[error(
        "data directory {dir} already holds data ({entries}): a restore needs a new, empty \
         directory (move this one away first)"
    )]
    NotEmpty { dir: PathBuf, entries: String },
    #[error("data directory {dir}: {source}")]
    Io {
        dir: PathBuf,
        source: std::io::Error,
    },
}

fn io(dir: &Path) -> impl FnOnce(std::io::Error) -> DataDirError + '_ {
    move |source| DataDirError::Io {
        dir: dir.to_owned(),
        source,
    }
}

/// The entries of `dir` that count (sorted), or none if it does not exist.
fn entries(dir: &Path) -> Result<Vec<String>, DataDirError> {
    let read = match std::fs::read_dir(dir) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(dir)(e)),
    };
    let mut names = Vec::new();
    for entry in read {
        let name = entry.map_err(io(dir))?.file_name();
        let name = name.to_string_lossy().into_owned();
        if !IGNORED_ENTRIES.contains(&name.as_str()) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// The version the marker in `dir` names, or `None` without a marker.
pub fn read_format(dir: &Path) -> Result<Option<u64>, DataDirError> {
    let path = dir.join(FORMAT_FILE);
    let text = match std::fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io(dir)(e)),
    };
    let text = String::from_utf8_lossy(&text);
    text.trim_end()
        .strip_prefix(MARKER_PREFIX)
        .and_then(|v| v.parse::<u64>().ok())
        .map(Some)
        .ok_or_else(|| DataDirError::BadMarker {
            dir: dir.to_owned(),
            content: text.chars().take(64).collect(),
        })
}

/// Writes the marker durably: a temporary file, synced, renamed over the marker, and the
/// directory synced, so that a crash leaves either no marker or a whole one.
fn write_format(dir: &Path) -> Result<(), DataDirError> {
    let tmp = dir.join(format!("{FORMAT_FILE}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp).map_err(io(dir))?;
        f.write_all(format!("{MARKER_PREFIX}{DATA_FORMAT_VERSION}\n").as_bytes())
            .map_err(io(dir))?;
        f.sync_all().map_err(io(dir))?;
    }
    std::fs::rename(&tmp, dir.join(FORMAT_FILE)).map_err(io(dir))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir))
}

/// Creates `dir` if missing and checks its format marker: refuses another version, and writes
/// the marker where there is none (see the module's rule). Call before opening the database.
pub fn prepare_data_dir(dir: &Path) -> Result<(), DataDirError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    match read_format(dir)? {
        Some(DATA_FORMAT_VERSION) => Ok(()),
        Some(found) => Err(DataDirError::UnsupportedFormat {
            dir: dir.to_owned(),
            found,
            supported: DATA_FORMAT_VERSION,
        }),
        None => write_format(dir),
    }
}

/// Refuses a directory that holds anything (a database, a marker, a previous restore).
pub fn ensure_empty(dir: &Path) -> Result<(), DataDirError> {
    let names = entries(dir)?;
    if names.is_empty() {
        return Ok(());
    }
    let mut shown = names.iter().take(5).cloned().collect::<Vec<_>>().join(", ");
    if names.len() > 5 {
        shown.push_str(", ...");
    }
    Err(DataDirError::NotEmpty {
        dir: dir.to_owned(),
        entries: shown,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_new_directory_gets_the_marker_and_keeps_it() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        prepare_data_dir(&dir).unwrap();
        assert_eq!(read_format(&dir).unwrap(), Some(DATA_FORMAT_VERSION));
        assert_eq!(
            std::fs::read_to_string(dir.join(FORMAT_FILE)).unwrap(),
            "kes data directory format 1\n"
        );
        prepare_data_dir(&dir).unwrap();
        assert!(matches!(
            ensure_empty(&dir),
            Err(DataDirError::NotEmpty { ref entries, .. }) if entries == FORMAT_FILE
        ));
    }

    #[test]
    fn another_version_or_a_foreign_marker_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join(FORMAT_FILE),
            "kes data directory format 7\n",
        )
        .unwrap();
        let e = prepare_data_dir(tmp.path()).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains(&tmp.path().display().to_string())
                && msg.contains("format version 7")
                && msg.contains("reads format version 1"),
            "{msg}"
        );
        std::fs::write(tmp.path().join(FORMAT_FILE), "hello").unwrap();
        assert!(matches!(
            prepare_data_dir(tmp.path()),
            Err(DataDirError::BadMarker { .. })
        ));
    }

    #[test]
    fn a_directory_without_a_marker_is_format_1() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(tmp.path().join("db"), "sled's").unwrap();
        prepare_data_dir(tmp.path()).unwrap();
        assert_eq!(read_format(tmp.path()).unwrap(), Some(1));
    }

    #[test]
    fn lost_and_found_does_not_count() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir(tmp.path().join("lost+found")).unwrap();
        ensure_empty(tmp.path()).unwrap();
        ensure_empty(&tmp.path().join("missing")).unwrap();
    }
}
