//! The cost of encryption at rest on its own: sealing and opening one message's text with
//! the benchmark's key ring, in this process, per message size. Set beside the database
//! time of a message, it says how small the cost is, which the throughput of the
//! end-to-end runs cannot resolve on a noisy database.

use std::hint::black_box;
use std::time::Instant;

use anyhow::Context as _;
use chat_crypto::{Field, KeyRing, RowIds};
use serde_json::{Value, json};

use crate::server::BENCH_KEYS;
use crate::stats::round;

/// Nanoseconds per seal and per open of `text`, over `iterations` of each (after a short
/// warm-up), for fresh row ids each time as the service seals them.
fn measure(ring: &KeyRing, text: &str, iterations: u32) -> anyhow::Result<Value> {
    let ids = |_: u32| RowIds {
        message_id: uuid::Uuid::now_v7(),
        conversation_id: uuid::Uuid::now_v7(),
    };
    for i in 0..iterations.min(100) {
        black_box(ring.seal(Field::Content, ids(i), text)?);
    }
    // Row ids made before the clock starts: only the seal is timed.
    let rows: Vec<RowIds> = (0..iterations).map(ids).collect();
    let mut sealed = Vec::with_capacity(rows.len());
    let began = Instant::now();
    for row in &rows {
        sealed.push((*row, black_box(ring.seal(Field::Content, *row, text)?)));
    }
    let seal_ns = began.elapsed().as_nanos() as f64 / f64::from(iterations);
    let began = Instant::now();
    for (row, value) in &sealed {
        let opened = ring.open(value.key_id.as_str(), Field::Content, *row, &value.stored)?;
        black_box(opened);
    }
    let open_ns = began.elapsed().as_nanos() as f64 / f64::from(iterations);
    Ok(json!({
        "plaintext_bytes": text.len(),
        "stored_chars": sealed.first().map_or(0, |(_, v)| v.stored.len()),
        "iterations": iterations,
        "seal_ns": round(seal_ns),
        "open_ns": round(open_ns),
        "seal_and_open_ns": round(seal_ns + open_ns),
    }))
}

/// Seal and open costs for the durable send's text (`durable 123456`) and for the longest
/// message (4,000 four-byte characters, 16,000 bytes).
pub(crate) fn seal_open_cost(iterations: u32) -> anyhow::Result<Value> {
    let ring = KeyRing::parse(BENCH_KEYS, None).context("the benchmark key ring")?;
    let longest = "😀".repeat(4000);
    Ok(json!({
        "short": measure(&ring, "durable 123456", iterations)?,
        "longest": measure(&ring, &longest, iterations)?,
    }))
}
