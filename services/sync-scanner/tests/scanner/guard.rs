//! The scanner's own network guard, as a deployment gets it: a registry on loopback that was
//! scanned while loopback was allowed is refused once the scanner runs with the defaults
//! (a name that now resolves into a private network looks exactly like this), the scan
//! fails `blocked`, the registry sees no request and nothing is removed.

use imagelib_events::EventPayload;
use imagelib_events::model::RuleKind;
use imagelib_testkit::registry::{ImageSpec, TestRegistry};

use crate::common::{Env, summary};
use crate::proxy::{Action, FaultProxy};
use sync_scanner::scan::Outcome;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_denied_registry_fails_blocked_and_loses_nothing() -> anyhow::Result<()> {
    let registry = TestRegistry::start().await?;
    registry
        .push_image("guarded/app", "1.0", &ImageSpec::linux_amd64())
        .await?;
    let front = FaultProxy::start(Some(crate::upstream(&registry)), |_, _| Action::Forward).await;
    let env = Env::new().await;
    let allowed = env.start().await;
    let id = env
        .register(&format!("localhost:{}", front.addr.port()), None)
        .await;
    env.rule(id, "guarded", &["guarded/*"], RuleKind::Auto)
        .await;
    let (done, _) = env.scan_ok(id, None).await;
    assert_eq!(done.added, 1);
    allowed.stop().await;

    // The defaults, plus a deny list of its own (which adds to them, not replaces them).
    let mut config = env.config();
    config.common.allow_networks = None;
    config.common.deny_networks = Some("192.0.2.0/24".into());
    let denied = env.start_with(config).await;
    let asked = front.seen().len();
    let (outcome, events) = env.scan(id, None).await;
    match outcome {
        Outcome::Failed(f) => {
            assert!(f.reason.contains("blocked"), "{}", f.reason);
            assert!(f.reason.contains("127.0.0.0/8"), "{}", f.reason);
            assert!(f.reason.contains("IMAGELIB_ALLOW_NETWORKS"), "{}", f.reason);
        }
        other => panic!("the scan must fail blocked: {other:?}"),
    }
    assert!(
        !events
            .iter()
            .any(|e| matches!(e.payload, EventPayload::TagRemoved(_))),
        "{:?}",
        summary(&events)
    );
    assert_eq!(front.seen().len(), asked, "the registry saw no request");
    denied.stop().await;
    Ok(())
}
