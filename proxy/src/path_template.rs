//! `google.api.http` path templates: parsing and matching request paths.
//!
//! Grammar (from the public HttpRule documentation):
//! `Template = "/" Segments [ ":" Verb ]`, a segment being `*`, `**`, a literal or
//! `{field.path[=Segments]}`. Owns only path syntax; fields are set elsewhere.

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Segment {
    Literal(String),
    /// `*`: exactly one segment.
    Single,
    /// `**`: zero or more segments; only last.
    Rest,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Variable {
    field_path: Vec<String>,
    /// Index of the first segment the variable covers, and how many (`None`: to the end).
    start: usize,
    len: Option<usize>,
}

/// A parsed path template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PathTemplate {
    source: String,
    segments: Vec<Segment>,
    variables: Vec<Variable>,
    verb: Option<String>,
}

/// A variable bound by a match: the field path and its (percent-decoded) value.
pub type Binding = (Vec<String>, String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid path template {template:?}: {reason}")]
pub struct TemplateError {
    template: String,
    reason: &'static str,
}

impl fmt::Display for PathTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PathTemplate {
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let fail = |reason| TemplateError {
            template: source.to_string(),
            reason,
        };
        let rest = source.strip_prefix('/').ok_or_else(|| fail("must start with '/'"))?;
        // The verb is a ':' after the last '/' that is outside braces.
        let (body, verb) = split_verb(rest);
        let mut template = PathTemplate {
            source: source.to_string(),
            segments: Vec::new(),
            variables: Vec::new(),
            verb: verb.map(str::to_string),
        };
        let mut chars = body;
        while !chars.is_empty() {
            if let Some(after) = chars.strip_prefix('{') {
                let close = after.find('}').ok_or_else(|| fail("unclosed '{'"))?;
                let inner = &after[..close];
                let (path, pattern) = match inner.split_once('=') {
                    Some((p, pat)) => (p, pat),
                    None => (inner, "*"),
                };
                if path.is_empty() || path.split('.').any(str::is_empty) {
                    return Err(fail("empty field path in variable"));
                }
                let start = template.segments.len();
                for part in pattern.split('/') {
                    template
                        .segments
                        .push(parse_plain_segment(part).ok_or_else(|| fail("bad segment in variable"))?);
                }
                let covers_rest = template.segments.last() == Some(&Segment::Rest);
                template.variables.push(Variable {
                    field_path: path.split('.').map(str::to_string).collect(),
                    start,
                    len: if covers_rest {
                        None
                    } else {
                        Some(template.segments.len() - start)
                    },
                });
                chars = &after[close + 1..];
            } else {
                let end = chars.find('/').unwrap_or(chars.len());
                let part = &chars[..end];
                template
                    .segments
                    .push(parse_plain_segment(part).ok_or_else(|| fail("bad segment"))?);
                chars = &chars[end..];
            }
            if let Some(after) = chars.strip_prefix('/') {
                if after.is_empty() {
                    return Err(fail("trailing '/'"));
                }
                chars = after;
            } else if !chars.is_empty() {
                return Err(fail("expected '/' after a variable"));
            }
        }
        if let Some(i) = template.segments.iter().position(|s| *s == Segment::Rest) {
            if i + 1 != template.segments.len() {
                return Err(fail("'**' must be the last segment"));
            }
        }
        Ok(template)
    }

    /// Matches a request path (without query string). Returns the bound variables,
    /// values percent-decoded, or `None` if the path does not match.
    pub fn matches(&self, path: &str) -> Option<Vec<Binding>> {
        let rest = path.strip_prefix('/')?;
        let (body, verb) = split_verb(rest);
        if verb != self.verb.as_deref() {
            return None;
        }
        let parts: Vec<&str> = if body.is_empty() {
            Vec::new()
        } else {
            body.split('/').collect()
        };
        let mut i = 0;
        for segment in &self.segments {
            match segment {
                Segment::Literal(lit) => {
                    if parts.get(i).map(|p| percent_decode(p)) != Some(Some(lit.clone())) {
                        return None;
                    }
                    i += 1;
                }
                Segment::Single => {
                    if parts.get(i).is_none_or(|p| p.is_empty()) {
                        return None;
                    }
                    i += 1;
                }
                Segment::Rest => i = parts.len(),
            }
        }
        if i != parts.len() {
            return None;
        }
        let mut bindings = Vec::with_capacity(self.variables.len());
        for var in &self.variables {
            let end = match var.len {
                Some(len) => var.start + len,
                None => parts.len(),
            };
            let raw = parts[var.start..end].join("/");
            bindings.push((var.field_path.clone(), percent_decode(&raw)?));
        }
        Some(bindings)
    }

    /// Literal segments count for precedence: more specific templates win.
    pub fn literal_count(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| matches!(s, Segment::Literal(_)))
            .count()
    }
}

