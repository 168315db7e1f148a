//! The validator secret key file: a small text file, mode 0600, holding both halves of an
//! ML-DSA-87 key pair in hex.
//!
//! ```text
//! # Weft validator key. Anyone who reads this file can sign as this validator.
//! format = "weft-mldsa87-key/v1"
//! public_key = "<5184 hex digits>"
//! secret_key = "<9792 hex digits>"
//! ```
//!
//! Loading refuses a file that group or others may read or write, a file of another
//! format, and a pair whose halves do not belong together (checked by signing and
//! verifying a probe message), each with an error that says what to do.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::digest::{from_hex, to_hex};
use crate::{KeyError, Keypair, PublicKey, SecretKey, SigningContext};

/// The format line of version 1 of the key file.
pub const FORMAT: &str = "weft-mldsa87-key/v1";

/// The largest key file we read (the real one is about 15 KB).
pub const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Why a key file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    /// The file system refused.
    #[error("{path}: {source}")]
    Io {
        /// The key file.
        path: PathBuf,
        /// The operating system's error.
        source: std::io::Error,
    },
    /// The file exists and writing would overwrite a key.
    #[error("{path}: a key file already exists; refusing to overwrite a validator key")]
    AlreadyExists {
        /// The key file.
        path: PathBuf,
    },
    /// Group or others may access the file.
    #[error(
        "{path}: secret key file has mode {mode:04o}, readable or writable by others; \
         run `chmod 600 {path}` and check who may have copied it"
    )]
    Permissions {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The contents are not a version 1 key file.
    #[error("{path}: not a {FORMAT} key file: {reason}")]
    Format {
        /// The key file.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The public and secret keys do not belong together.
    #[error("{path}: the public key does not match the secret key")]
    Mismatch {
        /// The key file.
        path: PathBuf,
    },
}

/// Writes `keypair` to a new file at `path` with mode 0600, synced to disk.
/// Refuses to overwrite an existing file.
pub fn write(path: &Path, keypair: &Keypair) -> Result<(), KeyFileError> {
    let io_error = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                KeyFileError::AlreadyExists {
                    path: path.to_path_buf(),
                }
            } else {
                io_error(source)
            }
        })?;
    let text = Zeroizing::new(format!(
        "# Weft validator key. Anyone who reads this file can sign as this validator.\n\
         format = \"{FORMAT}\"\n\
         public_key = \"{}\"\n\
         secret_key = \"{}\"\n",
        keypair.public.to_hex(),
        to_hex(keypair.secret.as_bytes()),
    ));
    file.write_all(text.as_bytes()).map_err(io_error)?;
    file.sync_all().map_err(io_error)
}

/// Reads the key pair at `path`, refusing files others can access.
pub fn read(path: &Path) -> Result<Keypair, KeyFileError> {
    let io_error = |source| KeyFileError::Io {
        path: path.to_path_buf(),
        source,
    };
    let metadata = fs::metadata(path).map_err(io_error)?;
    let mode = metadata.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyFileError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    if metadata.len() > MAX_KEY_FILE_BYTES {
        return Err(format_error(path, "file is larger than any key file"));
    }
    let text = Zeroizing::new(fs::read_to_string(path).map_err(io_error)?);
    parse(path, &text)
}

fn format_error(path: &Path, reason: impl Into<String>) -> KeyFileError {
    KeyFileError::Format {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn parse(path: &Path, text: &str) -> Result<Keypair, KeyFileError> {
    let mut format = None;
    let mut public_hex = None;
    let mut secret_hex = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, value) = line
            .split_once('=')
            .ok_or_else(|| format_error(path, "expected `name = \"value\"` lines"))?;
        let value = value
            .trim()
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .ok_or_else(|| format_error(path, "values must be quoted"))?;
        let slot = match name.trim() {
            "format" => &mut format,
            "public_key" => &mut public_hex,
            "secret_key" => &mut secret_hex,
            other => return Err(format_error(path, format!("unknown field `{other}`"))),
        };
        if slot.replace(value).is_some() {
            return Err(format_error(
                path,
                format!("field `{}` repeats", name.trim()),
            ));
        }
    }
    if format != Some(FORMAT) {
        return Err(format_error(path, format!("`format` must be \"{FORMAT}\"")));
    }
    let public_hex = public_hex.ok_or_else(|| format_error(path, "missing `public_key`"))?;
    let secret_hex = secret_hex.ok_or_else(|| format_error(path, "missing `secret_key`"))?;
    let key_error = |error: KeyError| format_error(path, error.to_string());
    let public = PublicKey::from_hex(public_hex).map_err(key_error)?;
    let secret_bytes = Zeroizing::new(from_hex(secret_hex).ok_or_else(|| {
        key_error(KeyError::Hex {
            kind: "an ML-DSA-87 secret key",
        })
    })?);
    let secret = SecretKey::from_bytes(&secret_bytes).map_err(key_error)?;
    let probe = b"weft key file probe";
    let signature = secret.sign(SigningContext::PeerBinding, probe);
    if public
        .verify(SigningContext::PeerBinding, probe, &signature)
        .is_err()
    {
        return Err(KeyFileError::Mismatch {
            path: path.to_path_buf(),
        });
    }
    Ok(Keypair { public, secret })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_file_is_private_and_reads_back() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("validator.key");
        let keys = Keypair::generate();
        write(&path, &keys).expect("write key");
        let mode = fs::metadata(&path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let loaded = read(&path).expect("read key");
        assert_eq!(loaded.public, keys.public);
        assert_eq!(loaded.secret.as_bytes(), keys.secret.as_bytes());
    }

    #[test]
    fn refuses_to_overwrite() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("validator.key");
        write(&path, &Keypair::generate()).expect("first write");
        assert!(matches!(
            write(&path, &Keypair::generate()),
            Err(KeyFileError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn refuses_a_file_others_can_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("validator.key");
        write(&path, &Keypair::generate()).expect("write");
        for mode in [0o644, 0o640, 0o604, 0o660] {
            fs::set_permissions(&path, fs::Permissions::from_mode(mode)).expect("chmod");
            let error = read(&path).expect_err("must refuse");
            assert!(matches!(error, KeyFileError::Permissions { mode: m, .. } if m == mode));
            assert!(error.to_string().contains("chmod 600"), "{error}");
        }
    }

    #[test]
    fn refuses_mismatched_halves_and_bad_format() {
        let dir = tempfile::tempdir().expect("temp dir");
        let one = Keypair::generate();
        let two = Keypair::generate();
        let mixed = format!(
            "format = \"{FORMAT}\"\npublic_key = \"{}\"\nsecret_key = \"{}\"\n",
            two.public.to_hex(),
            to_hex(one.secret.as_bytes())
        );
        let path = dir.path().join("mixed.key");
        assert!(matches!(
            parse(&path, &mixed),
            Err(KeyFileError::Mismatch { .. })
        ));
        for bad in [
            "",
            "format = \"other/v9\"\n",
            "format = weft\n",
            "nonsense\n",
            "format = \"weft-mldsa87-key/v1\"\nformat = \"weft-mldsa87-key/v1\"\n",
            "format = \"weft-mldsa87-key/v1\"\npublic_key = \"00\"\nsecret_key = \"00\"\n",
        ] {
            assert!(
                matches!(parse(&path, bad), Err(KeyFileError::Format { .. })),
                "accepted {bad:?}"
            );
        }
    }
}
