//! The docker reference grammar of distribution/reference, part by part: the
//! registry host and port, the repository path, the tag and the digest.
//!
//! Each check names the part it refuses. Where hostctl is stricter than the
//! upstream regular expressions it is on purpose, and upstream's own comments
//! ask for the same ("will fail in validation"): an IPv6 literal must be an
//! IPv6 address, not just hex digits and colons, and a port is 0-65535.

use std::net::Ipv6Addr;

use super::RefError;
use crate::digest::Digest;

/// Longest repository path (`library/alpine`, without the registry host),
/// distribution/reference's `RepositoryNameTotalLengthMax`.
pub const REPOSITORY_MAX: usize = 255;

/// Longest tag: `[\w][\w.-]{0,127}`.
pub const TAG_MAX: usize = 128;

/// Checks a registry host as `host[:port]`: a DNS name of letters, digits
/// and inner `-` in non-empty dot-separated labels (IPv4 addresses are such
/// names), or an IPv6 address in brackets without a zone index; a port is
/// digits, at most 65535.
pub fn check_domain(domain: &str) -> Result<(), RefError> {
    let bad = |why: String| RefError::BadHost { host: domain.to_string(), why };
    let port = if let Some(bracketed) = domain.strip_prefix('[') {
        let Some((addr, after)) = bracketed.split_once(']') else {
            return Err(bad("the IPv6 address after '[' has no closing ']'".into()));
        };
        check_ipv6(addr).map_err(bad)?;
        match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => {
                    return Err(bad(format!("{after:?} follows the IPv6 address; a port is written [ADDRESS]:PORT")))
                }
            },
        }
    } else {
        let (host, port) = match domain.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (domain, None),
        };
        if port.is_some_and(|p| p.contains(':')) {
            return Err(bad("an IPv6 address is written in brackets: [ADDRESS] or [ADDRESS]:PORT".into()));
        }
        check_dns_name(host).map_err(bad)?;
        port
    };
    match port {
        Some(p) => check_port(p).map_err(bad),
        None => Ok(()),
    }
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]` labels joined by `.`.
fn check_dns_name(host: &str) -> Result<(), String> {
    if host.is_empty() {
        return Err("the host name is empty".into());
    }
    for label in host.split('.') {
        if label.is_empty() {
            return Err("a DNS label is empty (\"..\", or a '.' at the start or end)".into());
        }
        if let Some(c) = label.chars().find(|c| !c.is_ascii_alphanumeric() && *c != '-') {
            return Err(format!("label {label:?} holds {c:?}; host names are letters, digits, '-' and '.'"));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(format!("label {label:?} starts or ends with '-'"));
        }
    }
    Ok(())
}

/// The text between `[` and `]`: hex digits and colons (no zone index, no
/// embedded dotted IPv4 form, as upstream's `ipv6address`) that make an
/// IPv6 address.
fn check_ipv6(addr: &str) -> Result<(), String> {
    if let Some(i) = addr.find('%') {
        return Err(format!("IPv6 zone index {:?} is not allowed in an image reference", &addr[i..]));
    }
    if let Some(c) = addr.chars().find(|c| !c.is_ascii_hexdigit() && *c != ':') {
        return Err(format!("IPv6 address {addr:?} holds {c:?}; only hex digits and ':' are allowed"));
    }
    match addr.parse::<Ipv6Addr>() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!("{addr:?} is not an IPv6 address")),
    }
}

fn check_port(port: &str) -> Result<(), String> {
    if port.is_empty() {
        return Err("the port after ':' is empty".into());
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!("port {port:?} is not a number"));
    }
    let significant = port.trim_start_matches('0');
    if significant.len() > 5 || significant.parse::<u32>().is_ok_and(|p| p > 65535) {
        return Err(format!("port {port} is out of range (0-65535)"));
    }
    Ok(())
}

/// Checks a repository path: at most [`REPOSITORY_MAX`] characters of
/// `/`-separated components, each lowercase letters and digits joined by
/// one separator: `.`, `_`, `__` or a run of `-`.
pub fn check_repository(repo: &str) -> Result<(), RefError> {
    let bad = |why: String| Err(RefError::BadRepository { repository: repo.to_string(), why });
    if repo.len() > REPOSITORY_MAX {
        return bad(format!("it is {} characters long; the limit is {REPOSITORY_MAX}", repo.len()));
    }
    for component in repo.split('/') {
        if let Err(why) = check_component(component) {
            return bad(why);
        }
    }
    Ok(())
}

fn check_component(component: &str) -> Result<(), String> {
    if component.is_empty() {
        return Err("a path component is empty (\"//\", or a '/' at the start or end)".into());
    }
    if component.bytes().any(|b| b.is_ascii_uppercase()) {
        return Err(format!("path component {component:?} has uppercase letters; repository names are lowercase"));
    }
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let separator = |c: u8| matches!(c, b'.' | b'_' | b'-');
    if let Some(c) = component.chars().find(|&c| !c.is_ascii() || !(alnum(c as u8) || separator(c as u8))) {
        return Err(format!(
            "path component {component:?} holds {c:?}; components are lowercase letters, digits, '.', '_' and '-'"
        ));
    }
    let b = component.as_bytes();
    if !alnum(b[0]) || !alnum(b[b.len() - 1]) {
        return Err(format!("path component {component:?} must start and end with a lowercase letter or digit"));
    }
    for sep in component.split(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit()).filter(|s| !s.is_empty()) {
        if !(sep == "." || sep == "_" || sep == "__" || sep.bytes().all(|c| c == b'-')) {
            return Err(format!(
                "path component {component:?} joins letters or digits with {sep:?}; only '.', '_', '__' or a run of '-' may"
            ));
        }
    }
    Ok(())
}

/// Checks a tag: `[\w][\w.-]{0,127}`.
pub fn check_tag(tag: &str) -> Result<(), RefError> {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let ok = tag.len() <= TAG_MAX
        && tag.bytes().next().is_some_and(word)
        && tag.bytes().all(|b| word(b) || matches!(b, b'.' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RefError::BadTag(tag.to_string()))
    }
}

/// Parses the digest after `@`. The grammar is upstream's
/// (`ALGORITHM:HEX`, at least 32 hex digits); of the algorithms it admits,
/// hostctl supports sha256 only and says so for the others (sha512).
pub fn parse_digest(s: &str) -> Result<Digest, RefError> {
    match s.split_once(':') {
        Some(("sha256", _)) => Ok(s.parse::<Digest>()?),
        Some((alg, hex)) if algorithm_ok(alg) && hex.len() >= 32 && hex.bytes().all(|b| b.is_ascii_hexdigit()) => {
            Err(RefError::UnsupportedDigest(alg.to_string()))
        }
        _ => Err(RefError::MalformedDigest(s.to_string())),
    }
}

/// `[A-Za-z][A-Za-z0-9]*` components joined by one of `-_+.`.
fn algorithm_ok(alg: &str) -> bool {
    alg.split(['-', '_', '+', '.']).all(|part| {
        part.bytes().next().is_some_and(|b| b.is_ascii_alphabetic()) && part.bytes().all(|b| b.is_ascii_alphanumeric())
    })
}

/// Whether `s` is a 64-hex-digit image ID, which distribution/reference
/// refuses as a repository name.
pub fn is_image_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}
