//! Signed evidence: an ed25519 signature over a run's journal head and its three report files.
//!
//! `respawn drill|failover --sign-key KEY` writes `report.sig.json` beside the report (and a copy into the state
//! store); `respawn audit verify RUN_ID --public-key KEY.pub.pem` checks it. The signed message names the run, the
//! journal head (which fixes every event, through the hash chain) and the sha256 of `report.json`, `report.md`
//! and `junit.xml`, so a one-byte edit of any of them, or of any event, no longer verifies.
//!
//! Keys are PEM files as `openssl genpkey -algorithm ed25519` writes them (PKCS#8 private, SPKI public), or as
//! `respawn audit keygen` writes them:
//!
//! ```
//! use respawn_report::signature::{Keys, sign, verify};
//!
//! let keys = Keys::generate().unwrap();
//! let files = [("report.json", b"{}".as_slice()), ("report.md", b"#".as_slice()), ("junit.xml", b"<x/>".as_slice())];
//! let signed = sign(&keys.signing, "run-1", "ab12", &files);
//! let public = Keys::public_from_pem(&keys.public_pem()).unwrap();
//! assert!(verify(&signed, &public, &files).is_ok());
//! let edited = [("report.json", b"{ }".as_slice()), files[1], files[2]];
//! assert!(verify(&signed, &public, &edited).unwrap_err().to_string().contains("report.json"));
//! ```

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The signature file beside a report.
pub const FILE: &str = "report.sig.json";

/// What the signed message starts with; a new layout of the message gets a new one.
pub const FORMAT: &str = "respawn-evidence-v1";

/// The files a signature covers, in the order the message lists them.
pub const SIGNED_FILES: [&str; 3] = ["report.json", "report.md", "junit.xml"];

/// `report.sig.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signed {
    pub format: String,
    pub run_id: String,
    /// sha256 of the journal's newest event when the report was signed.
    pub journal_head: String,
    /// File name -> sha256 (hex), for each of [`SIGNED_FILES`].
    pub files: std::collections::BTreeMap<String, String>,
    /// The signer's public key (hex), to say which key signed; trust comes only from the key the auditor gives.
    pub public_key: String,
    /// ed25519 signature (hex) of [`Signed::message`].
    pub signature: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    #[error("{0}")]
    Key(String),
    #[error(
        "{file} was changed after it was signed: its sha256 is {actual}, the signature covers {signed}"
    )]
    FileAltered {
        file: String,
        actual: String,
        signed: String,
    },
    #[error("the signature is not valid for this public key (signed by {signer}): {why}")]
    BadSignature { signer: String, why: String },
    #[error("{0} is not a signature file respawn writes: {1}")]
    Malformed(String, String),
}

