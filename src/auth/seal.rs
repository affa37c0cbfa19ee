//! Secrets kept for a browser session (the EHR's tokens, a launch's PKCE verifier and
//! nonce) are sealed with AES-256-GCM before they reach the database, under a key the
//! database never sees. Browser-held secrets (session and launch cookies, `state`) are
//! random tokens stored only as SHA-256 hashes.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use rand::RngCore;
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};

const NONCE_LEN: usize = 12;

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("the session key must be 32 bytes of base64")]
    BadKey,
    #[error("sealed data is damaged, or was sealed with another key or for another row")]
    Open,
    #[error("sealed data could not be encoded: {0}")]
    Encode(String),
}

/// The AES-256-GCM key for session secrets.
pub struct Sealer {
    cipher: Aes256Gcm,
}

impl Sealer {
    /// From the configured base64 key.
    pub fn from_base64(key: &str) -> Result<Sealer, SealError> {
        let bytes = STANDARD.decode(key.trim()).map_err(|_| SealError::BadKey)?;
        let cipher = Aes256Gcm::new_from_slice(&bytes).map_err(|_| SealError::BadKey)?;
        Ok(Sealer { cipher })
    }

    /// A key made now (sessions sealed with it end with the process).
    pub fn random() -> Sealer {
        let mut key = [0u8; 32];
        OsRng.fill_bytes(&mut key);
        Sealer {
            cipher: Aes256Gcm::new(&key.into()),
        }
    }

    /// `nonce || ciphertext`; `context` (tenant and row) is authenticated, so a sealed value
    /// copied to another row does not open.
    pub fn seal(&self, plaintext: &[u8], context: &str) -> Result<Vec<u8>, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        OsRng.fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plaintext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|e| SealError::Encode(e.to_string()))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    pub fn open(&self, sealed: &[u8], context: &str) -> Result<Vec<u8>, SealError> {
        if sealed.len() < NONCE_LEN {
            return Err(SealError::Open);
        }
        let (nonce, ciphertext) = sealed.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| SealError::Open)?;
        self.cipher
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| SealError::Open)
    }

    pub fn seal_json<T: serde::Serialize>(
        &self,
        value: &T,
        context: &str,
    ) -> Result<Vec<u8>, SealError> {
        let bytes = serde_json::to_vec(value).map_err(|e| SealError::Encode(e.to_string()))?;
        self.seal(&bytes, context)
    }

    pub fn open_json<T: serde::de::DeserializeOwned>(
        &self,
        sealed: &[u8],
        context: &str,
    ) -> Result<T, SealError> {
        let bytes = self.open(sealed, context)?;
        serde_json::from_slice(&bytes).map_err(|_| SealError::Open)
    }
}

/// 256 random bits, base64url: session tokens, launch cookies, `state`, CSRF tokens.
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// What the database keeps of a browser-held secret.
pub fn token_hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_in_their_context_and_with_their_key() {
        let sealer = Sealer::random();
        let sealed = sealer.seal(b"refresh-token", "t1:row-1").expect("seal");
        assert!(!sealed.windows(13).any(|w| w == b"refresh-token"));
        assert_eq!(
            sealer.open(&sealed, "t1:row-1").expect("open"),
            b"refresh-token"
        );
        assert!(sealer.open(&sealed, "t1:row-2").is_err());
        assert!(Sealer::random().open(&sealed, "t1:row-1").is_err());
        let mut damaged = sealed.clone();
        if let Some(last) = damaged.last_mut() {
            *last ^= 1;
        }
        assert!(sealer.open(&damaged, "t1:row-1").is_err());
        assert!(sealer.open(&sealed[..5], "t1:row-1").is_err());
    }

    #[test]
    fn configured_keys_must_be_32_bytes() {
        assert!(Sealer::from_base64(&STANDARD.encode([7u8; 32])).is_ok());
        assert!(Sealer::from_base64(&STANDARD.encode([7u8; 16])).is_err());
        assert!(Sealer::from_base64("not base64!").is_err());
    }

    #[test]
    fn tokens_are_random_and_256_bits() {
        let a = random_token();
        assert_eq!(URL_SAFE_NO_PAD.decode(&a).expect("b64").len(), 32);
        assert_ne!(a, random_token());
        assert_eq!(token_hash(&a).len(), 32);
    }
}
