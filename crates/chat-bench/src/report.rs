//! Turning the raw figures into the targets of the issue, with ratios to the limits, and
//! printing them as a Markdown table.

use serde_json::{Value, json};

use crate::stats::round;

fn num(value: &Value) -> Option<f64> {
    value.as_f64()
}

fn target(
    name: String,
    measured: Option<f64>,
    unit: &str,
    limit: f64,
    lower_is_better: bool,
    detail: String,
) -> Value {
    let met = measured.map(|m| {
        if lower_is_better {
            m <= limit
        } else {
            m >= limit
        }
    });
    json!({
        "target": name,
        "measured": measured.map(round),
        "unit": unit,
        "limit": limit,
        "comparison": if lower_is_better { "<=" } else { ">=" },
        "met": met,
        "detail": detail,
    })
}

/// Adds a `targets` list to the results: every target of the issue, per store.
pub(crate) fn with_targets(mut results: Value) -> Value {
    let raw_mysql = num(&results["limits"]["raw_insert"]["throughput_per_s"]);
    let raw_sqlite = num(&results["limits"]["raw_insert_sqlite"]["throughput_per_s"]);
    let bare_1000 = num(&results["limits"]["bare_broadcast"]["1000"]["last_recipient"]["p99_ms"]);
    let mut targets = Vec::new();
    let stores = results["stores"].as_object().cloned().unwrap_or_default();
    for (store, s) in &stores {
        let send = num(&s["send"]["throughput_per_s"]);
        // Each durable store against its own engine's ceiling (memory against MySQL's, as
        // before: it has none of its own).
        let (raw, engine) = if store == "sqlite" {
            (raw_sqlite, "SQLite ")
        } else {
            (raw_mysql, "")
        };
        targets.push(target(
            format!("{store}: durable send throughput / raw {engine}INSERT ceiling"),
            send.zip(raw).map(|(a, b)| a / b),
            "ratio",
            if store == "mysql" { 0.5 } else { 0.3 },
            false,
            format!(
                "{} msg/s vs {} inserts/s; exactly once: {}",
                fmt(send),
                fmt(raw),
                s["send"]["verified"]["exactly_once"]
            ),
        ));
        for (scenario, what) in [
            ("hot", "hot conversations (10 groups of 5)"),
            ("biggroup", "big group (one group of 1000)"),
        ] {
            let load = &s[scenario];
            if load.is_null() {
                continue;
            }
            let rate = num(&load["throughput_per_s"]);
            targets.push(target(
                format!("{store}: {what} throughput / spread-out durable send"),
                rate.zip(send).map(|(a, b)| a / b.max(0.001)),
                "ratio",
                0.8,
                false,
                format!(
                    "{} msg/s vs {} msg/s; {} × the raw {engine}INSERT ceiling; p50 {} ms, \
                     p99 {} ms, max {} ms; exactly once: {}",
                    fmt(rate),
                    fmt(send),
                    fmt(rate.zip(raw).map(|(a, b)| a / b.max(0.001))),
                    fmt(num(&load["latency"]["p50_ms"])),
                    fmt(num(&load["latency"]["p99_ms"])),
                    fmt(num(&load["latency"]["max_ms"])),
                    load["verified"]["exactly_once"]
                ),
            ));
            targets.push(target(
                format!("{store}: {what} send p99 at half load"),
                num(&load["half_load"]["latency"]["p99_ms"])
                    .filter(|_| load["half_load"]["latency"]["count"].as_u64() > Some(0)),
                "ms",
                25.0,
                true,
                format!(
                    "at {} msg/s, p50 {} ms, max {} ms",
                    fmt(num(&load["half_load"]["rate_per_s"])),
                    fmt(num(&load["half_load"]["latency"]["p50_ms"])),
                    fmt(num(&load["half_load"]["latency"]["max_ms"]))
                ),
            ));
        }
        targets.push(target(
            format!("{store}: send p99 at half load"),
            num(&s["send"]["half_load"]["latency"]["p99_ms"]),
            "ms",
            10.0,
            true,
            format!(
                "at {} msg/s",
                fmt(num(&s["send"]["half_load"]["rate_per_s"]))
            ),
        ));
        let fan = num(&s["fanout"]["1000"]["last_recipient"]["p99_ms"]);
        targets.push(target(
            format!("{store}: fan-out to 1000, last-recipient p99 / bare broadcast p99"),
            fan.zip(bare_1000).map(|(a, b)| a / b.max(0.001)),
            "ratio",
            1.5,
            true,
            format!(
                "{} ms vs {} ms; missing {}",
                fmt(fan),
                fmt(bare_1000),
                s["fanout"]["1000"]["missing"]
            ),
        ));
        targets.push(target(
            format!("{store}: fan-out to 1000, missing deliveries"),
            num(&s["fanout"]["1000"]["missing"]),
            "count",
            0.0,
            true,
            String::new(),
        ));
        targets.push(target(
            format!("{store}: history deep p99 / newest p99"),
            num(&s["history"]["deep_over_newest_p99"]),
            "ratio",
            1.3,
            true,
            format!(
                "deep {} ms, newest {} ms over {} messages",
                fmt(num(&s["history"]["deep"]["p99_ms"])),
                fmt(num(&s["history"]["newest"]["p99_ms"])),
                s["history"]["messages"]
            ),
        ));
        for (which, key) in [("deep", "deep"), ("newest", "newest")] {
            targets.push(target(
                format!("{store}: history {which} page p99"),
                num(&s["history"][key]["p99_ms"]),
                "ms",
                5.0,
                true,
                String::new(),
            ));
        }
        targets.push(target(
            format!("{store}: inbox page p99 (1,000 conversations)"),
            num(&s["inbox"]["inbox_page"]["p99_ms"]),
            "ms",
            5.0,
            true,
            String::new(),
        ));
        targets.push(target(
            format!("{store}: unread badge p99 (1,000 conversations)"),
            num(&s["inbox"]["unread_badge"]["p99_ms"]),
            "ms",
            3.0,
            true,
            String::new(),
        ));
        let sync = &s["sync"];
        if !sync.is_null() {
            targets.push(target(
                format!(
                    "{store}: sync p99, {} missed messages in 1,000 conversations",
                    sync["missed_messages"]
                ),
                num(&sync["sync"]["p99_ms"]),
                "ms",
                10.0,
                true,
                format!(
                    "p50 {} ms, {} events listed; log growth per message: {} bytes, {} rows",
                    sync["sync"]["p50_ms"],
                    sync["events_listed"],
                    sync["log_growth"]["bytes_per_message"],
                    sync["log_growth"]["rows_per_message"]
                ),
            ));
        }
        targets.push(target(
            format!("{store}: server memory per idle WebSocket"),
            num(&s["connections"]["kib_per_connection"]),
            "KiB",
            6.0,
            true,
            format!("{} sockets", s["connections"]["connections"]),
        ));
    }
    results["targets"] = Value::Array(targets);
    results
}

