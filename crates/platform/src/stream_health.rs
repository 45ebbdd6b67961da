//! The `stream` readiness check: whether this process reaches NATS and the event stream,
//! and what is degraded about the stream's replicas.
//!
//! A service keeps working while its NATS node is gone (the client reconnects to another
//! node of the cluster) and while one replica of an R3 stream is down (two of three keep
//! quorum). Neither makes the service unready, but an operator must see both: `/readyz`
//! names them as degraded (the replica that is offline or behind, the node the process is
//! on). Unready is for what stops work: no connection to any node, or a stream without a
//! leader.

use std::fmt::Write as _;
use std::time::Duration;

use async_nats::connection::State;
use imagelib_events::bus::EventBus;

use crate::service::Readiness;

/// The name of the check.
pub const CHECK: &str = "stream";

/// How often the connection and the stream's replicas are looked at.
const EVERY: Duration = Duration::from_secs(1);

/// A replica not heard from for this long is reported unreachable rather than behind
/// (nats-server marks a peer `offline` only much later).
const UNREACHABLE_AFTER: Duration = Duration::from_secs(3);

/// Report the `stream` check of `readiness` from now on, until the service is gone.
pub fn watch(bus: &EventBus, readiness: &Readiness) {
    readiness.set(CHECK, true, None);
    let weak = readiness.downgrade();
    let bus = bus.clone();
    if tokio::runtime::Handle::try_current().is_err() {
        return;
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let health = observe(&bus).await;
            let Some(readiness) = weak.upgrade() else {
                return;
            };
            match health {
                Health::Ready(detail) => readiness.set(CHECK, true, Some(detail)),
                Health::Degraded(detail) => readiness.set_degraded(CHECK, detail),
                Health::Unready(detail) => readiness.set(CHECK, false, Some(detail)),
            }
        }
    });
}

/// What one look found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ready(String),
    Degraded(String),
    Unready(String),
}

async fn observe(bus: &EventBus) -> Health {
    let client = bus.client();
    if client.connection_state() != State::Connected {
        return Health::Unready("no connection to NATS (reconnecting to the cluster)".into());
    }
    let node = client.server_info().server_name;
    let name = bus.settings().name.clone();
    let info = async {
        let mut stream = bus.jetstream().get_stream(&name).await?;
        Ok::<_, Box<dyn std::error::Error + Send + Sync>>(stream.info().await?.clone())
    };
    match tokio::time::timeout(Duration::from_secs(3), info).await {
        Ok(Ok(info)) => assess(&node, info.cluster.as_ref()),
        Ok(Err(e)) => Health::Unready(format!("stream `{name}` unavailable on {node}: {e}")),
        Err(_) => Health::Unready(format!(
            "stream `{name}` did not answer within 3 s on {node}"
        )),
    }
}

/// Judge the stream's replica set as seen from node `node`.
pub fn assess(node: &str, cluster: Option<&async_nats::jetstream::stream::ClusterInfo>) -> Health {
    let Some(cluster) = cluster else {
        return Health::Ready(format!("connected to {node}"));
    };
    let Some(leader) = cluster.leader.as_deref().filter(|l| !l.is_empty()) else {
        return Health::Unready(format!(
            "the stream has no leader (an election is under way or too few replicas are up); connected to {node}"
        ));
    };
    let total = cluster.replicas.len() + 1;
    let mut trouble = String::new();
    for peer in &cluster.replicas {
        let state = if peer.offline {
            "offline".to_owned()
        } else if !peer.current && peer.active > UNREACHABLE_AFTER {
            format!("unreachable (last seen {} s ago)", peer.active.as_secs())
        } else if !peer.current {
            match peer.lag {
                Some(lag) if lag > 0 => format!("catching up (lag {lag})"),
                _ => "not current".to_owned(),
            }
        } else {
            continue;
        };
        if !trouble.is_empty() {
            trouble.push_str(", ");
        }
        let _ = write!(trouble, "replica {} {state}", peer.name);
    }
    if trouble.is_empty() {
        Health::Ready(format!(
            "{total} of {total} replicas current, leader {leader}; connected to {node}"
        ))
    } else {
        Health::Degraded(format!(
            "degraded: {trouble}; leader {leader}; connected to {node}"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use async_nats::jetstream::stream::{ClusterInfo, PeerInfo};

    fn peer(name: &str, current: bool, offline: bool, lag: Option<u64>) -> PeerInfo {
        PeerInfo {
            name: name.into(),
            current,
            active: Duration::from_millis(if lag == Some(99) { 7_500 } else { 10 }),
            offline,
            lag,
        }
    }

    fn cluster(leader: Option<&str>, replicas: Vec<PeerInfo>) -> ClusterInfo {
        ClusterInfo {
            leader: leader.map(str::to_owned),
            replicas,
            ..Default::default()
        }
    }

    #[test]
    fn a_single_server_is_ready() {
        assert_eq!(assess("n0", None), Health::Ready("connected to n0".into()));
    }

    #[test]
    fn all_replicas_current_is_ready() {
        let c = cluster(
            Some("n0"),
            vec![peer("n1", true, false, None), peer("n2", true, false, None)],
        );
        assert_eq!(
            assess("n1", Some(&c)),
            Health::Ready("3 of 3 replicas current, leader n0; connected to n1".into())
        );
    }

    #[test]
    fn an_offline_or_lagging_replica_is_named_as_degraded() {
        let c = cluster(
            Some("n0"),
            vec![
                peer("n1", false, true, None),
                peer("n2", false, false, Some(7)),
            ],
        );
        match assess("n2", Some(&c)) {
            Health::Degraded(d) => {
                assert!(d.contains("replica n1 offline"), "{d}");
                assert!(d.contains("replica n2 catching up (lag 7)"), "{d}");
                assert!(d.contains("leader n0"), "{d}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn no_leader_is_unready() {
        let c = cluster(None, vec![peer("n1", false, true, None)]);
        assert!(matches!(assess("n2", Some(&c)), Health::Unready(d) if d.contains("no leader")));
    }
}
