//! Docker references as the identity rules compare them: normalized as podman does,
//! keeping whether the text named a tag or digest.

use crate::reference::ImageSource;
use oci_spec::distribution::Reference;

/// A docker reference split the way identity rules compare it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DockerName {
    /// `host/path`, normalized (`docker.io/library/busybox`).
    pub repository: String,
    /// `:tag` or `@digest`, when the text named one.
    pub suffix: Option<String>,
}

impl DockerName {
    /// The whole reference: repository and suffix.
    pub fn whole(&self) -> String {
        format!(
            "{}{}",
            self.repository,
            self.suffix.as_deref().unwrap_or("")
        )
    }
}

/// Parses a reference the way podman normalizes it, keeping whether it named a tag or
/// digest (`busybox` is `docker.io/library/busybox`, with no suffix).
pub fn parse_docker_reference(text: &str) -> Result<DockerName, String> {
    let parsed = match ImageSource::parse(text) {
        Ok(ImageSource::Registry(reference)) => reference,
        Ok(ImageSource::Layout { .. }) => {
            return Err(format!("{text:?} is not a docker reference"));
        }
        Err(e) => return Err(e.to_string()),
    };
    let repository = format!("{}/{}", parsed.registry(), parsed.repository());
    let suffix = if !explicitly_tagged_or_digested(text) {
        None
    } else if let Some(digest) = parsed.digest() {
        Some(format!("@{digest}"))
    } else {
        parsed.tag().map(|tag| format!(":{tag}"))
    };
    Ok(DockerName { repository, suffix })
}

/// Whether reference text names a tag or digest itself (not the implied `:latest`).
pub(super) fn explicitly_tagged_or_digested(text: &str) -> bool {
    text.contains('@')
        || text
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'))
}

/// The name of a pulled registry image as the identity rules see it.
pub fn image_name(reference: &Reference) -> DockerName {
    let repository = format!("{}/{}", reference.registry(), reference.repository());
    let suffix = match (reference.digest(), reference.tag()) {
        (Some(digest), _) => Some(format!("@{digest}")),
        (None, Some(tag)) => Some(format!(":{tag}")),
        (None, None) => None,
    };
    DockerName { repository, suffix }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_references_normalize_and_keep_their_suffix() {
        let name = parse_docker_reference("busybox").unwrap();
        assert_eq!(name.repository, "docker.io/library/busybox");
        assert_eq!(name.suffix, None);
        let name = parse_docker_reference("127.0.0.1:5000/t/img:v1").unwrap();
        assert_eq!(name.whole(), "127.0.0.1:5000/t/img:v1");
        assert_eq!(
            image_name(
                ImageSource::parse("127.0.0.1:5000/t/img")
                    .unwrap()
                    .registry_reference()
                    .unwrap()
            )
            .whole(),
            "127.0.0.1:5000/t/img:latest"
        );
    }
}