/// Median, lowest and highest of `values`, and the spread (highest − lowest) as a percent
/// of the median.
fn spread(values: &[f64]) -> Value {
    let mut sorted: Vec<f64> = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let Some((&low, &high)) = sorted.first().zip(sorted.last()) else {
        return Value::Null;
    };
    let middle = sorted.len() / 2;
    let median = if sorted.len() % 2 == 1 {
        sorted[middle]
    } else {
        (sorted[middle - 1] + sorted[middle]) / 2.0
    };
    json!({
        "median": round(median),
        "min": round(low),
        "max": round(high),
        "spread_percent": (median > 0.0).then(|| round((high - low) / median * 100.0)),
    })
}

/// Durable send on MySQL without (`plain`) and with (`sealed`) the key ring, over the same
/// rounds: each side's throughput and p50 (median, spread), the throughput lost to
/// encryption in percent of the medians, and whether that is beyond the rounds' own
/// spread; beside it the seal/open cost per message (`crypto`) as a fraction of the
/// database's time per message (`raw_insert`: one INSERT's p50 latency, and the time per
/// row at the INSERT ceiling).
pub(crate) fn encryption_cost(
    plain: &[Value],
    sealed: &[Value],
    crypto: &Value,
    raw_insert: Option<&Value>,
) -> Value {
    let field = |runs: &[Value], get: fn(&Value) -> Option<f64>| {
        runs.iter().filter_map(get).collect::<Vec<f64>>()
    };
    let throughput = |v: &Value| num(&v["throughput_per_s"]);
    let p50 = |v: &Value| num(&v["latency"]["p50_ms"]);
    let plain_rate = spread(&field(plain, throughput));
    let sealed_rate = spread(&field(sealed, throughput));
    let cost = num(&plain_rate["median"])
        .zip(num(&sealed_rate["median"]))
        .filter(|(p, _)| *p > 0.0)
        .map(|(p, e)| (p - e) / p * 100.0);
    let noise = num(&plain_rate["spread_percent"])
        .into_iter()
        .chain(num(&sealed_rate["spread_percent"]))
        .fold(None, |max: Option<f64>, s| {
            Some(max.map_or(s, |m| m.max(s)))
        });
    let longest_ns = num(&crypto["longest"]["seal_and_open_ns"]);
    let insert_p50_ns = raw_insert
        .and_then(|r| num(&r["latency"]["p50_ms"]))
        .map(|ms| ms * 1e6);
    let insert_row_ns = raw_insert
        .and_then(|r| num(&r["throughput_per_s"]))
        .filter(|rate| *rate > 0.0)
        .map(|rate| 1e9 / rate);
    let ratio = |db: Option<f64>| {
        longest_ns
            .zip(db)
            .filter(|(_, d)| *d > 0.0)
            .map(|(c, d)| round(c / d * 100.0))
    };
    serde_json::json!({
        "rounds": plain.len().min(sealed.len()),
        "plain": {
            "throughput_per_s": plain_rate,
            "p50_ms": spread(&field(plain, p50)),
            "runs": plain,
        },
        "encrypted": {
            "throughput_per_s": sealed_rate,
            "p50_ms": spread(&field(sealed, p50)),
            "runs": sealed,
        },
        "throughput_cost_percent": cost.map(round),
        "within_noise": cost.zip(noise).map(|(c, n)| c.abs() <= n),
        "seal_open": crypto,
        "database_ns_per_message": {
            "raw_insert_p50": insert_p50_ns.map(round),
            "raw_insert_ceiling": insert_row_ns.map(round),
        },
        "longest_seal_open_percent_of_insert_p50": ratio(insert_p50_ns),
        "longest_seal_open_percent_of_insert_ceiling": ratio(insert_row_ns),
    })
}

