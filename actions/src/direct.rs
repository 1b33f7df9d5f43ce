//! The executor for the actions the bot carries out itself (`Target::Bot`): TSIG-signed DNS
//! updates (`dns.set_a`, `dns.ensure_srv` with `DnsVia::Rfc2136`), the firewall check of step 6
//! (`port.check`) and the final `verify` (SRV and A through a resolver, then an XMPP s2s stream).
//!
//! Idempotency: every one of these actions converges (an ensure-style update that changes nothing
//! the second time, or a read), so running one again after a restart is harmless and even gives a
//! fresher answer. The executor therefore keeps its record of executed keys in memory: within a
//! process a repeated key returns the recorded report (`replayed: true`) and concurrent requests
//! with one key execute once; after a restart the engine's resumed key executes again, safely.
//! A durable record would add a database for no behaviour the engine can observe.

use crate::catalog::{Action, DnsVia};
use crate::dns::{Change, DnsQuery, DnsUpdater};
use crate::executor::{ActionOutcome, ActionReport, ActionRequest, Executor, IdempotencyKey};
use crate::names::Fqdn;
use crate::probe::{PortState, TlsTrust, port_check, s2s_probe};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::OnceCell;
use tracing::info;

/// What the direct executor needs to reach the outside world.
#[derive(Debug)]
pub struct DirectConfig {
    /// The RFC 2136 updaters, keyed by the server exactly as the plan names it
    /// (`DnsVia::Rfc2136::server`, from the `[dns] server` setting).
    pub updaters: BTreeMap<String, DnsUpdater>,
    /// The resolver `verify` asks for the SRV and A records (a recursive resolver that sees the
    /// public zone; the authoritative server works too).
    pub resolver: SocketAddr,
    /// Bounds each exchange with the resolver.
    pub dns_timeout: Duration,
    /// Bounds each TCP connect and each s2s probe.
    pub probe_timeout: Duration,
    /// When set, `verify` completes STARTTLS and checks the certificate against these CAs.
    pub tls: Option<TlsTrust>,
}

/// Carries out `Target::Bot` actions; see the module documentation for its idempotency record.
pub struct DirectExecutor {
    updaters: BTreeMap<String, DnsUpdater>,
    resolver: DnsQuery,
    probe_timeout: Duration,
    tls: Option<TlsTrust>,
    record: Mutex<HashMap<IdempotencyKey, Arc<OnceCell<ActionReport>>>>,
}

impl DirectExecutor {
    pub fn new(config: DirectConfig) -> DirectExecutor {
        DirectExecutor {
            updaters: config.updaters,
            resolver: DnsQuery::new(config.resolver, config.dns_timeout),
            probe_timeout: config.probe_timeout,
            tls: config.tls,
            record: Mutex::new(HashMap::new()),
        }
    }

    /// Carries out one action, without the idempotency record.
    async fn run(&self, action: &Action) -> ActionOutcome {
        match action {
            Action::DnsSetA {
                dns: DnsVia::Rfc2136 { server, zone },
                name,
                address,
                ttl,
            } => {
                let updater = match self.updater(server, zone) {
                    Ok(u) => u,
                    Err(error) => return ActionOutcome::Failed { error },
                };
                match updater.set_a(name, *address, *ttl).await {
                    Ok(change) => ok(format!("{name} A {address} {}", changed(&change))),
                    Err(e) => failed(e),
                }
            }
            Action::DnsEnsureSrv {
                dns: DnsVia::Rfc2136 { server, zone },
                name,
                target,
                port,
                priority,
                weight,
                ttl,
            } => {
                let updater = match self.updater(server, zone) {
                    Ok(u) => u,
                    Err(error) => return ActionOutcome::Failed { error },
                };
                match updater.ensure_srv(name, *priority, *weight, *port, target, *ttl).await {
                    Ok(change) => ok(format!(
                        "{name} SRV {priority} {weight} {port} {target} {}, exactly once",
                        changed(&change)
                    )),
                    Err(e) => failed(e),
                }
            }
            Action::PortCheck { address, port } => {
                let check = port_check(SocketAddr::new(*address, *port), self.probe_timeout).await;
                match check.state {
                    PortState::Open | PortState::Refused => ok(check.summary()),
                    PortState::Filtered | PortState::Unreachable => ActionOutcome::Failed {
                        error: format!("{}: {}", check.addr, check.summary()),
                    },
                }
            }
            Action::Verify {
                srv,
                host,
                address,
                port,
                domain,
            } => self.verify(srv, host, *address, *port, domain).await,
            other => ActionOutcome::Failed {
                error: format!(
                    "{} is carried out by {}, not by the bot itself",
                    other.id(),
                    other.where_long()
                ),
            },
        }
    }

