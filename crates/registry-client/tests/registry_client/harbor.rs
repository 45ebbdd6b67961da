//! Harbor: repositories through the (fake) Harbor API when `_catalog` is refused to a robot
//! account — projects then each project's repositories, `Link` and `X-Total-Count` paging
//! on the registry's origin only, one budget of caps, Harbor's error bodies — a
//! project-scoped registration that asks for nothing else, and the artifacts' scan
//! overviews; a real registry behind `/v2/`.

use imagelib_testkit::harbor::{FakeHarbor, overview};
use imagelib_testkit::proxy::{FaultProxy, Response};
use imagelib_testkit::registry::{ImageSpec, TestRegistry};
use registry_client::vendor::harbor::HarborApi;
use registry_client::{Cap, Credentials, ErrorKind, RegistryClient};

use crate::common::{config, repo};

const ROBOT: &str = "robot$ai+scanner";
const SECRET: &str = "harborRobotS3cret";

async fn harbor() -> anyhow::Result<(TestRegistry, FakeHarbor)> {
    let registry = TestRegistry::start().await?;
    let h = FakeHarbor::start(&registry).await;
    h.project("ai", false, &["app", "models/llama", "c", "d", "e"]);
    h.project("web", false, &["site"]);
    h.project("pub", true, &["hello"]);
    h.robot(ROBOT, SECRET, &["ai"]);
    Ok((registry, h))
}

fn robot() -> Credentials {
    Credentials::basic(ROBOT, SECRET)
}

fn basic_header() -> String {
    use base64::Engine as _;
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{ROBOT}:{SECRET}"))
    )
}

#[tokio::test]
async fn the_robots_projects_are_listed_across_pages_with_its_basic_credentials()
-> anyhow::Result<()> {
    let (_r, h) = harbor().await?;
    let mut c = config(&h.host(), true);
    c.page_size = 2;
    let api = HarborApi::new(&c, Some(&robot()))?;
    let projects = api.projects().await?;
    assert_eq!(projects.items, ["ai", "pub"], "web is not the robot's");
    let listing = api.repositories().await?;
    assert!(listing.complete, "{:?}", listing.error);
    assert_eq!(
        listing.items,
        [
            "ai/app",
            "ai/models/llama",
            "ai/c",
            "ai/d",
            "ai/e",
            "pub/hello"
        ]
        .map(repo)
    );
    // 1 page of projects, 3 of ai, 1 of pub.
    assert_eq!(listing.pages, 5);
    let seen = h.seen();
    let api_requests: Vec<_> = seen
        .iter()
        .filter(|q| q.path().starts_with("/api/"))
        .collect();
    assert!(!api_requests.is_empty());
    let basic = basic_header();
    for q in &api_requests {
        assert_eq!(
            q.header("authorization"),
            Some(basic.as_str()),
            "{}",
            q.target
        );
        assert!(q.target.contains("page_size=2"), "{}", q.target);
        assert!(!q.path().contains("/web"), "{}", q.target);
    }
    Ok(())
}

#[tokio::test]
async fn a_project_scoped_registration_asks_for_its_project_only() -> anyhow::Result<()> {
    let (_r, h) = harbor().await?;
    let c = config(&format!("{}/ai", h.host()), true);
    let listing = HarborApi::new(&c, Some(&robot()))?.repositories().await?;
    assert!(listing.complete);
    assert_eq!(listing.items.len(), 5);
    assert!(listing.items.iter().all(|r| r.as_str().starts_with("ai/")));
    let paths: Vec<String> = h.seen().iter().map(|q| q.path().to_owned()).collect();
    assert_eq!(paths, ["/api/v2.0/projects/ai/repositories"]);

    // A deeper path scopes to that part of the project.
    let c = config(&format!("{}/ai/models", h.host()), true);
    let listing = HarborApi::new(&c, Some(&robot()))?.repositories().await?;
    assert_eq!(listing.items, [repo("ai/models/llama")]);

    // Another project: Harbor's 403, said as forbidden; an unknown one, not found.
    let c = config(&format!("{}/web", h.host()), true);
    let err = HarborApi::new(&c, Some(&robot()))?
        .repositories()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
    assert!(err.to_string().contains("FORBIDDEN"), "{err}");
    let c = config(&format!("{}/nope", h.host()), true);
    let err = HarborApi::new(&c, Some(&robot()))?
        .repositories()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    Ok(())
}

