//! `hostctl fleet release IMAGE[@DIGEST] --waves SPEC [--start TIME]
//! [--halt-after N|P%]`: pushes the rollout metadata of an image (an OCI
//! artifact whose subject is the image's manifest) next to it, for the
//! agents to find. Sign the artifact like an image (`cosign sign`).

use anyhow::{bail, Context, Result};
use clap::Args;
use time::OffsetDateTime;

use super::output::{outln, print_json};
use super::GlobalArgs;
use crate::fleet::release::{self, HaltAfter, ReferrersMode, RolloutMetadata, Subject};
use crate::fleet::waves::{format_time, Schedule, Waves};
use crate::imgref::ImageRef;
use crate::oci::registry::client::Client;

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// The image released: a registry reference, by tag or digest (the digest a tag points to now is released).
    #[arg(value_name = "IMAGE[@DIGEST]")]
    pub image: String,
    /// The waves: AFTER=PERCENT% by time since the start, the last at 100%, e.g. 1h=1%,4h=5%,1d=15%,3d=100%.
    #[arg(long, value_name = "SPEC")]
    pub waves: Waves,
    /// When the first wave starts: RFC 3339 with any offset, or `now`.
    #[arg(long, value_name = "TIME", default_value = "now")]
    pub start: String,
    /// Halt the release after this many unhealthy hosts, or this share of those that reported [default: 1].
    #[arg(long, value_name = "N|P%")]
    pub halt_after: Option<HaltAfter>,
    /// Print the result as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `--start`: `now`, or an RFC 3339 time.
pub fn parse_start(s: &str, now: OffsetDateTime) -> Result<OffsetDateTime> {
    if s == "now" {
        return Ok(now);
    }
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .with_context(|| format!("--start {s:?} is not an RFC 3339 time (2026-12-07T22:00:00+01:00) nor `now`"))
}

pub async fn run(g: &GlobalArgs, a: ReleaseArgs) -> Result<()> {
    let imgref: ImageRef = a.image.parse().with_context(|| format!("image {:?}", a.image))?;
    let ImageRef::Registry(r) = &imgref else {
        bail!("{imgref}: rollout metadata lives in a registry; give a registry image")
    };
    let start = parse_start(&a.start, OffsetDateTime::now_utc())?;
    let opts = g.registry_options();
    let source = crate::oci::open_source(&imgref, &opts)?;
    let reference = match (&r.digest, &r.tag) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.clone(),
        (None, None) => "latest".into(),
    };
    let raw = source
        .fetch_manifest(&reference)
        .await
        .with_context(|| format!("fetching {imgref}"))?
        .with_context(|| format!("{imgref} does not exist"))?;
    let subject = Subject::of(&raw);
    let meta = RolloutMetadata {
        schema_version: 1,
        image_digest: subject.digest.to_string(),
        schedule: Schedule { start, waves: a.waves },
        halt_after: a.halt_after.unwrap_or_default(),
    };
    let client = Client::new(&r.registry, &r.repository, &opts)?;
    let pushed = release::push(&client, &subject, &meta).await?;
    if a.json {
        return print_json(&pushed);
    }
    outln!("Released {imgref} ({}):", subject.digest)?;
    outln!(
        "  starts {}, waves {}, halts after {}",
        format_time(start),
        meta.schedule.waves,
        meta.halt_after.describe()
    )?;
    let how = match pushed.referrers {
        ReferrersMode::Api => "the registry's referrers API".to_string(),
        ReferrersMode::TagSchema => {
            format!("the referrers tag {}", crate::trust::cosign::referrers_tag(&subject.digest))
        }
    };
    outln!("  metadata {} (found through {how})", pushed.artifact)?;
    outln!("Sign it as you sign images, e.g. `cosign sign --key cosign.key {}`.", pushed.artifact)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_times_in_any_zone_or_now() {
        let now = time::macros::datetime!(2026-12-07 10:00 UTC);
        assert_eq!(parse_start("now", now).unwrap(), now);
        assert_eq!(parse_start("2026-12-07T11:00:00+01:00", now).unwrap(), now);
        assert_eq!(parse_start("2026-12-07T10:00:00Z", now).unwrap(), now);
        let err = format!("{:#}", parse_start("tomorrow", now).unwrap_err());
        assert!(err.contains("not an RFC 3339 time"), "{err}");
    }
}