    fn updater(&self, server: &str, zone: &Fqdn) -> Result<&DnsUpdater, String> {
        let updater = self
            .updaters
            .get(server)
            .ok_or_else(|| format!("no TSIG key is configured for the DNS server {server}"))?;
        if updater.zone() != zone {
            return Err(format!(
                "the DNS server {server} is configured for zone {}, not {zone}",
                updater.zone()
            ));
        }
        Ok(updater)
    }

    /// SRV and A through the resolver must point at the new pool, then an s2s stream must open.
    async fn verify(&self, srv: &Fqdn, host: &Fqdn, address: Ipv4Addr, port: u16, domain: &Fqdn) -> ActionOutcome {
        let resolver = self.resolver.server();
        let records = match self.resolver.srv(srv).await {
            Ok(r) => r,
            Err(e) => {
                return ActionOutcome::Failed {
                    error: format!("SRV lookup of {srv} failed: {e}"),
                };
            }
        };
        if records.is_empty() {
            return ActionOutcome::Failed {
                error: format!("{srv} has no SRV record (asked {resolver})"),
            };
        }
        let stray: Vec<String> = records
            .iter()
            .filter(|r| r.target != host.as_str() || r.port != port)
            .map(|r| format!("{}:{}", r.target, r.port))
            .collect();
        if !stray.is_empty() {
            return ActionOutcome::Failed {
                error: format!("{srv} SRV points at {}, expected only {host}:{port}", stray.join(", ")),
            };
        }
        let addresses = match self.resolver.a(host).await {
            Ok(a) => a,
            Err(e) => {
                return ActionOutcome::Failed {
                    error: format!("A lookup of {host} failed: {e}"),
                };
            }
        };
        if addresses.is_empty() || addresses.iter().any(|a| a.address != address) {
            let got: Vec<String> = addresses.iter().map(|a| a.address.to_string()).collect();
            let got = if got.is_empty() {
                "missing".to_string()
            } else {
                got.join(", ")
            };
            return ActionOutcome::Failed {
                error: format!("{host} A is {got}, expected {address}"),
            };
        }
        let target = SocketAddr::new(IpAddr::V4(address), port);
        match s2s_probe(target, domain, self.tls.as_ref(), self.probe_timeout).await {
            Ok(report) => ok(format!("SRV -> {host}:{port}, A -> {address}; {}", report.summary())),
            Err(e) => ActionOutcome::Failed {
                error: format!("SRV and A ok, but {e}"),
            },
        }
    }
}

fn changed(change: &Change) -> String {
    match change {
        Change::Unchanged => "already in place (unchanged)".to_string(),
        Change::Replaced { before } if before.is_empty() => "confirmed (was missing)".to_string(),
        Change::Replaced { before } => format!("confirmed (was {})", before.join(", ")),
    }
}

fn ok(detail: String) -> ActionOutcome {
    ActionOutcome::Ok { detail }
}

fn failed(e: impl std::fmt::Display) -> ActionOutcome {
    ActionOutcome::Failed { error: e.to_string() }
}

