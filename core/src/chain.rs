//! Errors shown on one line with their causes, for messages that cross a layer
//! (the client's transport errors, object storage's redirects). A leaf: it imports
//! nothing of the crate, so any layer may use it.

/// An error and its causes on one line ("connection refused" is usually a cause).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let cs = c.to_string();
        if !s.contains(&cs) {
            s.push_str(": ");
            s.push_str(&cs);
        }
        cur = c.source();
    }
    s
}
