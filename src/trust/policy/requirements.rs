//! Policy requirements, read as containers/image reads them: every field of
//! every requirement type it knows is checked — unknown fields, missing and
//! mutually exclusive ones, base64, `signedIdentity` — including the types
//! hostctl cannot verify (`signedBy`, `signedBaseLayer`, `sigstoreSigned`
//! with `pki`, …). A malformed requirement makes the policy an error naming
//! the field; a well-formed unsupported one loads as
//! [`Requirement::Unsupported`] and refuses every image of its scope.
//!
//! As in containers/image, an empty `keyPath`, `rekorPublicKeyPath`, `caPath`
//! (or other path or name string) counts as not given, while an empty
//! `keyData` string is given (and holds no bytes).

use anyhow::{bail, ensure, Context, Result};

use super::json::{Node, Obj};
use super::{Material, Requirement, SigstoreSigned, Trust};
use crate::trust::bundle::{CertIdentity, Match, SanKind};
use crate::trust::identity::SignedIdentity;

/// Parses one requirement object.
pub fn parse(node: &Node) -> Result<Requirement> {
    let obj = Obj::of(node, "a requirement")?;
    let ty = match obj.get("type") {
        Some(Node::String(t)) => t.as_str(),
        Some(other) => bail!("a requirement's \"type\" must be a string, not {}", other.kind()),
        None => bail!("a requirement needs a string \"type\""),
    };
    match ty {
        "insecureAcceptAnything" | "reject" => {
            if let Some(k) = obj.keys().find(|k| *k != "type") {
                bail!("{ty} takes no field {k:?}");
            }
            Ok(if ty == "reject" { Requirement::Reject } else { Requirement::InsecureAcceptAnything })
        }
        "signedBy" => signed_by(Obj::of(node, "signedBy")?).map(|()| Requirement::Unsupported(ty.to_string())),
        "signedBaseLayer" => {
            let obj = Obj::of(node, "signedBaseLayer")?;
            obj.only(&["type", "baseLayerIdentity"])?;
            let id = obj.get("baseLayerIdentity").context("signedBaseLayer needs the field \"baseLayerIdentity\"")?;
            SignedIdentity::from_node(id).context("signedBaseLayer: baseLayerIdentity")?;
            Ok(Requirement::Unsupported(ty.to_string()))
        }
        "sigstoreSigned" => sigstore(Obj::of(node, "sigstoreSigned")?),
        other => bail!("unknown requirement type {other:?}"),
    }
}

fn b64(s: &str, what: &str) -> Result<Vec<u8>> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.decode(s.trim()).with_context(|| format!("{what} is not valid base64"))
}

/// `signedIdentity`, defaulting to `matchRepoDigestOrExact`; `null` is an error.
fn signed_identity(obj: Obj<'_>) -> Result<SignedIdentity> {
    match obj.get("signedIdentity") {
        None => Ok(SignedIdentity::MatchRepoDigestOrExact),
        Some(n) => SignedIdentity::from_node(n),
    }
}

/// A non-empty path or name string (empty counts as not given, as upstream).
fn text<'a>(obj: Obj<'a>, key: &str) -> Result<Option<&'a str>> {
    Ok(obj.str(key)?.filter(|s| !s.is_empty()))
}

/// A list that, when given, must hold at least one entry.
fn non_empty<'a>(obj: Obj<'a>, key: &str) -> Result<Option<Vec<&'a str>>> {
    let list = obj.strs(key)?;
    if let Some(l) = &list {
        ensure!(!l.is_empty(), "{key} contains no entries");
    }
    Ok(list)
}