fn parse_plain_segment(part: &str) -> Option<Segment> {
    match part {
        "" => None,
        "*" => Some(Segment::Single),
        "**" => Some(Segment::Rest),
        lit if lit.contains(['{', '}', '=']) => None,
        lit => Some(Segment::Literal(lit.to_string())),
    }
}

fn split_verb(path: &str) -> (&str, Option<&str>) {
    let last_slash = path.rfind('/').map_or(0, |i| i + 1);
    let last_close = path.rfind('}').map_or(0, |i| i + 1);
    let from = last_slash.max(last_close);
    match path[from..].find(':') {
        Some(i) => (&path[..from + i], Some(&path[from + i + 1..])),
        None => (path, None),
    }
}

/// Decodes `%XX` escapes; `None` for invalid escapes or invalid UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return Some(s.to_string());
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(t: &str, path: &str) -> Option<Vec<(String, String)>> {
        PathTemplate::parse(t)
            .unwrap()
            .matches(path)
            .map(|b| b.into_iter().map(|(f, v)| (f.join("."), v)).collect())
    }

    #[test]
    fn literal_and_variables() {
        assert_eq!(
            bind("/cart/{user_id}/items/add", "/cart/u1/items/add"),
            Some(vec![("user_id".into(), "u1".into())])
        );
        assert_eq!(
            bind(
                "/cart/{user_id}/items/{product_id}/remove",
                "/cart/u%201/items/p-2/remove"
            ),
            Some(vec![
                ("user_id".into(), "u 1".into()),
                ("product_id".into(), "p-2".into())
            ])
        );
        assert_eq!(bind("/cart/{user_id}/items/add", "/cart/u1/items"), None);
        assert_eq!(bind("/cart/{user_id}/items/add", "/cart//items/add"), None);
        assert_eq!(bind("/carts/{user_id}", "/carts/u1/items"), None);
    }

    #[test]
    fn nested_fields_wildcards_and_verbs() {
        assert_eq!(
            bind("/v1/{name=shelves/*}", "/v1/shelves/7"),
            Some(vec![("name".into(), "shelves/7".into())])
        );
        assert_eq!(bind("/v1/{a.b}/x", "/v1/q/x"), Some(vec![("a.b".into(), "q".into())]));
        assert_eq!(
            bind("/files/{path=**}", "/files/a/b/c.txt"),
            Some(vec![("path".into(), "a/b/c.txt".into())])
        );
        assert_eq!(bind("/v1/*/x", "/v1/any/x"), Some(vec![]));
        assert_eq!(
            bind("/v1/{id}:cancel", "/v1/42:cancel"),
            Some(vec![("id".into(), "42".into())])
        );
        assert_eq!(bind("/v1/{id}:cancel", "/v1/42"), None);
        assert_eq!(bind("/v1/{id}", "/v1/42:cancel"), None);
    }

    #[test]
    fn rejects_bad_templates() {
        for bad in ["cart", "/a/{", "/a/{}", "/a/**/b", "/a/", "/a/{x}y"] {
            assert!(PathTemplate::parse(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%2Fb"), Some("a/b".into()));
        assert_eq!(percent_decode("%zz"), None);
        assert_eq!(percent_decode("%C3%A9"), Some("é".into()));
    }
}
