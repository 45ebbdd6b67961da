//! The three-node cluster of the test kit starts even when a port it chose is taken
//! before its node binds it (another test running beside it).

use imagelib_testkit::nats_cluster::NatsCluster;

#[tokio::test]
async fn a_port_taken_before_its_node_binds_it_starts_the_cluster_again() -> anyhow::Result<()> {
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let taken_port = taken.local_addr()?.port();
    let mut handed = 0usize;
    let mut port = || {
        handed += 1;
        // The first node's client port, on the first attempt only.
        if handed == 1 {
            Ok(taken_port)
        } else {
            imagelib_testkit::registry::free_port()
        }
    };
    let cluster = NatsCluster::start_on(&mut port).await?;
    assert!(
        handed > 6,
        "a second attempt chose new ports ({handed} handed)"
    );
    assert!(cluster.nodes().iter().all(|n| n.port != taken_port));
    let client = async_nats::connect(cluster.server_addrs()).await?;
    client.flush().await?;
    drop(taken);
    Ok(())
}
