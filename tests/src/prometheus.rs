//! A real Prometheus (Debian's `prometheus`) on 127.0.0.1 for end-to-end tests: a generated
//! configuration scraping the given targets every second, storage in a temporary folder, and
//! instant queries through its HTTP API. Every wait is bounded; the process dies with the value.

use anyhow::{Context, Result, bail};
use baton::server::{CheckUrl, check};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// One sample of an instant query: the series' labels and its value.
#[derive(Clone, Debug)]
pub struct Sample {
    pub labels: serde_json::Map<String, serde_json::Value>,
    pub value: f64,
}

pub struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: tempfile::TempDir,
    log: PathBuf,
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Percent-encodes a query parameter.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Prometheus {
    /// Starts Prometheus scraping `targets` (job `baton`) every second and waits until it is
    /// ready.
    pub async fn start(targets: &[SocketAddr]) -> Result<Prometheus> {
        let dir = tempfile::Builder::new().prefix("baton-prometheus-").tempdir()?;
        let list: Vec<String> = targets.iter().map(|t| format!("'{t}'")).collect();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: baton\n    static_configs:\n      - targets: [{}]\n",
                list.join(", ")
            ),
        )?;
        let addr: SocketAddr = ([127, 0, 0, 1], free_port()?).into();
        let log = dir.path().join("prometheus.log");
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.path().join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .context("starting prometheus (Debian package `prometheus`)")?;
        let p = Prometheus {
            child,
            addr,
            _dir: dir,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = CheckUrl::for_listener(p.addr, "/-/ready");
            if check(&ready, Duration::from_secs(2)).await.is_ok() {
                return Ok(p);
            }
            if Instant::now() > deadline {
                bail!("prometheus was not ready within 30s:\n{}", p.log_text());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// An instant query through `/api/v1/query`.
    pub async fn query(&self, promql: &str) -> Result<Vec<Sample>> {
        let url = CheckUrl::for_listener(self.addr, &format!("/api/v1/query?query={}", encode(promql)));
        let body = check(&url, Duration::from_secs(10))
            .await
            .map_err(|e| anyhow::anyhow!("querying {promql}: {e}"))?;
        let doc: serde_json::Value = serde_json::from_str(&body).context("the API answers JSON")?;
        anyhow::ensure!(doc["status"] == "success", "query {promql}: {doc}");
        let result = doc["data"]["result"].as_array().context("a vector result")?;
        result
            .iter()
            .map(|r| {
                let labels = r["metric"].as_object().cloned().unwrap_or_default();
                let value = r["value"][1]
                    .as_str()
                    .and_then(|v| v.parse().ok())
                    .context("a sample value")?;
                Ok(Sample { labels, value })
            })
            .collect()
    }

    /// Queries until `accept` takes the samples, for at most `timeout`; returns them.
    pub async fn wait_for(
        &self,
        promql: &str,
        timeout: Duration,
        accept: impl Fn(&[Sample]) -> bool,
    ) -> Result<Vec<Sample>> {
        let deadline = Instant::now() + timeout;
        loop {
            let samples = self.query(promql).await?;
            if accept(&samples) {
                return Ok(samples);
            }
            if Instant::now() > deadline {
                bail!("{promql} never gave the expected value within {timeout:?}; last: {samples:?}");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn queries_are_percent_encoded() {
        assert_eq!(
            super::encode(r#"baton_runs_total{outcome="succeeded"}"#),
            "baton_runs_total%7Boutcome%3D%22succeeded%22%7D"
        );
    }
}
