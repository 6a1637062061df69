//! sha256 digests as OCI names them (`sha256:<hex>`), made once here.

use oci_spec::image::Digest;
use sha2::{Digest as _, Sha256};
use std::str::FromStr;

/// The digest of a finished sha256 sum.
pub fn from_sha256_sum(sum: impl AsRef<[u8]>) -> Digest {
    from_sha256_hex(&hex::encode(sum)).expect("a sha256 sum is 64 hex digits")
}

/// `sha256:<hex>` for 64 lower-case hex digits; `None` for anything else.
pub fn from_sha256_hex(hex: &str) -> Option<Digest> {
    let valid = hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    if !valid {
        return None;
    }
    Digest::from_str(&format!("sha256:{hex}")).ok()
}

/// The sha256 digest of some bytes.
pub fn sha256_digest(bytes: &[u8]) -> Digest {
    from_sha256_sum(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_from_bytes_sums_and_hex() {
        let empty = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(sha256_digest(b"").to_string(), empty);
        assert_eq!(from_sha256_sum(Sha256::digest(b"")).to_string(), empty);
        assert_eq!(from_sha256_hex(&empty[7..]).unwrap().to_string(), empty);
        for bad in ["", "abc", &"A".repeat(64), &"g".repeat(64), &"0".repeat(63)] {
            assert_eq!(from_sha256_hex(bad), None, "{bad}");
        }
    }
}