#[async_trait]
impl Executor for DirectExecutor {
    async fn execute(&self, request: ActionRequest) -> ActionReport {
        let ActionRequest { key, action, timeout } = request;
        let cell = {
            let mut record = self
                .record
                .lock()
                .expect("the record lock is never held across a panic");
            record.entry(key.clone()).or_default().clone()
        };
        let mut executed_here = false;
        let report = cell
            .get_or_init(|| async {
                executed_here = true;
                let started = Instant::now();
                let outcome = match tokio::time::timeout(timeout, self.run(&action)).await {
                    Ok(outcome) => outcome,
                    Err(_) => ActionOutcome::Failed {
                        error: format!(
                            "{} did not finish within {}s and was stopped",
                            action.id(),
                            timeout.as_secs_f32()
                        ),
                    },
                };
                let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
                info!(key = %key, action = action.id(), ok = outcome.is_ok(), elapsed_ms, "bot action executed");
                ActionReport {
                    outcome,
                    elapsed_ms,
                    replayed: false,
                }
            })
            .await
            .clone();
        ActionReport {
            replayed: !executed_here,
            ..report
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::net::TcpListener;

    fn executor() -> DirectExecutor {
        DirectExecutor::new(DirectConfig {
            updaters: BTreeMap::new(),
            resolver: "127.0.0.1:9".parse().expect("addr"),
            dns_timeout: Duration::from_secs(1),
            probe_timeout: Duration::from_secs(2),
            tls: None,
        })
    }

    /// A listener that counts the connections it accepts.
    async fn counting_listener() -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("addr");
        let count = Arc::new(AtomicUsize::new(0));
        let seen = count.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                seen.fetch_add(1, Ordering::SeqCst);
                drop(s);
            }
        });
        (addr, count)
    }

    fn check(addr: SocketAddr, attempt: u32) -> ActionRequest {
        ActionRequest {
            key: IdempotencyKey::new("t", 1, 5, 0, "bot", attempt),
            action: Action::PortCheck {
                address: addr.ip(),
                port: addr.port(),
            },
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn a_key_executes_once_even_when_requested_concurrently() {
        let exec = Arc::new(executor());
        let (addr, count) = counting_listener().await;
        let (a, b) = tokio::join!(exec.execute(check(addr, 1)), exec.execute(check(addr, 1)));
        assert!(a.outcome.is_ok() && a.outcome == b.outcome, "{a:?} {b:?}");
        assert!(a.replayed != b.replayed, "exactly one of the two executed");
        let c = exec.execute(check(addr, 1)).await;
        assert!(c.replayed);
        let d = exec.execute(check(addr, 2)).await;
        assert!(!d.replayed, "a new attempt is a new key");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(count.load(Ordering::SeqCst), 2, "two keys, two connections");
    }

    #[tokio::test]
    async fn an_action_past_its_timeout_fails_and_says_so() {
        let exec = executor();
        // A resolver that accepts and never answers: verify waits on it past the action timeout.
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let silent = listener.local_addr().expect("addr");
        let hold = tokio::spawn(async move {
            let kept = listener.accept().await;
            tokio::time::sleep(Duration::from_secs(10)).await;
            drop(kept);
        });
        let exec = DirectExecutor {
            resolver: DnsQuery::new(silent, Duration::from_secs(10)),
            ..exec
        };
        let fqdn = |s: &str| Fqdn::parse(s).expect("valid");
        let request = ActionRequest {
            key: IdempotencyKey::new("t", 1, 8, 0, "bot", 1),
            action: Action::Verify {
                srv: fqdn("_xmpp-server._tcp.contoso.test"),
                host: fqdn("xmpp.contoso.test"),
                address: Ipv4Addr::LOCALHOST,
                port: 5269,
                domain: fqdn("contoso.test"),
            },
            timeout: Duration::from_millis(300),
        };
        let report = exec.execute(request).await;
        assert_eq!(
            report.outcome,
            ActionOutcome::Failed {
                error: "verify did not finish within 0.3s and was stopped".into()
            }
        );
        hold.abort();
    }
}