impl Signed {
    /// The exact bytes signed: the format, the run, the journal head, and each file's sha256, one per line.
    pub fn message(&self) -> Vec<u8> {
        let mut m = format!(
            "{}\nrun {}\njournal-head {}\n",
            self.format, self.run_id, self.journal_head
        );
        for (name, sha) in &self.files {
            m.push_str(&format!("{name} sha256:{sha}\n"));
        }
        m.into_bytes()
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Signs a run's journal head and report files (name, bytes).
pub fn sign(key: &SigningKey, run_id: &str, journal_head: &str, files: &[(&str, &[u8])]) -> Signed {
    let mut signed = Signed {
        format: FORMAT.to_string(),
        run_id: run_id.to_string(),
        journal_head: journal_head.to_string(),
        files: files
            .iter()
            .map(|(name, bytes)| (name.to_string(), sha256_hex(bytes)))
            .collect(),
        public_key: hex::encode(key.verifying_key().as_bytes()),
        signature: String::new(),
    };
    signed.signature = hex::encode(key.sign(&signed.message()).to_bytes());
    signed
}

/// Checks the signature with `key`, then each file (name, bytes) against the sha256 it signed, naming the first
/// that differs.
pub fn verify(
    signed: &Signed,
    key: &VerifyingKey,
    files: &[(&str, &[u8])],
) -> Result<(), SignatureError> {
    let bad = |why: String| SignatureError::BadSignature {
        signer: signed.public_key.clone(),
        why,
    };
    let bytes = hex::decode(&signed.signature).map_err(|e| bad(e.to_string()))?;
    let signature = Signature::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    key.verify(&signed.message(), &signature)
        .map_err(|e| bad(e.to_string()))?;
    for (name, bytes) in files {
        let actual = sha256_hex(bytes);
        let signed_sha = signed.files.get(*name).cloned().unwrap_or_default();
        if actual != signed_sha {
            return Err(SignatureError::FileAltered {
                file: name.to_string(),
                actual,
                signed: signed_sha,
            });
        }
    }
    Ok(())
}

/// Reads `report.sig.json` text.
pub fn parse(what: &str, text: &str) -> Result<Signed, SignatureError> {
    let signed: Signed = serde_json::from_str(text)
        .map_err(|e| SignatureError::Malformed(what.to_string(), e.to_string()))?;
    if signed.format != FORMAT {
        return Err(SignatureError::Malformed(
            what.to_string(),
            format!("format `{}`, expected `{FORMAT}`", signed.format),
        ));
    }
    Ok(signed)
}

/// A key pair, as `respawn audit keygen` makes it.
pub struct Keys {
    pub signing: SigningKey,
}

impl Keys {
    /// A new key pair from the operating system's randomness.
    pub fn generate() -> Result<Keys, SignatureError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| SignatureError::Key(e.to_string()))?;
        Ok(Keys {
            signing: SigningKey::from_bytes(&secret),
        })
    }

    /// The private key as PKCS#8 PEM.
    pub fn private_pem(&self) -> Result<String, SignatureError> {
        self.signing
            .to_pkcs8_pem(LineEnding::LF)
            .map(|pem| pem.to_string())
            .map_err(|e| SignatureError::Key(e.to_string()))
    }

    /// The public key as SPKI PEM.
    pub fn public_pem(&self) -> String {
        self.signing
            .verifying_key()
            .to_public_key_pem(LineEnding::LF)
            .unwrap_or_default()
    }

    /// A private key from PKCS#8 PEM; `what` names where it came from, for the error.
    pub fn signing_from_pem(what: &str, pem: &str) -> Result<SigningKey, SignatureError> {
        SigningKey::from_pkcs8_pem(pem.trim()).map_err(|e| {
            SignatureError::Key(format!(
                "{what} is not an ed25519 private key in PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`, as `openssl \
                 genpkey -algorithm ed25519` or `respawn audit keygen` write): {e}"
            ))
        })
    }

    /// A public key from SPKI PEM.
    pub fn public_from_pem(pem: &str) -> Result<VerifyingKey, SignatureError> {
        VerifyingKey::from_public_key_pem(pem.trim()).map_err(|e| {
            SignatureError::Key(format!(
                "not an ed25519 public key in SPKI PEM (`-----BEGIN PUBLIC KEY-----`): {e}"
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_the_wrong_key_is_refused() {
        let keys = Keys::generate().unwrap();
        let again = Keys::signing_from_pem("key", &keys.private_pem().unwrap()).unwrap();
        assert_eq!(again.to_bytes(), keys.signing.to_bytes());
        let files = [("report.json", b"{}".as_slice())];
        let signed = sign(&keys.signing, "r", "00", &files);
        let text = serde_json::to_string(&signed).unwrap();
        let back = parse("sig", &text).unwrap();
        let other = Keys::generate().unwrap();
        let err = verify(&back, &other.signing.verifying_key(), &files).unwrap_err();
        assert!(matches!(err, SignatureError::BadSignature { .. }), "{err}");
        let mut moved = back.clone();
        moved.journal_head = "01".into();
        assert!(verify(&moved, &keys.signing.verifying_key(), &files).is_err());
        assert!(Keys::signing_from_pem("k", "nonsense").is_err());
    }
}
