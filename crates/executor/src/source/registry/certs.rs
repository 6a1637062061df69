//! The extra CA certificates of `--cert-dir`, read once for all of an image's endpoints.

use oci_client::client::{Certificate, CertificateEncoding};
use std::path::Path;

/// The CA certificates of `dir` (`--cert-dir`): every `*.crt` and `*.pem` (PEM) and
/// `*.der` (DER) file in it; an error names the file it could not read.
pub(super) fn read_certificates(dir: &Path) -> Result<Vec<Certificate>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("reading cert dir {}: {e}", dir.display()))?;
    let mut certs = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|e| format!("reading cert dir {}: {e}", dir.display()))?
            .path();
        let encoding = match path.extension().and_then(|e| e.to_str()) {
            Some("crt" | "pem") => CertificateEncoding::Pem,
            Some("der") => CertificateEncoding::Der,
            // Client keys and certificates (`.key`, `.cert`) are not CAs.
            _ => continue,
        };
        let data = std::fs::read(&path)
            .map_err(|e| format!("reading certificate {}: {e}", path.display()))?;
        certs.push(Certificate { encoding, data });
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cert_dir_reads_only_ca_files() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("ca.crt"), b"pem").unwrap();
        std::fs::write(dir.path().join("client.key"), b"secret").unwrap();
        let certs = read_certificates(dir.path()).unwrap();
        assert_eq!(certs.len(), 1);
        let err = read_certificates(&dir.path().join("missing")).unwrap_err();
        assert!(err.contains("missing"), "{err}");
    }
}
