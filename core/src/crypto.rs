//! Encryption of directory client secrets at rest (XChaCha20-Poly1305, key from
//! `LICENSOR_SECRET_KEY` or `<data_dir>/secret.key`), and hashing of API tokens.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use sha2::{Digest, Sha256};

const NONCE_LEN: usize = 24;

/// Seals and opens secrets with one 256-bit key.
#[derive(Clone)]
pub struct SecretBox {
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretBox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBox(<key>)")
    }
}

impl SecretBox {
    /// A key given as 32 bytes of standard base64.
    pub fn from_base64(key: &str) -> Result<SecretBox, String> {
        let bytes = STANDARD.decode(key.trim()).map_err(|_| {
            "must be base64 (32 random bytes, e.g. `openssl rand -base64 32`)".to_owned()
        })?;
        if bytes.len() != 32 {
            return Err(format!("must decode to 32 bytes, not {}", bytes.len()));
        }
        Ok(SecretBox {
            cipher: XChaCha20Poly1305::new_from_slice(&bytes).map_err(|e| e.to_string())?,
        })
    }

    /// The key in `path`, created (mode 0600) with a fresh random key when missing.
    pub fn load_or_create(path: &Path) -> std::io::Result<SecretBox> {
        if !path.exists() {
            let mut key = [0u8; 32];
            rand::rng().fill_bytes(&mut key);
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir)?;
            }
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            match options.open(path) {
                Ok(mut file) => {
                    std::io::Write::write_all(&mut file, STANDARD.encode(key).as_bytes())?
                }
                // Another process created it first: use theirs.
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
        }
        let text = std::fs::read_to_string(path)?;
        SecretBox::from_base64(&text).map_err(|reason| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("{}: {reason}", path.display()),
            )
        })
    }

    /// nonce ‖ ciphertext.
    pub fn seal(&self, plaintext: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), plaintext.as_bytes())
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<String, SecretError> {
        if sealed.len() <= NONCE_LEN {
            return Err(SecretError);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let plain = self
            .cipher
            .decrypt(XNonce::from_slice(nonce), ciphertext)
            .map_err(|_| SecretError)?;
        String::from_utf8(plain).map_err(|_| SecretError)
    }
}

#[derive(Debug, thiserror::Error)]
#[error("a stored secret cannot be decrypted with the configured secret_key")]
pub struct SecretError;

/// A new API token: `lic_` + 32 random bytes (256 bits), base64url.
pub fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!("lic_{}", URL_SAFE_NO_PAD.encode(bytes))
}

/// What is stored for a token: its SHA-256, hex. Tokens carry 256 random bits, so a fast hash
/// is as safe as a slow one and keeps authentication to one indexed lookup.
pub fn token_hash(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_and_open() {
        let key = STANDARD.encode([7u8; 32]);
        let sb = SecretBox::from_base64(&key).unwrap();
        let sealed = sb.seal("s3cret-value");
        assert!(!sealed.windows(6).any(|w| w == b"s3cret"));
        assert_eq!(sb.open(&sealed).unwrap(), "s3cret-value");
        let other = SecretBox::from_base64(&STANDARD.encode([8u8; 32])).unwrap();
        assert!(other.open(&sealed).is_err());
        assert!(sb.open(&sealed[..10]).is_err());
    }

    #[test]
    fn key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.key");
        let a = SecretBox::load_or_create(&path).unwrap();
        let b = SecretBox::load_or_create(&path).unwrap();
        assert_eq!(b.open(&a.seal("x")).unwrap(), "x");
    }

    #[test]
    fn tokens_are_long_random_and_hashed() {
        let t = new_token();
        assert!(t.starts_with("lic_") && t.len() >= 40);
        assert_ne!(t, new_token());
        assert_eq!(token_hash(&t).len(), 64);
        assert_eq!(token_hash(&t), token_hash(&t));
    }
}
