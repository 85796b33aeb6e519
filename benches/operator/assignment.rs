//! Assignment API under load: `wrk` on loopback against the native
//! endpoint and the OFREP endpoint.

use super::{BenchResult, DIALS};

/// Runs wrk against both APIs for 10 s each and prints rate, p50 and p99.
pub async fn under_load(base: &str, namespace: &str) -> BenchResult<()> {
    println!();
    println!("Assignment API: wrk -t2 -c64 -d10s on loopback, {DIALS} dials, random units");
    for (label, script) in [("native GET", "native.lua"), ("OFREP POST", "ofrep.lua")] {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/wrk/").to_owned() + script;
        let output = tokio::process::Command::new("wrk")
            .args(["-t2", "-c64", "-d10s", "--latency", "-s", &script, base])
            .env("BENCH_NAMESPACE", namespace)
            .env("BENCH_DIALS", DIALS.to_string())
            .output()
            .await?;
        let text = String::from_utf8_lossy(&output.stdout);
        let rate = text
            .lines()
            .find_map(|l| l.strip_prefix("Requests/sec:"))
            .map(str::trim)
            .unwrap_or("?");
        let percentile = |p: &str| {
            text.lines()
                .find(|l| l.trim_start().starts_with(p))
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or("?")
                .to_owned()
        };
        let errors = text
            .lines()
            .find(|l| l.contains("Non-2xx"))
            .unwrap_or("no non-2xx responses")
            .trim();
        println!(
            "  {label:<11} {rate:>10} req/s   p50 {:>8}   p99 {:>8}   ({errors})",
            percentile("50%"),
            percentile("99%")
        );
    }
    Ok(())
}
