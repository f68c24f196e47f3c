//! The decode floor for the pull benchmark: how fast one core can only
//! decompress a layer blob with the decoders hostctl uses (its own gzip
//! framing around flate2's raw inflate with the zlib-rs backend, no CRC-32;
//! the zstd crate for zstd), writing to nowhere. `gzip-crc` decodes with
//! flate2's `MultiGzDecoder` instead (CRC-32 checked), for comparison.
//!
//! `cargo run --release --example decode-floor -- BLOB gzip|gzip-crc|zstd [--sha256]`
//! prints one JSON line: compressed and decompressed bytes, seconds, MB/s.
//! With `--sha256` it also hashes the decompressed stream on the same thread
//! (the cost of checking a diff_id without a second hashing thread).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use sha2::{Digest, Sha256};

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (path, format) = match args.as_slice() {
        [p, f, ..] => (p, f.as_str()),
        _ => bail!("usage: decode-floor BLOB gzip|gzip-crc|zstd [--sha256]"),
    };
    let hash = args.iter().any(|a| a == "--sha256");
    let file = File::open(path).with_context(|| format!("opening {path}"))?;
    let compressed = file.metadata()?.len();
    let input = BufReader::with_capacity(256 * 1024, file);
    let started = Instant::now();
    let mut decoder: Box<dyn Read> = match format {
        "gzip" => Box::new(hostctl::store::gzip::GzipDecoder::new(input)),
        "gzip-crc" => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        "zstd" => Box::new(zstd::stream::read::Decoder::with_buffer(input).context("starting zstd")?),
        other => bail!("unknown format {other:?}: gzip, gzip-crc or zstd"),
    };
    let mut buf = vec![0u8; 256 * 1024];
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    loop {
        let n = match decoder.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("decoding"),
        };
        if hash {
            hasher.update(&buf[..n]);
        }
        total += n as u64;
    }
    let secs = started.elapsed().as_secs_f64();
    let digest = if hash { format!("sha256:{}", hex::encode(hasher.finalize())) } else { String::new() };
    println!(
        "{}",
        serde_json::json!({
            "format": format, "compressed_bytes": compressed, "decompressed_bytes": total,
            "seconds": secs, "mb_per_s": total as f64 / secs / 1e6, "sha256": digest,
        })
    );
    Ok(())
}
