//! Reading the files the hub is pointed at (`--config`, `*_file` secrets, …) with a size cap.
//!
//! A path may name anything: `/dev/zero`, a FIFO nobody writes to, a directory, a 6 GB log.
//! [`read_capped`] refuses whatever is not a regular file before opening it (opening a FIFO
//! would block), checks the opened file again, and reads at most `max` bytes, so that no
//! configuration mistake (or hostile path) can hang the process or exhaust its memory.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest configuration file (`--config`) read.
pub const CONFIG_MAX_BYTES: u64 = 1024 * 1024;
/// The largest secret file (`*_file`, `database.password_file`) read.
pub const SECRET_MAX_BYTES: u64 = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("cannot read {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{} is not a regular file (it is {what}); only regular files are read", path.display())]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("{} is larger than the limit of {limit} bytes", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    #[error("{} is not UTF-8 text", path.display())]
    NotUtf8 { path: PathBuf },
}

fn kind_of(t: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if t.is_char_device() {
            return "a character device";
        }
        if t.is_block_device() {
            return "a block device";
        }
        if t.is_fifo() {
            return "a FIFO";
        }
        if t.is_socket() {
            return "a socket";
        }
    }
    if t.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    }
}

/// The bytes of the regular file at `path` (symbolic links followed), at most `max` of them.
pub fn read_bytes_capped(path: &Path, max: u64) -> Result<Vec<u8>, FileError> {
    let io = |source| FileError::Io {
        path: path.to_owned(),
        source,
    };
    // Before opening: opening a FIFO blocks until a writer comes.
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular {
            path: path.to_owned(),
            what: kind_of(meta.file_type()),
        });
    }
    let file = File::open(path).map_err(io)?;
    // Again on what was opened: the path may have been replaced in between.
    let meta = file.metadata().map_err(io)?;
    if !meta.file_type().is_file() {
        return Err(FileError::NotRegular {
            path: path.to_owned(),
            what: kind_of(meta.file_type()),
        });
    }
    let too_large = || FileError::TooLarge {
        path: path.to_owned(),
        limit: max,
    };
    if meta.len() > max {
        return Err(too_large());
    }
    let mut out = Vec::with_capacity(usize::try_from(meta.len()).unwrap_or(0));
    // The file may grow after the check: read one byte past the cap to notice.
    file.take(max.saturating_add(1))
        .read_to_end(&mut out)
        .map_err(io)?;
    if out.len() as u64 > max {
        return Err(too_large());
    }
    Ok(out)
}

/// The text of the regular file at `path`, at most `max` bytes of UTF-8.
pub fn read_capped(path: &Path, max: u64) -> Result<String, FileError> {
    String::from_utf8(read_bytes_capped(path, max)?).map_err(|_| FileError::NotUtf8 {
        path: path.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn regular_files_within_the_cap_are_read() {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(b"hello").unwrap();
        assert_eq!(read_capped(f.path(), 5).unwrap(), "hello");
        let e = read_capped(f.path(), 4).unwrap_err();
        assert!(matches!(e, FileError::TooLarge { limit: 4, .. }), "{e}");
        assert!(e.to_string().contains(&f.path().display().to_string()));
    }

    #[test]
    fn devices_directories_and_fifos_are_refused() {
        let e = read_capped(Path::new("/dev/zero"), 10).unwrap_err();
        assert!(matches!(e, FileError::NotRegular { .. }), "{e}");
        assert!(e.to_string().contains("/dev/zero"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let e = read_capped(dir.path(), 10).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
    }
}
