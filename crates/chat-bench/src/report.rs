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

/// Durable send on MySQL with the key ring beside without it: throughput, p99 and the
/// throughput lost to encryption, in percent.
pub(crate) fn encryption_cost(plain: &Value, sealed: &Value) -> Value {
    let plain_rate = num(&plain["throughput_per_s"]);
    let sealed_rate = num(&sealed["throughput_per_s"]);
    serde_json::json!({
        "plain": plain,
        "encrypted": sealed,
        "throughput_cost_percent": plain_rate
            .zip(sealed_rate)
            .filter(|(p, _)| *p > 0.0)
            .map(|(p, e)| crate::stats::round((p - e) / p * 100.0)),
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
        out.push_str(&format!(
            "\n### Encryption at rest (MySQL, durable send, same run)\n\n\
             | key ring | figures |\n|---|---|\n\
             | off | {} msg/s, p50 {} ms, p99 {} ms |\n\
             | on | {} msg/s, p50 {} ms, p99 {} ms |\n\n\
             Throughput lost to encryption: {} %.\n",
            e["plain"]["throughput_per_s"],
            e["plain"]["latency"]["p50_ms"],
            e["plain"]["latency"]["p99_ms"],
            e["encrypted"]["throughput_per_s"],
            e["encrypted"]["latency"]["p50_ms"],
            e["encrypted"]["latency"]["p99_ms"],
            e["throughput_cost_percent"],
        ));
    }
    out
}
