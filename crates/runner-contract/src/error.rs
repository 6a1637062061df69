//! The one way the workspace turns an error and its causes into one line.

/// `error: cause: cause ...`, the whole `source()` chain on one line, as `anyhow`'s `{:#}`
/// prints it. A cause whose text already ends the line is not repeated: some errors
/// (from crates outside the workspace) print their cause in their own message too.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut line = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !line.ends_with(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        source = cause.source();
    }
    line
}

#[cfg(test)]
mod tests {
    use super::error_chain;

    #[derive(Debug, thiserror::Error)]
    #[error("{message}")]
    struct Layer {
        message: &'static str,
        #[source]
        source: Option<Box<Layer>>,
    }

    fn chain(messages: &[&'static str]) -> Layer {
        messages
            .iter()
            .rev()
            .fold(None, |source, message| {
                Some(Layer {
                    message,
                    source: source.map(Box::new),
                })
            })
            .expect("at least one message")
    }

    #[test]
    fn joins_causes_and_drops_a_repeated_tail() {
        assert_eq!(error_chain(&chain(&["a"])), "a");
        assert_eq!(
            error_chain(&chain(&["pulling x", "timed out"])),
            "pulling x: timed out"
        );
        // The second message repeats its cause: it is said once.
        assert_eq!(
            error_chain(&chain(&["reading f", "bad header: eof", "eof"])),
            "reading f: bad header: eof"
        );
        // Only a repeated tail is dropped, not a cause that merely occurs earlier.
        assert_eq!(
            error_chain(&chain(&["eof while reading", "eof"])),
            "eof while reading: eof"
        );
    }
}
