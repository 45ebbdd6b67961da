//! `imagelib nats config` as an operator runs it: the accounts block and one private
//! credentials file per user, the cluster block with authenticated routes, and refusals.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

fn imagelib(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_imagelib"))
        .args(args)
        .env_remove("IMAGELIB_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn writes_the_server_config_and_private_credentials() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("auth.conf");
    let cluster = dir.path().join("cluster.conf");
    let creds = dir.path().join("creds");
    let o = imagelib(&[
        "nats",
        "config",
        "--prefix",
        "acme.lib",
        "--stream",
        "ACME",
        "--out",
        out.to_str().unwrap(),
        "--creds-dir",
        creds.to_str().unwrap(),
        "--cluster-route",
        "nats-1:6222,nats-2:6222",
        "--cluster-out",
        cluster.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stdout.is_empty(), "secrets go to the files, not stdout");
    let config = std::fs::read_to_string(&out).unwrap();
    assert!(config.contains("jetstream: enabled"));
    assert!(config.contains("\"acme.lib.registry.>\""));
    assert!(config.contains("\"$JS.API.STREAM.INFO.ACME\""));
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&out), 0o600);
    assert_eq!(mode(&creds), 0o700);
    for user in imagelib::nats_cmd::USERS {
        let file = creds.join(format!("{user}.creds"));
        assert_eq!(mode(&file), 0o600, "{user}");
        let line = std::fs::read_to_string(&file).unwrap();
        let (name, password) = line.trim().split_once(':').unwrap();
        assert_eq!(name, *user);
        assert!(password.len() >= 32);
        assert!(config.contains(&format!("user: \"{user}\", password: \"{password}\"")));
    }
    let cluster = std::fs::read_to_string(&cluster).unwrap();
    assert!(cluster.contains("authorization { user: \"route\""));
    assert!(cluster.contains("@nats-2:6222\""));
}

#[test]
fn refuses_what_would_make_a_broken_or_open_config() {
    let o = imagelib(&["nats", "config", "--prefix", "a.>"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--prefix"));
    let o = imagelib(&["nats", "config", "--cluster-out", "/tmp/x.conf"]);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--cluster-route"));
    assert!(o.stdout.is_empty(), "nothing generated before the refusal");
    let o = imagelib(&["nats", "config", "--cluster-route", "nats-1:6222/x y"]);
    assert!(!o.status.success());
}