#[tokio::test]
async fn without_link_headers_pages_follow_x_total_count() -> anyhow::Result<()> {
    let (_r, h) = harbor().await?;
    h.without_links();
    let mut c = config(&format!("{}/ai", h.host()), true);
    c.page_size = 2;
    let listing = HarborApi::new(&c, Some(&robot()))?.repositories().await?;
    assert!(listing.complete, "{:?}", listing.error);
    assert_eq!(listing.items.len(), 5);
    assert_eq!(listing.pages, 3);
    Ok(())
}

#[tokio::test]
async fn caps_end_the_listing_incomplete() -> anyhow::Result<()> {
    let (_r, h) = harbor().await?;
    let mut c = config(&h.host(), true);
    c.page_size = 2;
    c.max_listing_items = 3;
    let listing = HarborApi::new(&c, Some(&robot()))?.repositories().await?;
    assert!(!listing.complete);
    assert_eq!(listing.items.len(), 3);
    assert_eq!(
        listing.error.as_ref().and_then(|e| e.cap()),
        Some(Cap::ListingItems)
    );

    let mut c = config(&h.host(), true);
    c.page_size = 1;
    c.max_pages = 3;
    let listing = HarborApi::new(&c, Some(&robot()))?.repositories().await?;
    assert!(!listing.complete);
    assert_eq!(
        listing.pages, 3,
        "one budget for the projects and repositories"
    );
    assert_eq!(
        listing.error.as_ref().and_then(|e| e.cap()),
        Some(Cap::ListingPages)
    );

    let mut c = config(&h.host(), true);
    c.max_page_bytes = 64;
    let err = HarborApi::new(&c, Some(&robot()))?
        .repositories()
        .await
        .unwrap_err();
    assert!(
        err.cap().is_some() || err.kind() == ErrorKind::TooLarge,
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn garbage_and_harbor_errors_are_errors_not_panics() -> anyhow::Result<()> {
    let (_r, h) = harbor().await?;
    let c = config(&h.host(), true);
    let bad = Credentials::basic(ROBOT, "wrong");
    let err = HarborApi::new(&c, Some(&bad))?
        .projects()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unauthorized, "{err}");
    assert!(err.to_string().contains("UNAUTHORIZED"), "{err}");
    assert!(!err.to_string().contains("wrong"), "{err}");

    for body in [
        &b"<html>oops</html>"[..],
        b"{\"name\":\"ai\"}",
        b"[{\"nom\":1}]",
        b"[1,2,3]",
        b"",
    ] {
        h.answer(
            "/api/v2.0/projects",
            Response::new(200, &[("Content-Type", "application/json")], body.to_vec()),
        );
        let err = HarborApi::new(&c, Some(&robot()))?
            .repositories()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Protocol, "{err}");
    }
    h.answer(
        "/api/v2.0/projects",
        Response::new(
            200,
            &[("Content-Type", "application/json")],
            r#"[{"name":"ai"},{"name":"Not A Project"},{"name":"../x"}]"#,
        ),
    );
    let projects = HarborApi::new(&c, Some(&robot()))?.projects().await?;
    assert_eq!(projects.items, ["ai"]);
    assert_eq!(projects.skipped.len(), 2);
    Ok(())
}

