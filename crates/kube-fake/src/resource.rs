//! The resources the fake serves and where they live in the URL space.

/// A resource type the fake API server knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Resource {
    /// `argoproj.io/v1alpha1` `Workflow`, namespaced, with the status subresource.
    Workflows,
    /// Core `v1` `Secret`, with base64 `data`.
    Secrets,
}

impl Resource {
    /// API group; empty for the core group.
    pub fn group(self) -> &'static str {
        match self {
            Self::Workflows => "argoproj.io",
            Self::Secrets => "",
        }
    }

    /// `apiVersion` of the objects.
    pub fn api_version(self) -> &'static str {
        match self {
            Self::Workflows => "argoproj.io/v1alpha1",
            Self::Secrets => "v1",
        }
    }

    /// `kind` of the objects.
    pub fn kind(self) -> &'static str {
        match self {
            Self::Workflows => "Workflow",
            Self::Secrets => "Secret",
        }
    }

    /// Plural name in URLs.
    pub fn plural(self) -> &'static str {
        match self {
            Self::Workflows => "workflows",
            Self::Secrets => "secrets",
        }
    }

    /// `plural.group` as error messages name the resource (`workflows.argoproj.io`).
    pub(crate) fn qualified(self) -> String {
        match self.group() {
            "" => self.plural().to_owned(),
            group => format!("{}.{group}", self.plural()),
        }
    }

    /// `Kind.group` as validation errors name the resource (`Workflow.argoproj.io`).
    pub(crate) fn qualified_kind(self) -> String {
        match self.group() {
            "" => self.kind().to_owned(),
            group => format!("{}.{group}", self.kind()),
        }
    }

    /// Whether this is a custom resource (unconditional updates refused, `generation` kept).
    pub(crate) fn is_custom(self) -> bool {
        self == Self::Workflows
    }

    /// Whether `status` is written only through the `/status` subresource.
    pub fn has_status_subresource(self) -> bool {
        self == Self::Workflows
    }

    /// The resource a request path addresses and the rest of the path
    /// (`[]`, `[name]` or `[name, "status"]`), with the namespace.
    pub(crate) fn route(path: &str) -> Option<(Self, &str, Vec<&str>)> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match segments.as_slice() {
            ["api", "v1", "namespaces", ns, "secrets", rest @ ..] => {
                Some((Self::Secrets, ns, rest.to_vec()))
            }
            [
                "apis",
                "argoproj.io",
                "v1alpha1",
                "namespaces",
                ns,
                "workflows",
                rest @ ..,
            ] => Some((Self::Workflows, ns, rest.to_vec())),
            _ => None,
        }
    }
}