/// The given ones of `names`, for "exactly one of" checks.
fn given(present: &[(&'static str, bool)]) -> Vec<&'static str> {
    present.iter().filter(|(_, p)| *p).map(|(n, _)| *n).collect()
}

fn signed_by(obj: Obj<'_>) -> Result<()> {
    obj.only(&["type", "keyType", "keyPath", "keyPaths", "keyData", "signedIdentity"])?;
    const KEY_TYPES: [&str; 4] = ["GPGKeys", "signedByGPGKeys", "X509Certificates", "signedByX509CAs"];
    let key_type = obj.str("keyType")?.context("signedBy needs the field \"keyType\"")?;
    ensure!(KEY_TYPES.contains(&key_type), "signedBy keyType {key_type:?} is not one of {}", KEY_TYPES.join(", "));
    let key_path = text(obj, "keyPath")?;
    let key_paths = obj.strs("keyPaths")?;
    let key_data = obj.str("keyData")?;
    if let Some(d) = key_data {
        b64(d, "keyData")?;
    }
    let sources =
        given(&[("keyPath", key_path.is_some()), ("keyPaths", key_paths.is_some()), ("keyData", key_data.is_some())]);
    ensure!(
        sources.len() == 1,
        "signedBy needs exactly one of keyPath, keyPaths and keyData{}",
        if sources.is_empty() { String::new() } else { format!(" (found {})", sources.join(" and ")) }
    );
    signed_identity(obj).context("signedBy: signedIdentity")?;
    Ok(())
}

/// Key or Rekor key material: `<base>Path`, `<base>Paths`, `<base>Data`,
/// `<base>Datas`; at most one of them. Empty when none is given.
fn materials(obj: Obj<'_>, names: [&'static str; 4]) -> Result<Vec<Material>> {
    let [path, paths, data, datas] = names;
    let one = text(obj, path)?;
    let many = non_empty(obj, paths)?;
    let d = obj.str(data)?;
    let ds = non_empty(obj, datas)?;
    let found = given(&[(path, one.is_some()), (paths, many.is_some()), (data, d.is_some()), (datas, ds.is_some())]);
    ensure!(found.len() <= 1, "sigstoreSigned takes only one of {} (found {})", names.join(", "), found.join(" and "));
    let mut out: Vec<Material> =
        one.into_iter().chain(many.unwrap_or_default()).map(|p| Material::Path(p.into())).collect();
    for s in d.into_iter().chain(ds.unwrap_or_default()) {
        out.push(Material::Data(b64(s, if d.is_some() { data } else { datas })?));
    }
    Ok(out)
}

fn sigstore(obj: Obj<'_>) -> Result<Requirement> {
    obj.only(&[
        "type",
        "keyPath",
        "keyPaths",
        "keyData",
        "keyDatas",
        "fulcio",
        "pki",
        "rekorPublicKeyPath",
        "rekorPublicKeyPaths",
        "rekorPublicKeyData",
        "rekorPublicKeyDatas",
        "signedIdentity",
        "trustedRootPath",
    ])?;
    // hostctl's extension: the sigstore trusted root for bundle signatures.
    let trusted_root = text(obj, "trustedRootPath")?.map(std::path::PathBuf::from);
    let keys = materials(obj, ["keyPath", "keyPaths", "keyData", "keyDatas"])?;
    let rekor =
        materials(obj, ["rekorPublicKeyPath", "rekorPublicKeyPaths", "rekorPublicKeyData", "rekorPublicKeyDatas"])?;
    let fulcio = obj
        .get("fulcio")
        .map(|n| fulcio(Obj::of(n, "fulcio")?, trusted_root.is_some()).context("sigstoreSigned: fulcio"))
        .transpose()?;
    let pki = obj.get("pki").map(|n| pki(Obj::of(n, "pki")?).context("sigstoreSigned: pki")).transpose()?;
    let sources = given(&[("keys", !keys.is_empty()), ("fulcio", fulcio.is_some()), ("pki", pki.is_some())]);
    match sources.len() {
        0 => bail!("sigstoreSigned needs one of keyPath, keyPaths, keyData, keyDatas, fulcio or pki"),
        1 => {}
        _ => bail!(
            "sigstoreSigned takes only one of keyPath, keyPaths, keyData, keyDatas, fulcio and pki (found {})",
            sources.join(" and ")
        ),
    }
    let signed_identity = signed_identity(obj).context("sigstoreSigned: signedIdentity")?;
    if pki.is_some() {
        ensure!(rekor.is_empty(), "sigstoreSigned with pki takes no rekorPublicKey* field");
        return Ok(Requirement::Unsupported("sigstoreSigned with pki".into()));
    }
    let trust = match fulcio {
        Some(f) => {
            // With hostctl's trustedRootPath the CA and the Rekor keys may
            // come from the trusted root alone (bundles only).
            ensure!(
                !rekor.is_empty() || trusted_root.is_some(),
                "fulcio needs rekorPublicKeyPath, rekorPublicKeyPaths, rekorPublicKeyData or rekorPublicKeyDatas"
            );
            let Some(identity) = f.identity else {
                return Ok(Requirement::Unsupported("sigstoreSigned with fulcio buildSignerURI".into()));
            };
            if f.build_signer_uri {
                return Ok(Requirement::Unsupported("sigstoreSigned with fulcio buildSignerURI".into()));
            }
            Trust::Fulcio { ca: f.ca, identity, rekor_keys: rekor }
        }
        None => {
            // With a Rekor key containers/image also requires a log entry for
            // keyed signatures. hostctl does not check those, so the scope
            // refuses every image rather than ignoring the requirement.
            if !rekor.is_empty() {
                return Ok(Requirement::Unsupported("sigstoreSigned with keys and rekorPublicKey*".into()));
            }
            Trust::Keys(keys)
        }
    };
    Ok(Requirement::SigstoreSigned(SigstoreSigned { trust, signed_identity, trusted_root }))
}

struct Fulcio {
    ca: Option<Material>,
    identity: Option<CertIdentity>,
    build_signer_uri: bool,
}

/// `fulcio`: containers/image's fields plus hostctl's `subjectURI`,
/// `subjectRegexp` and `oidcIssuerRegexp` (docs/trust.md). `has_root`: the
/// requirement names a trusted root, so the CA may be left out.
fn fulcio(obj: Obj<'_>, has_root: bool) -> Result<Fulcio> {
    obj.only(&[
        "caPath",
        "caData",
        "oidcIssuer",
        "subjectEmail",
        "buildSignerURI",
        "subjectURI",
        "subjectRegexp",
        "oidcIssuerRegexp",
    ])?;
    let ca = match (text(obj, "caPath")?, obj.str("caData")?) {
        (Some(p), None) => Some(Material::Path(p.into())),
        (None, Some(d)) => Some(Material::Data(b64(d, "fulcio.caData")?)),
        (Some(_), Some(_)) => bail!("fulcio takes only one of caPath and caData"),
        (None, None) if has_root => None,
        (None, None) => bail!("fulcio needs exactly one of caPath and caData (or hostctl's trustedRootPath)"),
    };
    let issuer = match (text(obj, "oidcIssuer")?, text(obj, "oidcIssuerRegexp")?) {
        (Some(i), None) => Match::Exact(i.to_string()),
        (None, Some(r)) => Match::regex(r).context("fulcio.oidcIssuerRegexp")?,
        (Some(_), Some(_)) => bail!("fulcio takes only one of oidcIssuer and oidcIssuerRegexp"),
        (None, None) => bail!("fulcio.oidcIssuer is required"),
    };
    let subjects = [
        ("subjectEmail", SanKind::Email, text(obj, "subjectEmail")?),
        ("subjectURI", SanKind::Uri, text(obj, "subjectURI")?),
        ("subjectRegexp", SanKind::Any, text(obj, "subjectRegexp")?),
    ];
    let named: Vec<_> = subjects.iter().filter(|(_, _, v)| v.is_some()).collect();
    ensure!(
        named.len() <= 1,
        "fulcio takes only one of subjectEmail, subjectURI and subjectRegexp (found {})",
        named.iter().map(|(n, _, _)| *n).collect::<Vec<_>>().join(" and ")
    );
    let identity = match named.first() {
        Some(("subjectRegexp", kind, Some(r))) => {
            Some(CertIdentity { kind: *kind, subject: Match::regex(r).context("fulcio.subjectRegexp")?, issuer })
        }
        Some((_, kind, Some(v))) => Some(CertIdentity { kind: *kind, subject: Match::Exact(v.to_string()), issuer }),
        _ => None,
    };
    let build_signer_uri = text(obj, "buildSignerURI")?.is_some();
    ensure!(
        identity.is_some() || build_signer_uri,
        "fulcio.subjectEmail is required (or hostctl's subjectURI or subjectRegexp, or buildSignerURI)"
    );
    Ok(Fulcio { ca, identity, build_signer_uri })
}

/// Validates a `pki` object (hostctl does not verify X.509 PKI signatures).
fn pki(obj: Obj<'_>) -> Result<()> {
    obj.only(&[
        "caRootsPath",
        "caRootsData",
        "caIntermediatesPath",
        "caIntermediatesData",
        "subjectEmail",
        "subjectHostname",
    ])?;
    let data = |key: &str| -> Result<bool> {
        match obj.str(key)? {
            Some(d) => b64(d, &format!("pki.{key}")).map(|_| true),
            None => Ok(false),
        }
    };
    match (text(obj, "caRootsPath")?.is_some(), data("caRootsData")?) {
        (true, false) | (false, true) => {}
        (true, true) => bail!("pki takes only one of caRootsPath and caRootsData"),
        (false, false) => bail!("pki needs exactly one of caRootsPath and caRootsData"),
    }
    let path = text(obj, "caIntermediatesPath")?.is_some();
    let data = data("caIntermediatesData")?;
    ensure!(!(path && data), "pki takes only one of caIntermediatesPath and caIntermediatesData");
    let email = text(obj, "subjectEmail")?;
    let hostname = text(obj, "subjectHostname")?;
    ensure!(email.is_some() || hostname.is_some(), "pki needs subjectEmail or subjectHostname");
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    /// What containers/image does with a requirement.
    #[derive(Clone, Copy, Debug, PartialEq)]
    enum Up {
        Accepts,
        Refuses,
    }
    use Up::*;

    /// What hostctl does: loads it as this requirement type (`type_name()`),
    /// or refuses the policy with an error containing this text.
    #[derive(Clone, Copy, Debug)]
    enum Ours {
        Loads(&'static str),
        Error(&'static str),
    }
    use Ours::*;

    /// `base` with the members of `set` added or replaced and `del` removed.
    fn edit(base: &Value, set: Value, del: &[&str]) -> Value {
        let mut v = base.clone();
        let obj = v.as_object_mut().unwrap();
        for k in del {
            obj.remove(*k);
        }
        for (k, x) in set.as_object().unwrap() {
            obj.insert(k.clone(), x.clone());
        }
        v
    }

    /// Checks each row against hostctl; a row where hostctl's verdict differs
    /// from containers/image's, or that loads a type hostctl cannot verify,
    /// must say why.
    fn run(rows: Vec<(Value, Up, Ours, &str)>) {
        for (req, up, ours, why) in rows {
            let got = parse(&Node::from_value(&req));
            match (ours, &got) {
                (Loads(t), Ok(r)) => assert_eq!(r.type_name(), t, "{req}"),
                (Error(word), Err(e)) => assert!(format!("{e:#}").contains(word), "{req}: {e:#} should say {word:?}"),
                _ => panic!("{req}: expected {ours:?}, got {got:?}"),
            }
            let differs = matches!((up, ours), (Accepts, Error(_)) | (Refuses, Loads(_)));
            let unverified =
                matches!(ours, Loads(t) if t.starts_with("signed") || t.starts_with("sigstoreSigned with"));
            assert_eq!(
                !why.is_empty(),
                differs || unverified,
                "{req}: a reason is given exactly where hostctl differs"
            );
        }
    }

    const UNVERIFIED: &str = "hostctl validates it but cannot verify it: every image of the scope is refused";

    /// `TestPRInsecureAcceptAnythingUnmarshalJSON`, `TestPRRejectUnmarshalJSON`,
    /// `TestNewPolicyRequirementFromJSON`.
    #[test]
    fn accept_and_reject_as_containers_image_reads_them() {
        run(vec![
            (json!({"type":"insecureAcceptAnything"}), Accepts, Loads("insecureAcceptAnything"), ""),
            (json!({"type":"reject"}), Accepts, Loads("reject"), ""),
            (json!({}), Refuses, Error("needs a string \"type\""), ""),
            (json!({"type":1}), Refuses, Error("must be a string, not a number"), ""),
            (json!({"type":"this is invalid"}), Refuses, Error("unknown requirement type \"this is invalid\""), ""),
            (
                json!({"type":"insecureAcceptAnything","unknown":"foo"}),
                Refuses,
                Error("takes no field \"unknown\""),
                "",
            ),
            (json!({"type":"reject","unknown":"foo"}), Refuses, Error("reject takes no field \"unknown\""), ""),
            (json!(1), Refuses, Error("must be a JSON object, not a number"), ""),
        ]);
    }

    /// `TestPRSignedByUnmarshalJSON`, `TestNewPRSignedBy`, `TestSBKeyTypeIsValid`.
    #[test]
    fn signed_by_as_containers_image_reads_it() {
        let base = json!({"type":"signedBy","keyType":"GPGKeys","keyData":"YWJj",
                          "signedIdentity":{"type":"matchRepoDigestOrExact"}});
        let b = |set: Value, del: &[&str]| edit(&base, set, del);
        let ok = Loads("signedBy");
        let mut rows = vec![
            (base.clone(), Accepts, ok, UNVERIFIED),
            (b(json!({}), &["signedIdentity"]), Accepts, ok, UNVERIFIED),
            (b(json!({"keyPath":"/foo/bar"}), &["keyData"]), Accepts, ok, UNVERIFIED),
            (b(json!({"keyPaths":["/1","/2"]}), &["keyData"]), Accepts, ok, UNVERIFIED),
            (b(json!({}), &["type"]), Refuses, Error("needs a string \"type\""), ""),
            (b(json!({"type":1}), &[]), Refuses, Error("\"type\" must be a string"), ""),
            (b(json!({"unexpected":1}), &[]), Refuses, Error("unknown field `unexpected`"), ""),
            (b(json!({}), &["keyType"]), Refuses, Error("needs the field \"keyType\""), ""),
            (b(json!({"keyType":"this is invalid"}), &[]), Refuses, Error("keyType \"this is invalid\""), ""),
            (b(json!({"keyType":""}), &[]), Refuses, Error("keyType \"\""), ""),
            (b(json!({}), &["keyData"]), Refuses, Error("exactly one of keyPath, keyPaths and keyData"), ""),
            (b(json!({"keyPath":""}), &["keyData"]), Refuses, Error("exactly one of"), ""),
            (
                b(json!({"keyPath":"/foo/bar","keyPaths":["/1","/2"]}), &[]),
                Refuses,
                Error("found keyPath and keyPaths and keyData"),
                "",
            ),
            (
                b(json!({"keyPath":"/foo/bar","keyPaths":["/1","/2"]}), &["keyData"]),
                Refuses,
                Error("exactly one of"),
                "",
            ),
            (b(json!({"keyPath":"/foo/bar"}), &[]), Refuses, Error("exactly one of"), ""),
            (b(json!({"keyPaths":["/1","/2"]}), &[]), Refuses, Error("exactly one of"), ""),
            (b(json!({"keyPath":1}), &["keyData"]), Refuses, Error("\"keyPath\" must be a string"), ""),
            (b(json!({"keyPaths":1}), &["keyData"]), Refuses, Error("\"keyPaths\" must be an array"), ""),
            (b(json!({"keyPaths":[1]}), &["keyData"]), Refuses, Error("\"keyPaths\" must hold strings"), ""),
            (b(json!({"keyData":1}), &[]), Refuses, Error("\"keyData\" must be a string"), ""),
            (b(json!({"keyData":"this is invalid base64"}), &[]), Refuses, Error("keyData is not valid base64"), ""),
            (
                b(json!({"signedIdentity":"this is invalid"}), &[]),
                Refuses,
                Error("signedIdentity must be a JSON object"),
                "",
            ),
            (
                b(json!({"signedIdentity":null}), &[]),
                Refuses,
                Error("signedIdentity must be a JSON object, not null"),
                "",
            ),
        ];
        // An empty keyPaths counts as given upstream (a Go slice that is not nil).
        rows.push((b(json!({"keyPaths":[]}), &["keyData"]), Accepts, ok, UNVERIFIED));
        run(rows);
    }

    /// `TestPRSignedBaseLayerUnmarshalJSON`.
    #[test]
    fn signed_base_layer_as_containers_image_reads_it() {
        let base = json!({"type":"signedBaseLayer","baseLayerIdentity":
                          {"type":"exactReference","dockerReference":"registry.access.redhat.com/rhel7/rhel:7.2.3"}});
        let b = |set: Value, del: &[&str]| edit(&base, set, del);
        run(vec![
            (base.clone(), Accepts, Loads("signedBaseLayer"), UNVERIFIED),
            (b(json!({}), &["type"]), Refuses, Error("needs a string \"type\""), ""),
            (b(json!({"type":1}), &[]), Refuses, Error("must be a string"), ""),
            (b(json!({"unexpected":1}), &[]), Refuses, Error("unknown field `unexpected`"), ""),
            (b(json!({}), &["baseLayerIdentity"]), Refuses, Error("needs the field \"baseLayerIdentity\""), ""),
            (b(json!({"baseLayerIdentity":"this is invalid"}), &[]), Refuses, Error("baseLayerIdentity"), ""),
            (b(json!({"baseLayerIdentity":null}), &[]), Refuses, Error("not null"), ""),
        ]);
    }

    /// `TestPRSigstoreSignedUnmarshalJSON` and `TestNewPRSigstoreSigned`.
    #[test]
    fn sigstore_signed_as_containers_image_reads_it() {
        let base = json!({"type":"sigstoreSigned","keyData":"YWJj","signedIdentity":{"type":"matchRepoDigestOrExact"}});
        let b = |set: Value, del: &[&str]| edit(&base, set, del);
        let fulcio = json!({"caPath":"/foo/baz","oidcIssuer":"https://example.com","subjectEmail":"test@example.com"});
        let pki = json!({"caRootsPath":"/foo/bar","caIntermediatesPath":"/foo/baz","subjectHostname":"example.com"});
        let keyed = Loads("sigstoreSigned");
        let mut rows = vec![
            (base.clone(), Accepts, keyed, ""),
            (b(json!({}), &["signedIdentity"]), Accepts, keyed, ""),
            (b(json!({}), &["type"]), Refuses, Error("needs a string \"type\""), ""),
            (b(json!({"type":1}), &[]), Refuses, Error("must be a string"), ""),
            (b(json!({"unexpected":1}), &[]), Refuses, Error("unknown field `unexpected`"), ""),
            (
                b(json!({}), &["keyData"]),
                Refuses,
                Error("needs one of keyPath, keyPaths, keyData, keyDatas, fulcio or pki"),
                "",
            ),
            (b(json!({"keyPath":"/foo/bar"}), &[]), Refuses, Error("only one of"), ""),
            (b(json!({"keyPaths":["/foo/bar","/foo/baz"]}), &[]), Refuses, Error("only one of"), ""),
            (b(json!({"keyDatas":["YWJj","ZGVm"]}), &[]), Refuses, Error("only one of"), ""),
            (b(json!({"fulcio":fulcio}), &[]), Refuses, Error("found keys and fulcio"), ""),
            (b(json!({"pki":pki}), &[]), Refuses, Error("found keys and pki"), ""),
            (b(json!({"keyPath":1}), &["keyData"]), Refuses, Error("\"keyPath\" must be a string"), ""),
            (b(json!({"keyPaths":1}), &["keyData"]), Refuses, Error("\"keyPaths\" must be an array"), ""),
            (b(json!({"keyPaths":{}}), &["keyData"]), Refuses, Error("\"keyPaths\" must be an array"), ""),
            (b(json!({"keyPaths":[]}), &["keyData"]), Refuses, Error("keyPaths contains no entries"), ""),
            (b(json!({"keyData":1}), &[]), Refuses, Error("\"keyData\" must be a string"), ""),
            (b(json!({"keyData":"this is invalid base64"}), &[]), Refuses, Error("keyData is not valid base64"), ""),
            (b(json!({"keyDatas":1}), &["keyData"]), Refuses, Error("\"keyDatas\" must be an array"), ""),
            (b(json!({"keyDatas":{}}), &["keyData"]), Refuses, Error("\"keyDatas\" must be an array"), ""),
            (b(json!({"keyDatas":[]}), &["keyData"]), Refuses, Error("keyDatas contains no entries"), ""),
            (b(json!({"fulcio":1}), &["keyData"]), Refuses, Error("fulcio must be a JSON object"), ""),
            (b(json!({"fulcio":{}}), &["keyData"]), Refuses, Error("caPath and caData"), ""),
            (b(json!({"fulcio":null}), &["keyData"]), Refuses, Error("fulcio must be a JSON object, not null"), ""),
            (b(json!({"pki":1}), &["keyData"]), Refuses, Error("pki must be a JSON object"), ""),
            (b(json!({"pki":{}}), &["keyData"]), Refuses, Error("caRootsPath and caRootsData"), ""),
            (b(json!({"pki":null}), &["keyData"]), Refuses, Error("pki must be a JSON object, not null"), ""),
            (
                b(json!({"rekorPublicKeyPath":"/foo/baz","rekorPublicKeyData":""}), &[]),
                Refuses,
                Error("only one of rekorPublicKeyPath"),
                "",
            ),
            (b(json!({"rekorPublicKeyPath":1}), &[]), Refuses, Error("\"rekorPublicKeyPath\" must be a string"), ""),
            (
                b(json!({"rekorPublicKeyPath":"/foo/baz","rekorPublicKeyPaths":["/baz/a","/baz/b"]}), &[]),
                Refuses,
                Error("only one of rekorPublicKeyPath"),
                "",
            ),
            (b(json!({"rekorPublicKeyPaths":1}), &[]), Refuses, Error("must be an array"), ""),
            (b(json!({"rekorPublicKeyPaths":{}}), &[]), Refuses, Error("must be an array"), ""),
            (b(json!({"rekorPublicKeyPaths":[]}), &[]), Refuses, Error("rekorPublicKeyPaths contains no entries"), ""),
            (b(json!({"rekorPublicKeyData":1}), &[]), Refuses, Error("must be a string"), ""),
            (b(json!({"rekorPublicKeyData":"this is invalid base64"}), &[]), Refuses, Error("not valid base64"), ""),
            (
                b(json!({"rekorPublicKeyData":"YQ==","rekorPublicKeyDatas":["YQ==","Yg=="]}), &[]),
                Refuses,
                Error("only one of"),
                "",
            ),
            (b(json!({"rekorPublicKeyDatas":1}), &[]), Refuses, Error("must be an array"), ""),
            (b(json!({"rekorPublicKeyDatas":{}}), &[]), Refuses, Error("must be an array"), ""),
            (b(json!({"rekorPublicKeyDatas":[]}), &[]), Refuses, Error("rekorPublicKeyDatas contains no entries"), ""),
            (
                b(json!({"signedIdentity":"this is invalid"}), &[]),
                Refuses,
                Error("signedIdentity must be a JSON object"),
                "",
            ),
            (
                b(json!({"signedIdentity":null}), &[]),
                Refuses,
                Error("signedIdentity must be a JSON object, not null"),
                "",
            ),
            // TestNewPRSigstoreSigned's refusals.
            (
                b(json!({"keyPath":"/foo/bar","fulcio":fulcio,"rekorPublicKeyPath":"/r"}), &["keyData"]),
                Refuses,
                Error("only one of"),
                "",
            ),
            (b(json!({"fulcio":fulcio,"rekorPublicKeyPath":"/r"}), &[]), Refuses, Error("found keys and fulcio"), ""),
            (b(json!({"keyPath":"/foo/bar","pki":pki}), &["keyData"]), Refuses, Error("found keys and pki"), ""),
            (
                b(json!({"fulcio":fulcio,"rekorPublicKeyPath":"/r","pki":pki}), &["keyData"]),
                Refuses,
                Error("found fulcio and pki"),
                "",
            ),
            (b(json!({"keyPath":"foobar","keyPaths":["foobar"]}), &["keyData"]), Refuses, Error("only one of"), ""),
            (b(json!({"keyDatas":["Zm9v"]}), &[]), Refuses, Error("only one of"), ""),
            (b(json!({"fulcio":fulcio}), &["keyData"]), Refuses, Error("fulcio needs rekorPublicKeyPath"), ""),
            (
                b(json!({"pki":pki,"rekorPublicKeyPath":"/r"}), &["keyData"]),
                Refuses,
                Error("pki takes no rekorPublicKey"),
                "",
            ),
            // Empty paths count as absent upstream.
            (b(json!({"keyPath":""}), &["keyData"]), Refuses, Error("needs one of"), ""),
            (b(json!({"rekorPublicKeyPath":""}), &[]), Accepts, keyed, ""),
        ];
        // Every key source, alone and with every Rekor key source.
        let rekor_sources = [
            json!({}),
            json!({"rekorPublicKeyPath":"/foo/baz"}),
            json!({"rekorPublicKeyPaths":["/foo/baz","/foo/bar"]}),
            json!({"rekorPublicKeyData":"ZGVm"}),
            json!({"rekorPublicKeyDatas":["ZGVm","YWJj"]}),
        ];
        for keys in [
            json!({"keyPath":"/foo/bar"}),
            json!({"keyPaths":["/foo/bar","/baz/bar"]}),
            json!({"keyData":"YWJj"}),
            json!({"keyDatas":["YWJj","ZGVm"]}),
        ] {
            for rekor in &rekor_sources {
                let mut set = keys.clone();
                set.as_object_mut().unwrap().extend(rekor.as_object().unwrap().clone());
                let req = b(set, &["keyData"]);
                rows.push(if rekor.as_object().unwrap().is_empty() {
                    (req, Accepts, keyed, "")
                } else {
                    (
                        req,
                        Accepts,
                        Loads("sigstoreSigned with keys and rekorPublicKey*"),
                        "hostctl does not check Rekor entries of keyed signatures: every image of the scope is refused",
                    )
                });
            }
        }
        rows.push((b(json!({"pki":pki}), &["keyData"]), Accepts, Loads("sigstoreSigned with pki"), UNVERIFIED));
        for rekor in &rekor_sources[1..] {
            let mut set = json!({"fulcio":fulcio});
            set.as_object_mut().unwrap().extend(rekor.as_object().unwrap().clone());
            rows.push((b(set, &["keyData"]), Accepts, keyed, ""));
        }
        run(rows);
    }

    /// `TestPRSigstoreSignedFulcioUnmarshalJSON`, `TestNewPRSigstoreSignedFulcio`.
    #[test]
    fn fulcio_as_containers_image_reads_it() {
        let fulcio = json!({"caPath":"fixtures/fulcio_v1.crt.pem","oidcIssuer":"https://github.com/login/oauth","subjectEmail":"mitr@redhat.com"});
        let f = |set: Value, del: &[&str]| json!({"type":"sigstoreSigned","fulcio":edit(&fulcio, set, del),"rekorPublicKeyPath":"/foo/rekor"});
        let keyless = Loads("sigstoreSigned");
        run(vec![
            (f(json!({}), &[]), Accepts, keyless, ""),
            (f(json!({"caData":"YWJj"}), &["caPath"]), Accepts, keyless, ""),
            (f(json!({"unexpected":1}), &[]), Refuses, Error("unknown field `unexpected` in fulcio"), ""),
            (f(json!({}), &["caPath"]), Refuses, Error("exactly one of caPath and caData"), ""),
            (f(json!({"caData":""}), &[]), Refuses, Error("only one of caPath and caData"), ""),
            (f(json!({"caPath":1}), &[]), Refuses, Error("\"caPath\" must be a string"), ""),
            (f(json!({"oidcIssuer":1}), &[]), Refuses, Error("\"oidcIssuer\" must be a string"), ""),
            (f(json!({}), &["oidcIssuer"]), Refuses, Error("oidcIssuer is required"), ""),
            (f(json!({"subjectEmail":1}), &[]), Refuses, Error("\"subjectEmail\" must be a string"), ""),
            (f(json!({}), &["subjectEmail"]), Refuses, Error("subjectEmail is required"), ""),
            (f(json!({"caData":1}), &["caPath"]), Refuses, Error("\"caData\" must be a string"), ""),
            (
                f(json!({"caData":"this is invalid base64"}), &["caPath"]),
                Refuses,
                Error("caData is not valid base64"),
                "",
            ),
            (
                f(
                    json!({"buildSignerURI":"https://github.com/o/r/.github/workflows/w.yml@refs/heads/main"}),
                    &["subjectEmail"],
                ),
                Accepts,
                Loads("sigstoreSigned with fulcio buildSignerURI"),
                "hostctl matches certificates by email only: every image of the scope is refused",
            ),
        ]);
    }

    /// hostctl's fields beyond containers-policy.json(5) (docs/trust.md):
    /// containers/image refuses each as an unknown field.
    #[test]
    fn hostctl_identity_and_trusted_root_extensions() {
        const EXT: &str = "hostctl's extension (docs/trust.md); containers/image refuses the unknown field";
        let base = json!({"caPath":"/ca.pem","oidcIssuer":"https://token.actions.githubusercontent.com"});
        let f = |set: Value, del: &[&str]| json!({"type":"sigstoreSigned","fulcio":edit(&base, set, del),"rekorPublicKeyPath":"/rekor.pub"});
        let wf = "https://github.com/o/r/.github/workflows/w.yml@refs/heads/main";
        let keyless = Loads("sigstoreSigned");
        run(vec![
            (f(json!({"subjectURI":wf}), &[]), Refuses, keyless, EXT),
            (f(json!({"subjectRegexp":"https://github\\.com/o/r/.*"}), &[]), Refuses, keyless, EXT),
            (
                f(json!({"subjectEmail":"a@b.c","oidcIssuerRegexp":"https://.*"}), &["oidcIssuer"]),
                Refuses,
                keyless,
                EXT,
            ),
            (f(json!({"subjectEmail":"a@b.c","subjectURI":wf}), &[]), Refuses, Error("only one of subjectEmail"), ""),
            (f(json!({"subjectRegexp":"(unclosed"}), &[]), Refuses, Error("invalid regular expression"), ""),
            (
                f(json!({"subjectURI":wf,"oidcIssuerRegexp":"x"}), &[]),
                Refuses,
                Error("only one of oidcIssuer and oidcIssuerRegexp"),
                "",
            ),
            (f(json!({"subjectURI":1}), &[]), Refuses, Error("\"subjectURI\" must be a string"), ""),
            (
                json!({"type":"sigstoreSigned","fulcio":{"oidcIssuer":"https://i","subjectURI":wf},"trustedRootPath":"/r.json"}),
                Refuses,
                keyless,
                EXT,
            ),
            (
                json!({"type":"sigstoreSigned","keyPath":"/k.pub","trustedRootPath":"/r.json"}),
                Refuses,
                Loads("sigstoreSigned"),
                EXT,
            ),
            (
                json!({"type":"sigstoreSigned","fulcio":{"oidcIssuer":"https://i","subjectURI":wf}}),
                Refuses,
                Error("or hostctl's trustedRootPath"),
                "",
            ),
        ]);
        // The parsed identity: kind, subject and issuer as written; regexes anchored.
        let Requirement::SigstoreSigned(s) = parse(&Node::from_value(&f(json!({"subjectRegexp":"a.c"}), &[]))).unwrap()
        else {
            panic!()
        };
        let Trust::Fulcio { identity, .. } = s.trust else { panic!() };
        assert_eq!(identity.kind, SanKind::Any);
        assert!(
            identity.subject.matches("abc") && !identity.subject.matches("xabc") && !identity.subject.matches("abcd")
        );
        assert!(identity.issuer.matches("https://token.actions.githubusercontent.com"));
    }

    /// `TestPRSigstoreSignedPKIUnmarshalJSON`, `TestNewPRSigstoreSignedPKI`.
    #[test]
    fn pki_as_containers_image_reads_it() {
        let pki = json!({"caRootsPath":"fixtures/pki_root_crts.pem","caIntermediatesPath":"fixtures/pki_intermediate_crts.pem",
                         "subjectHostname":"myhost.example.com","subjectEmail":"qiwan@redhat.com"});
        let data = json!({"caRootsData":"YWJj","caIntermediatesData":"ZGVm",
                          "subjectHostname":"myhost.example.com","subjectEmail":"qiwan@redhat.com"});
        let p = |base: &Value, set: Value, del: &[&str]| json!({"type":"sigstoreSigned","pki":edit(base, set, del)});
        let loads = Loads("sigstoreSigned with pki");
        run(vec![
            (p(&pki, json!({}), &[]), Accepts, loads, UNVERIFIED),
            (p(&pki, json!({}), &["subjectEmail"]), Accepts, loads, UNVERIFIED),
            (p(&pki, json!({}), &["subjectHostname", "caIntermediatesPath"]), Accepts, loads, UNVERIFIED),
            (p(&data, json!({}), &[]), Accepts, loads, UNVERIFIED),
            (p(&pki, json!({"unexpected":1}), &[]), Refuses, Error("unknown field `unexpected` in pki"), ""),
            (p(&pki, json!({}), &["caRootsPath"]), Refuses, Error("exactly one of caRootsPath and caRootsData"), ""),
            (p(&pki, json!({"caRootsData":""}), &[]), Refuses, Error("only one of caRootsPath and caRootsData"), ""),
            (p(&pki, json!({"caRootsPath":1}), &[]), Refuses, Error("\"caRootsPath\" must be a string"), ""),
            (p(&pki, json!({"caIntermediatesData":""}), &[]), Refuses, Error("only one of caIntermediatesPath"), ""),
            (p(&pki, json!({"caIntermediatesPath":1}), &[]), Refuses, Error("must be a string"), ""),
            (p(&pki, json!({"subjectHostname":1}), &[]), Refuses, Error("must be a string"), ""),
            (p(&pki, json!({"subjectEmail":1}), &[]), Refuses, Error("must be a string"), ""),
            (
                p(&pki, json!({}), &["subjectHostname", "subjectEmail"]),
                Refuses,
                Error("subjectEmail or subjectHostname"),
                "",
            ),
            (p(&data, json!({"caRootsData":1}), &[]), Refuses, Error("must be a string"), ""),
            (
                p(&data, json!({"caRootsData":"this is invalid base64"}), &[]),
                Refuses,
                Error("pki.caRootsData is not valid base64"),
                "",
            ),
            (p(&data, json!({"caIntermediatesData":1}), &[]), Refuses, Error("must be a string"), ""),
            (
                p(&data, json!({"caIntermediatesData":"this is invalid base64"}), &[]),
                Refuses,
                Error("not valid base64"),
                "",
            ),
        ]);
    }
}