#[tokio::test]
async fn a_next_link_to_another_host_is_refused_and_gets_no_credentials() -> anyhow::Result<()> {
    let (_r, h) = harbor().await?;
    let elsewhere = FaultProxy::respond_always(Response::new(200, &[], "[]")).await;
    h.next_on(&format!("http://{}", elsewhere.host()));
    let mut c = config(&format!("{}/ai", h.host()), true);
    c.page_size = 2;
    let listing = HarborApi::new(&c, Some(&robot()))?.repositories().await?;
    assert!(!listing.complete);
    assert_eq!(listing.items.len(), 2, "the first page only");
    assert!(
        listing
            .error
            .as_ref()
            .is_some_and(|e| e.to_string().contains("leaves the registry")),
        "{:?}",
        listing.error
    );
    assert!(
        elsewhere.seen().is_empty(),
        "nothing went to the other host"
    );
    Ok(())
}

#[tokio::test]
async fn scan_overviews_of_completed_scans_are_read() -> anyhow::Result<()> {
    let (r, h) = harbor().await?;
    let pushed = r
        .push_image(
            "ai/models/llama",
            "1.0",
            &ImageSpec::linux_amd64().layer(b"llama"),
        )
        .await?;
    let running = "sha256:".to_owned() + &"1".repeat(64);
    h.artifact(
        "ai/models/llama",
        &pushed.digest,
        &["1.0"],
        Some(overview(
            "Success",
            &[("Critical", 1), ("High", 2), ("Low", 4)],
            2,
        )),
    );
    h.artifact(
        "ai/models/llama",
        &running,
        &[],
        Some(overview("Running", &[], 0)),
    );
    h.artifact("ai/models/llama", "not-a-digest", &[], None);
    let c = config(&h.host(), true);
    let api = HarborApi::new(&c, Some(&robot()))?;
    let scans = api.scan_overviews(&repo("ai/models/llama")).await?;
    assert!(scans.complete);
    assert_eq!(scans.items.len(), 2);
    assert_eq!(scans.skipped, ["not-a-digest"]);
    let done = &scans.items[0];
    assert_eq!(done.digest.as_str(), pushed.digest);
    assert_eq!(done.tags, ["1.0"]);
    let report = done.report.as_ref().expect("a completed scan");
    assert_eq!(report.scanner_name, "Trivy");
    assert_eq!(
        (
            report.counts.critical,
            report.counts.high,
            report.counts.low
        ),
        (1, 2, 4)
    );
    assert_eq!(report.fixable, 2);
    assert!(
        scans.items[1].report.is_none(),
        "a running scan is no report"
    );
    let again = api.scan_overviews(&repo("ai/models/llama")).await?;
    assert_eq!(
        again.items[0].report.as_ref().map(|r| &r.source),
        Some(&report.source)
    );
    let seen = h.seen();
    let q = seen.last().expect("a request");
    assert_eq!(
        q.path(),
        "/api/v2.0/projects/ai/repositories/models%252Fllama/artifacts"
    );
    assert!(q.target.contains("with_scan_overview=true"), "{}", q.target);
    assert!(q.header("x-accept-vulnerabilities").is_some());

    // Another project's artifacts: forbidden.
    let err = api.scan_overviews(&repo("web/site")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Forbidden, "{err}");
    Ok(())
}

#[tokio::test]
async fn the_registry_side_refuses_the_catalog_to_a_robot_and_serves_its_project()
-> anyhow::Result<()> {
    let (r, h) = harbor().await?;
    r.push_image("ai/app", "1.0", &ImageSpec::linux_amd64().layer(b"app"))
        .await?;
    r.push_image("web/site", "1.0", &ImageSpec::linux_amd64().layer(b"site"))
        .await?;
    let client = RegistryClient::new(config(&h.host(), true), robot())?;
    client.ping().await?;
    let err = client.catalog().await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unauthorized | ErrorKind::Forbidden),
        "{err}"
    );
    let tags = client.tags(&repo("ai/app")).await?;
    assert_eq!(tags.items.len(), 1);
    let err = client.tags(&repo("web/site")).await.unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Unauthorized | ErrorKind::Forbidden),
        "{err}"
    );
    Ok(())
}