fn fmt(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{}", round(v)))
}

/// The targets and the limits as Markdown.
pub(crate) fn markdown(results: &Value) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "## {} run\n\nMachine: {} ({} cores), {}.\n\n",
        results["mode"].as_str().unwrap_or("?"),
        results["machine"]["cpu"].as_str().unwrap_or("?"),
        results["machine"]["cores"],
        results["machine"]["memory"]
            .as_str()
            .unwrap_or("?")
            .split_whitespace()
            .skip(1)
            .collect::<Vec<_>>()
            .join(" ")
    ));
    out.push_str("### Limits measured in this run\n\n| limit | figure |\n|---|---|\n");
    let raw = &results["limits"]["raw_insert"];
    out.push_str(&format!(
        "| raw single-row INSERT, {} in flight (innodb_flush_log_at_trx_commit={}) | {} inserts/s, p99 {} ms |\n",
        raw["concurrency"], raw["innodb_flush_log_at_trx_commit"], raw["throughput_per_s"], raw["latency"]["p99_ms"]
    ));
    let raw = &results["limits"]["raw_insert_sqlite"];
    if !raw.is_null() {
        out.push_str(&format!(
            "| raw single-row INSERT into SQLite, {} in flight ({}) | {} inserts/s, p99 {} ms |\n",
            raw["concurrency"],
            raw["settings"].as_str().unwrap_or(""),
            raw["throughput_per_s"],
            raw["latency"]["p99_ms"]
        ));
    }
    let floor = &results["limits"]["send_floor"];
    if let Some(variants) = floor["variants"].as_array() {
        let each: Vec<String> = variants
            .iter()
            .map(|v| {
                let shape = if v["set_based"] == true {
                    "set-based, messages per transaction"
                } else {
                    "triggers, rows per INSERT"
                };
                format!(
                    "{shape} {}: {}/s",
                    v["rows_per_statement"], v["throughput_per_s"]
                )
            })
            .collect();
        out.push_str(&format!(
            "| the schema's floor for a send on MySQL, {} in flight: the message row, its conversation, the sender's membership and its log entry, through the schema's triggers or set-based (no idempotency or membership read, marker-move record, receipts, numbering or HTTP; best of the shapes) | {} messages/s, {:.3} × the raw INSERT ceiling ({}) |\n",
            floor["concurrency"],
            floor["throughput_per_s"],
            num(&floor["throughput_per_s"]).unwrap_or(0.0)
                / num(&results["limits"]["raw_insert"]["throughput_per_s"])
                    .unwrap_or(0.0)
                    .max(1.0),
            each.join("; ")
        ));
        let bare = &floor["set_based_without_log"];
        if !bare.is_null() {
            out.push_str(&format!(
                "| the same floor without the change log's entry (set-based, {} per transaction) | {} messages/s |\n",
                bare["rows_per_statement"], bare["throughput_per_s"]
            ));
        }
    }
    if let Some(bare) = results["limits"]["bare_broadcast"].as_object() {
        for (members, b) in bare {
            out.push_str(&format!(
                "| bare tokio WebSocket broadcast to {members} | last-recipient p50 {} ms, p99 {} ms, missing {} |\n",
                b["last_recipient"]["p50_ms"], b["last_recipient"]["p99_ms"], b["missing"]
            ));
        }
    }
    out.push_str(
        "\n### Targets\n\n| target | measured | limit | met | detail |\n|---|---|---|---|---|\n",
    );
    // A target without a figure (its scenario did not run, `--only`) is left to the JSON.
    for t in results["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| !t["measured"].is_null())
    {
        let met = match t["met"].as_bool() {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "n/a",
        };
        out.push_str(&format!(
            "| {} | {} {} | {} {} | {} | {} |\n",
            t["target"].as_str().unwrap_or(""),
            t["measured"],
            t["unit"].as_str().unwrap_or(""),
            t["comparison"].as_str().unwrap_or(""),
            t["limit"],
            met,
            t["detail"].as_str().unwrap_or("")
        ));
    }
    out.push_str("\n### Scenarios\n\n| store | scenario | figures |\n|---|---|---|\n");
    for (store, s) in results["stores"].as_object().into_iter().flatten() {
        let send = &s["send"];
        if !send.is_null() {
            out.push_str(&format!(
            "| {store} | durable send, {} in flight | {} msg/s, p50 {} ms, p99 {} ms, max {} ms, errors {}, exactly once: {} |\n",
            send["concurrency"], send["throughput_per_s"], send["latency"]["p50_ms"], send["latency"]["p99_ms"],
            send["latency"]["max_ms"], send["errors"], send["verified"]["exactly_once"]
        ));
            out.push_str(&format!(
                "| {store} | send at half load | {} msg/s, p50 {} ms, p99 {} ms |\n",
                send["half_load"]["rate_per_s"],
                send["half_load"]["latency"]["p50_ms"],
                send["half_load"]["latency"]["p99_ms"]
            ));
        }
        for (scenario, what) in [
            ("hot", "hot conversations, 10 groups of 5"),
            ("biggroup", "big group of 1000"),
        ] {
            let load = &s[scenario];
            if load.is_null() {
                continue;
            }
            out.push_str(&format!(
                "| {store} | {what}, {} in flight | {} msg/s, p50 {} ms, p99 {} ms, max {} ms, errors {}, exactly once: {} |\n",
                load["concurrency"], load["throughput_per_s"], load["latency"]["p50_ms"],
                load["latency"]["p99_ms"], load["latency"]["max_ms"], load["errors"],
                load["verified"]["exactly_once"]
            ));
            out.push_str(&format!(
                "| {store} | {what}, at half load | {} msg/s, p50 {} ms, p99 {} ms, max {} ms |\n",
                load["half_load"]["rate_per_s"],
                load["half_load"]["latency"]["p50_ms"],
                load["half_load"]["latency"]["p99_ms"],
                load["half_load"]["latency"]["max_ms"]
            ));
        }
        for (members, f) in s["fanout"].as_object().into_iter().flatten() {
            out.push_str(&format!(
                "| {store} | fan-out to {members} at {}/s | last recipient p50 {} ms, p99 {} ms; {} deliveries/s; missing {} |\n",
                f["rate_per_s"], f["last_recipient"]["p50_ms"], f["last_recipient"]["p99_ms"], f["deliveries_per_s"], f["missing"]
            ));
        }
        let h = &s["history"];
        if !h.is_null() {
            out.push_str(&format!(
                "| {store} | history, {} messages | newest p99 {} ms, deep p99 {} ms |\n",
                h["messages"], h["newest"]["p99_ms"], h["deep"]["p99_ms"]
            ));
        }
        let i = &s["inbox"];
        if !i.is_null() {
            out.push_str(&format!(
                "| {store} | inbox, {} conversations | page p99 {} ms, badge p99 {} ms |\n",
                i["conversations"], i["inbox_page"]["p99_ms"], i["unread_badge"]["p99_ms"]
            ));
        }
        let y = &s["sync"];
        if !y.is_null() {
            let g = &y["log_growth"];
            let growth = if g.is_null() {
                "change log size not measured on this store".to_owned()
            } else {
                format!(
                    "change log {} bytes, {} rows per message (over {} sends)",
                    g["bytes_per_message"], g["rows_per_message"], g["messages"]
                )
            };
            out.push_str(&format!(
                "| {store} | sync after {} missed messages, {} conversations | p50 {} ms, p99 {} ms, {} events; {growth} |\n",
                y["missed_messages"],
                y["conversations"],
                y["sync"]["p50_ms"],
                y["sync"]["p99_ms"],
                y["events_listed"],
            ));
        }
        let c = &s["connections"];
        if !c.is_null() {
            out.push_str(&format!(
                "| {store} | {} idle WebSockets | {} KiB each (RSS {} → {} KiB) |\n",
                c["connections"], c["kib_per_connection"], c["rss_before_kib"], c["rss_after_kib"]
            ));
        }
    }
    let e = &results["encryption"];
    if !e.is_null() {
        let side = |v: &Value| {
            let t = &v["throughput_per_s"];
            format!(
                "{} msg/s (min {}, max {}, spread {} %) | {} ms |",
                t["median"], t["min"], t["max"], t["spread_percent"], v["p50_ms"]["median"]
            )
        };
        let cost = |size: &str| {
            let c = &e["seal_open"][size];
            format!(
                "| {} bytes ({} stored) | {} | {} | {} |\n",
                c["plaintext_bytes"],
                c["stored_chars"],
                c["seal_ns"],
                c["open_ns"],
                c["seal_and_open_ns"]
            )
        };
        out.push_str(&format!(
            "\n### Encryption at rest (MySQL, durable send, same run)\n\n\
             {} alternating rounds of each (off, on; then on, off; …), a fresh database each.\n\n\
             | key ring | throughput, median of the rounds | p50, median |\n|---|---|---|\n\
             | off | {}\n| on | {}\n\n\
             Throughput lost to encryption (medians): {} % (within the rounds' spread: {}).\n\n\
             Seal and open on their own (one core of this process):\n\n\
             | message | seal ns | open ns | seal + open ns |\n|---|---|---|---|\n{}{}\n\
             Database time per message: one INSERT's p50 {} ns; at the INSERT ceiling {} ns per \
             row. Sealing and opening the longest message costs {} % of the first and {} % of \
             the second.\n",
            e["rounds"],
            side(&e["plain"]),
            side(&e["encrypted"]),
            e["throughput_cost_percent"],
            e["within_noise"],
            cost("short"),
            cost("longest"),
            e["database_ns_per_message"]["raw_insert_p50"],
            e["database_ns_per_message"]["raw_insert_ceiling"],
            e["longest_seal_open_percent_of_insert_p50"],
            e["longest_seal_open_percent_of_insert_ceiling"],
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::{encryption_cost, markdown, spread, with_targets};

    #[test]
    fn spread_gives_the_median_and_the_range_in_percent_of_it() {
        assert_eq!(
            spread(&[1200.0, 1000.0, 1100.0]),
            json!({"median": 1100.0, "min": 1000.0, "max": 1200.0, "spread_percent": 18.182})
        );
        assert_eq!(spread(&[1.0, 3.0])["median"], 2.0);
        assert!(spread(&[]).is_null());
    }

    #[test]
    fn the_encryption_cost_compares_medians_and_says_when_it_is_noise() {
        let send = |rate: f64| json!({"throughput_per_s": rate, "latency": {"p50_ms": 20.0}});
        let crypto = json!({"longest": {"seal_and_open_ns": 20_000.0}});
        let raw = json!({"throughput_per_s": 10_000.0, "latency": {"p50_ms": 2.0}});
        let e = encryption_cost(
            &[send(1000.0), send(1100.0), send(900.0)],
            &[send(950.0), send(1000.0), send(1050.0)],
            &crypto,
            Some(&raw),
        );
        assert_eq!(e["rounds"], 3);
        assert_eq!(e["throughput_cost_percent"], 0.0);
        assert_eq!(e["within_noise"], true);
        // 20 µs against a 2 ms INSERT, and against 100 µs per row at the ceiling.
        assert_eq!(e["longest_seal_open_percent_of_insert_p50"], 1.0);
        assert_eq!(e["longest_seal_open_percent_of_insert_ceiling"], 20.0);

        let slower = encryption_cost(&vec![send(1000.0); 3], &vec![send(500.0); 3], &crypto, None);
        assert_eq!(slower["throughput_cost_percent"], 50.0);
        assert_eq!(slower["within_noise"], false);
        assert!(slower["longest_seal_open_percent_of_insert_p50"].is_null());
    }

    #[test]
    fn the_sync_scenario_is_a_target_and_a_row_per_store_that_ran_it() {
        let sync = |growth: serde_json::Value| {
            json!({"missed_messages": 10, "conversations": 1000, "events_listed": 20,
                   "sync": {"count": 200, "p50_ms": 2.0, "p99_ms": 12.5, "max_ms": 13.0},
                   "log_growth": growth})
        };
        let results = with_targets(json!({
            "limits": {},
            "stores": {
                "memory": {"sync": sync(serde_json::Value::Null)},
                "mysql": {"sync": sync(json!({"messages": 2000, "bytes_per_message": 180.5,
                                             "rows_per_message": 2.0}))},
                "sqlite": {},
            },
        }));
        let targets = results["targets"].as_array().unwrap();
        let sync_targets: Vec<_> = targets
            .iter()
            .filter(|t| t["target"].as_str().unwrap().contains("sync p99"))
            .collect();
        assert_eq!(sync_targets.len(), 2, "only the stores that ran it");
        assert!(
            sync_targets
                .iter()
                .all(|t| t["met"] == false && t["limit"] == 10.0)
        );
        let text = markdown(&results);
        assert!(text.contains("p99 12.5 ms, 20 events; change log 180.5 bytes, 2.0 rows per message (over 2000 sends)"), "{text}");
        assert!(
            text.contains("change log size not measured on this store"),
            "{text}"
        );
    }
}
