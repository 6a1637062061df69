//! Public keys as cosign writes them (`cosign.pub`: a PEM `PUBLIC KEY`, that is an
//! X.509 SubjectPublicKeyInfo) and signature verification with them. The cryptography
//! is RustCrypto's (`p256`, `ed25519-dalek`); nothing here is hand-written crypto.

use sha2::{Digest as _, Sha256};

/// A public key that may have signed an image.
#[derive(Debug, Clone)]
pub struct PublicKey {
    kind: Kind,
    /// `sha256:<hex>` of the key's DER encoding: what `executor images` shows.
    fingerprint: String,
}

#[derive(Debug, Clone)]
enum Kind {
    /// ECDSA over P-256 with SHA-256 (`cosign generate-key-pair`).
    EcdsaP256(Box<p256::ecdsa::VerifyingKey>),
    /// Ed25519 (`cosign import-key-pair` of an Ed25519 key).
    Ed25519(Box<ed25519_dalek::VerifyingKey>),
}

impl PublicKey {
    /// Parses a PEM public key; the error says what the PEM holds instead.
    pub fn from_pem(pem: &[u8]) -> Result<PublicKey, String> {
        let text = std::str::from_utf8(pem).map_err(|_| "not a PEM file (not text)".to_owned())?;
        let (label, der) = pem_rfc7468::decode_vec(text.trim().as_bytes())
            .map_err(|e| format!("not a PEM public key: {e}"))?;
        if label != "PUBLIC KEY" {
            return Err(format!(
                "a PEM {label:?}, not a \"PUBLIC KEY\" (give the .pub file, never the private key)"
            ));
        }
        let fingerprint = format!("sha256:{}", hex::encode(Sha256::digest(&der)));
        use p256::pkcs8::DecodePublicKey as _;
        let kind = if let Ok(key) = p256::ecdsa::VerifyingKey::from_public_key_der(&der) {
            Kind::EcdsaP256(Box::new(key))
        } else if let Ok(key) = ed25519_dalek::VerifyingKey::from_public_key_der(&der) {
            Kind::Ed25519(Box::new(key))
        } else {
            return Err(
                "an unsupported public key (ECDSA P-256 and Ed25519 keys are supported)".into(),
            );
        };
        Ok(PublicKey { kind, fingerprint })
    }

    /// `sha256:<hex>` of the key's DER encoding.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The algorithm, for messages: `ecdsa-p256` or `ed25519`.
    pub fn algorithm(&self) -> &'static str {
        match self.kind {
            Kind::EcdsaP256(_) => "ecdsa-p256",
            Kind::Ed25519(_) => "ed25519",
        }
    }

    /// Whether `signature` (raw bytes, as decoded from cosign's base64 annotation) is
    /// this key's signature of `message`. ECDSA signatures are ASN.1 DER over SHA-256
    /// of the message, as cosign makes them; Ed25519 signs the message itself.
    pub fn verifies(&self, message: &[u8], signature: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier as _;
        match &self.kind {
            Kind::EcdsaP256(key) => p256::ecdsa::DerSignature::try_from(signature)
                .is_ok_and(|sig| key.verify(message, &sig).is_ok()),
            Kind::Ed25519(key) => ed25519_dalek::Signature::from_slice(signature)
                .is_ok_and(|sig| key.verify_strict(message, &sig).is_ok()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Generated once with `openssl ecparam -name prime256v1 -genkey` and
    // `openssl genpkey -algorithm ed25519`; the signatures with `openssl dgst -sha256
    // -sign` and `openssl pkeyutl -sign -rawin` over MESSAGE.
    const MESSAGE: &[u8] = b"{\"critical\":{}}";
    const P256_PUB: &str = include_str!("testdata/p256.pub");
    const P256_SIG: &str = include_str!("testdata/p256.sig.b64");
    const ED25519_PUB: &str = include_str!("testdata/ed25519.pub");
    const ED25519_SIG: &str = include_str!("testdata/ed25519.sig.b64");
    const RSA_PUB: &str = include_str!("testdata/rsa.pub");

    fn b64(text: &str) -> Vec<u8> {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD
            .decode(text.trim())
            .unwrap()
    }

    #[test]
    fn ecdsa_and_ed25519_verify_and_refuse_other_messages() {
        for (pem, sig, algorithm) in [
            (P256_PUB, P256_SIG, "ecdsa-p256"),
            (ED25519_PUB, ED25519_SIG, "ed25519"),
        ] {
            let key = PublicKey::from_pem(pem.as_bytes()).unwrap();
            assert_eq!(key.algorithm(), algorithm);
            assert!(key.fingerprint().starts_with("sha256:"));
            let sig = b64(sig);
            assert!(key.verifies(MESSAGE, &sig), "{algorithm}");
            assert!(!key.verifies(b"{\"critical\":{ }}", &sig), "{algorithm}");
            let mut flipped = sig.clone();
            let last = flipped.len() - 1;
            flipped[last] ^= 1;
            assert!(!key.verifies(MESSAGE, &flipped), "{algorithm}");
            assert!(!key.verifies(MESSAGE, b"garbage"), "{algorithm}");
        }
        // Each key refuses the other's signature.
        let p256 = PublicKey::from_pem(P256_PUB.as_bytes()).unwrap();
        assert!(!p256.verifies(MESSAGE, &b64(ED25519_SIG)));
    }

    #[test]
    fn other_pem_contents_are_named() {
        let err = PublicKey::from_pem(RSA_PUB.as_bytes()).unwrap_err();
        assert!(err.contains("unsupported public key"), "{err}");
        let err = PublicKey::from_pem(
            b"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(err.contains("never the private key"), "{err}");
        let err = PublicKey::from_pem(b"hello").unwrap_err();
        assert!(err.contains("not a PEM public key"), "{err}");
    }
}
