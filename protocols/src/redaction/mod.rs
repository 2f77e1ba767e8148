//! Redaction: secrets are replaced in a [`Pair`] before it leaves the agent.
//!
//! What is redacted: values of credential headers (and configured ones), query and
//! form parameters and JSON members named like secrets, and matches of configured
//! patterns. Bodies are only rewritten when they can be read as sent (not
//! content-encoded); `body_size` keeps the size seen on the wire.

mod json;
mod query;

use regex::bytes::Regex;
use tapwire_proto::v1::{Header, Message, Pair};

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Header fields whose values are always redacted (compared case-insensitively).
pub const DEFAULT_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "set-cookie",
    "x-api-key",
];

/// A parameter or JSON member is a secret when its lower-cased name contains one of
/// these.
pub const DEFAULT_FIELD_FRAGMENTS: &[&str] = &[
    "token", "password", "passwd", "secret", "api_key", "apikey", "api-key",
];

/// What to redact beyond the defaults, from the agent's configuration.
#[derive(Debug, Clone, Default)]
pub struct RedactionConfig {
    /// More header names whose values are replaced (case-insensitive, exact).
    pub headers: Vec<String>,
    /// More name fragments for query/form parameters and JSON members (case-insensitive).
    pub fields: Vec<String>,
    /// Regular expressions whose matches are replaced in header values, request
    /// targets and readable bodies (e.g. card or account numbers).
    pub patterns: Vec<String>,
}

/// A configured pattern did not compile.
#[derive(Debug, thiserror::Error)]
#[error("redaction pattern {pattern:?} is not a valid regular expression")]
pub struct PatternError {
    pattern: String,
    #[source]
    source: regex::Error,
}

/// Applies the redaction rules to pairs.
#[derive(Debug, Clone)]
pub struct Redactor {
    headers: Vec<String>,
    fields: Vec<String>,
    patterns: Vec<Regex>,
}

impl Default for Redactor {
    fn default() -> Self {
        Self {
            headers: DEFAULT_HEADERS.iter().map(|h| (*h).to_owned()).collect(),
            fields: DEFAULT_FIELD_FRAGMENTS
                .iter()
                .map(|f| (*f).to_owned())
                .collect(),
            patterns: Vec::new(),
        }
    }
}

impl Redactor {
    /// The default rules plus `config`'s.
    pub fn new(config: &RedactionConfig) -> Result<Self, PatternError> {
        let mut redactor = Self::default();
        redactor
            .headers
            .extend(config.headers.iter().map(|h| h.to_ascii_lowercase()));
        redactor
            .fields
            .extend(config.fields.iter().map(|f| f.to_ascii_lowercase()));
        for pattern in &config.patterns {
            let regex = Regex::new(pattern).map_err(|source| PatternError {
                pattern: pattern.clone(),
                source,
            })?;
            redactor.patterns.push(regex);
        }
        Ok(redactor)
    }

    /// True when a parameter or member called `name` holds a secret.
    pub fn is_sensitive_field(&self, name: &str) -> bool {
        let name = name.to_ascii_lowercase();
        self.fields.iter().any(|f| name.contains(f.as_str()))
    }

    fn is_sensitive_header(&self, name: &str) -> bool {
        self.headers.iter().any(|h| h.eq_ignore_ascii_case(name))
    }

    /// Redacts `pair` in place.
    pub fn redact(&self, pair: &mut Pair) {
        if let Some(path) =
            query::redact_target(&pair.path, REDACTED, |n| self.is_sensitive_field(n))
        {
            pair.path = path;
        }
        if let Some(path) = self.apply_patterns_str(&pair.path) {
            pair.path = path;
        }
        for message in [pair.request.as_mut(), pair.response.as_mut()]
            .into_iter()
            .flatten()
        {
            self.redact_message(message);
        }
        for message in &mut pair.messages {
            if message.kind == "text"
                && !message.compressed
                && let Some(data) = self.redact_text_body(&message.data)
            {
                message.data = data.into();
            }
        }
    }

    fn redact_message(&self, message: &mut Message) {
        self.redact_headers(&mut message.headers);
        self.redact_headers(&mut message.trailers);
        if message.body.is_empty() || !message.content_encoding.is_empty() {
            return;
        }
        let content_type = message
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("content-type"))
            .map(|h| h.value.to_ascii_lowercase())
            .unwrap_or_default();
        let body = if content_type.contains("json") {
            self.redact_text_body(&message.body)
        } else if content_type.starts_with("application/x-www-form-urlencoded") {
            std::str::from_utf8(&message.body)
                .ok()
                .and_then(|form| {
                    query::redact_params(form, REDACTED, |n| self.is_sensitive_field(n))
                })
                .map(|form| {
                    self.apply_patterns(form.as_bytes())
                        .unwrap_or_else(|| form.into_bytes())
                })
        } else if is_textual(&content_type) {
            self.apply_patterns(&message.body)
        } else {
            None
        };
        if let Some(body) = body {
            message.body = body.into();
        }
    }

    /// JSON member redaction, then the configured patterns.
    fn redact_text_body(&self, body: &[u8]) -> Option<Vec<u8>> {
        let replacement = format!("\"{REDACTED}\"");
        let members =
            json::redact_members(body, replacement.as_bytes(), |n| self.is_sensitive_field(n));
        match members {
            Some(redacted) => Some(self.apply_patterns(&redacted).unwrap_or(redacted)),
            None => self.apply_patterns(body),
        }
    }

    fn redact_headers(&self, headers: &mut [Header]) {
        for header in headers {
            if self.is_sensitive_header(&header.name) {
                header.value = REDACTED.to_owned();
            } else if let Some(value) = self.apply_patterns_str(&header.value) {
                header.value = value;
            }
        }
    }

    fn apply_patterns(&self, input: &[u8]) -> Option<Vec<u8>> {
        let mut current: Option<Vec<u8>> = None;
        for regex in &self.patterns {
            let text = current.as_deref().unwrap_or(input);
            if regex.is_match(text) {
                current = Some(regex.replace_all(text, REDACTED.as_bytes()).into_owned());
            }
        }
        current
    }

    fn apply_patterns_str(&self, input: &str) -> Option<String> {
        self.apply_patterns(input.as_bytes())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

/// Content types whose bodies are text the patterns may be applied to.
fn is_textual(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || content_type.contains("xml")
        || content_type.contains("javascript")
        || content_type.contains("graphql")
}

#[cfg(test)]
mod tests;
