//! Parsing `WWW-Authenticate` headers (RFC 7235) into the challenges a
//! registry offers: `Bearer realm="…",service="…",scope="…"` or `Basic realm="…"`.
//!
//! Written by hand because the parser oci-client uses is private to it. The
//! grammar handled: a header holds one or more challenges separated by commas;
//! each is a scheme token followed by `name=value` parameters, where a value is
//! a token or a quoted string (which may hold commas, `=` and `\"` escapes).

use std::collections::BTreeMap;

/// One authentication challenge.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// The scheme, lower-cased (`bearer`, `basic`).
    pub scheme: String,
    /// Parameters by lower-cased name.
    pub params: BTreeMap<String, String>,
}

impl Challenge {
    /// A parameter's value (`realm`, `service`, `scope`, `error`).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params.get(name).map(String::as_str)
    }
}

/// Parses every challenge of a `WWW-Authenticate` header value. Malformed
/// trailing input ends the parse; what was parsed before it is kept.
pub fn parse(header: &str) -> Vec<Challenge> {
    let mut p = Parser { s: header.as_bytes(), i: 0 };
    let mut out: Vec<Challenge> = Vec::new();
    loop {
        p.skip_separators();
        let Some(scheme) = p.token() else { break };
        let mut challenge = Challenge { scheme: scheme.to_ascii_lowercase(), params: BTreeMap::new() };
        loop {
            let save = p.i;
            p.skip_separators();
            let Some(name) = p.token() else {
                p.i = save;
                break;
            };
            p.skip_ws();
            if !p.eat(b'=') {
                // A token without `=` starts the next challenge (or is token68 data, ignored).
                p.i = save;
                break;
            }
            p.skip_ws();
            let value = if p.peek() == Some(b'"') { p.quoted() } else { p.token().map(str::to_string) };
            let Some(value) = value else { break };
            challenge.params.insert(name.to_ascii_lowercase(), value);
        }
        out.push(challenge);
        // The next challenge starts after a comma; anything before it (token68
        // data, junk after a malformed parameter) is skipped.
        if !p.skip_past_comma() {
            break;
        }
    }
    out
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }
    fn eat(&mut self, b: u8) -> bool {
        if self.peek() == Some(b) {
            self.i += 1;
            true
        } else {
            false
        }
    }
    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.i += 1;
        }
    }
    /// Skips whitespace and commas; whether anything was skipped.
    fn skip_separators(&mut self) -> bool {
        let start = self.i;
        while matches!(self.peek(), Some(b' ' | b'\t' | b',')) {
            self.i += 1;
        }
        self.i > start
    }
    /// Moves past the next comma; false at the end of input.
    fn skip_past_comma(&mut self) -> bool {
        while let Some(b) = self.peek() {
            self.i += 1;
            if b == b',' {
                return true;
            }
        }
        false
    }
    /// An RFC 7230 token (plus `/` so that unquoted scopes and token68 survive).
    fn token(&mut self) -> Option<&'a str> {
        let start = self.i;
        while let Some(b) = self.peek() {
            let ok = b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~/:".contains(&b);
            if !ok {
                break;
            }
            self.i += 1;
        }
        (self.i > start).then(|| std::str::from_utf8(&self.s[start..self.i]).expect("ascii"))
    }
    fn quoted(&mut self) -> Option<String> {
        if !self.eat(b'"') {
            return None;
        }
        let mut out = Vec::new();
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'"' => return Some(String::from_utf8_lossy(&out).into_owned()),
                b'\\' => {
                    out.push(self.peek()?);
                    self.i += 1;
                }
                _ => out.push(b),
            }
        }
        None // unterminated
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_with_commas_in_quoted_scope() {
        let h = r#"Bearer realm="https://auth.example.com/token",service="registry.example.com",scope="repository:os/base:pull,push""#;
        let c = parse(h);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].scheme, "bearer");
        assert_eq!(c[0].param("realm"), Some("https://auth.example.com/token"));
        assert_eq!(c[0].param("service"), Some("registry.example.com"));
        assert_eq!(c[0].param("scope"), Some("repository:os/base:pull,push"));
    }

    #[test]
    fn several_challenges_spaces_case_and_escapes() {
        let h = r#"Basic realm="Registry \"R\"", BEARER Realm = "http://127.0.0.1:1/t" , service=reg,error="insufficient_scope""#;
        let c = parse(h);
        assert_eq!(c.len(), 2, "{c:?}");
        assert_eq!(c[0].scheme, "basic");
        assert_eq!(c[0].param("realm"), Some("Registry \"R\""));
        assert_eq!(c[1].scheme, "bearer");
        assert_eq!(c[1].param("realm"), Some("http://127.0.0.1:1/t"));
        assert_eq!(c[1].param("service"), Some("reg"));
        assert_eq!(c[1].param("error"), Some("insufficient_scope"));
    }

    #[test]
    fn malformed_input_keeps_what_parsed_and_terminates() {
        assert_eq!(parse(""), vec![]);
        let c = parse(r#"Bearer realm="unterminated"#);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].param("realm"), None);
        let c = parse("Negotiate abc==, Basic realm=x");
        assert_eq!(c.iter().map(|c| c.scheme.as_str()).collect::<Vec<_>>(), ["negotiate", "basic"]);
        assert_eq!(c[1].param("realm"), Some("x"));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_and_roundtrips_quoted_values(v in "[ -~]{0,40}", junk in "\\PC{0,40}") {
            let _ = parse(&junk);
            let quoted = v.replace('\\', "\\\\").replace('"', "\\\"");
            let c = parse(&format!("Bearer realm=\"{quoted}\",service=s"));
            proptest::prop_assert_eq!(c[0].param("realm"), Some(v.as_str()));
            proptest::prop_assert_eq!(c[0].param("service"), Some("s"));
        }
    }
}
